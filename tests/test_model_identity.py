"""No stale results: a model changed in place, a server serving other weights, other structured-output
constraints or engine arguments give new fingerprints, candidate ids and request-cache keys."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from curation.generate import GENERATORS, run_generation
from curation.quickstart import write_prompts_jsonl
from curation.recipe import load_recipe
from curation.stages import run_recipe
from tests.generate.conftest import make_prompts
from tests.generate.test_openai_server import FaultServer


def _flip_last_byte(model: Path) -> None:
    """Weights saved in place: same path, same size, new content (an on-policy round)."""
    weights = next(model.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))


def _stages(reports):
    return {r.stage: r for r in reports}


def test_weights_changed_in_place_recompute_generate_and_score(tmp_path, tiny_chat, tiny_rm):
    policy, rm = tmp_path / "policy", tmp_path / "rm"
    shutil.copytree(tiny_chat, policy)
    shutil.copytree(tiny_rm, rm)
    write_prompts_jsonl(tmp_path / "prompts.jsonl", 3, seed=2)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({
        "name": "identity",
        "sources": [{"path": "prompts.jsonl"}],
        "generate": {"backend": "transformers", "model": str(policy), "n": 1, "sampling": {"max_tokens": 4, "seed": 1}},
        "score": [{"kind": "reward_model", "name": "rm", "model": str(rm)}],
    }))
    recipe = load_recipe(tmp_path / "recipe.yaml")
    catalog = tmp_path / "catalog"
    tables, _ = run_recipe(recipe, catalog, until="score")
    again = _stages(run_recipe(recipe, catalog, until="score")[1])
    assert again["generate"].cached and again["score"].cached

    _flip_last_byte(rm)  # the reward model retrained in place: scores recompute, candidates stay
    tables2, reports = run_recipe(recipe, catalog, until="score")
    by = _stages(reports)
    assert by["generate"].cached and not by["score"].cached
    assert tables2["candidates"].fingerprint == tables["candidates"].fingerprint
    assert tables2["scores"].fingerprint != tables["scores"].fingerprint

    _flip_last_byte(policy)  # the policy retrained in place: new candidates, the request cache misses
    tables3, reports = run_recipe(recipe, catalog, until="score")
    by = _stages(reports)
    assert not by["generate"].cached and by["generate"].calls == 3 and by["generate"].cache_hits == 0
    assert not by["score"].cached
    assert tables3["candidates"].fingerprint != tables2["candidates"].fingerprint


class ModelsServer:
    """Answers GET /v1/models with whatever `entry` holds: a server restarted on other weights."""

    def __init__(self, entry: dict) -> None:
        self.entry = entry
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = json.dumps({"object": "list", "data": [outer.entry]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_openai_identity_follows_what_the_server_reports():
    server = ModelsServer({"id": "m", "object": "model", "created": 1, "root": "/models/round-1", "max_model_len": 2048})
    try:
        def identity() -> str:
            return GENERATORS.build("openai", {"backend": "openai", "model": "m", "base_url": server.base_url}).model_identity()

        first = identity()
        server.entry = {**server.entry, "created": 2}  # vLLM stamps every reply: not an identity
        assert identity() == first
        server.entry = {**server.entry, "root": "/models/round-2"}  # restarted on new weights
        assert identity() != first
    finally:
        server.close()


def test_structured_output_constraints_change_candidate_ids_and_cache_keys(tmp_path):
    prompts = make_prompts(["one", "two"])
    with FaultServer(delay=0.0) as server:
        base = {"backend": "openai", "model": "fake", "base_url": server.base_url, "max_retries": 0}
        plain, s1 = run_generation(prompts, base, tmp_path / "cache")
        constrained = {**base, "extra_body": {"structured_outputs": {"regex": "[ab]+"}}}
        shaped, s2 = run_generation(prompts, constrained, tmp_path / "cache")
        _, s3 = run_generation(prompts, constrained, tmp_path / "cache")
    assert s1.calls == 2 and s2.calls == 2 and s2.cache_hits == 0
    assert (s3.calls, s3.cache_hits) == (0, 2)
    assert set(plain["candidate_id"]).isdisjoint(shaped["candidate_id"])


def test_engine_arguments_that_change_outputs_are_in_the_fingerprint(tiny_chat):
    def fp(**kw) -> str:
        return GENERATORS.build("vllm", {"backend": "vllm", "model": str(tiny_chat), **kw}).generation_fingerprint()

    base = fp()
    changed = [fp(dtype="bfloat16"), fp(max_model_len=512), fp(engine_args={"quantization": "fp8"}),
               fp(engine_args={"max_model_len": 512})]
    assert base not in changed and len(set(changed)) == 3  # max_model_len either way is the same setting
    assert fp(max_model_len=512) == fp(engine_args={"max_model_len": 512})
    # memory and parallelism settings change nothing the model says
    assert fp(gpu_memory_utilization=0.5) == base and fp(enforce_eager=True) == base
