"""The `openai` backend: retries and per-row errors against a fault-injecting local server, then
the real thing, vLLM's OpenAI-compatible server with the tiny model."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import polars as pl
import pytest

from curation import schema
from curation.generate import GENERATORS, GenerationError, run_generation
from tests.generate.conftest import make_prompts
from tests.servers import free_port

# Scripted behaviour per prompt text, one entry per attempt; the last entry repeats.
SCRIPTS = {
    "flaky-429": ["429", "429", "ok"],
    "flaky-500": ["500", "ok"],
    "slow": ["slow", "ok"],
    "garbage": ["garbage", "ok"],
    "half-json": ["half-json", "ok"],
    "dead": ["503"],
    "refused": ["400"],
}


class FaultServer:
    """An OpenAI-compatible chat server on 127.0.0.1 that misbehaves on cue, in a thread."""

    def __init__(self, slow_seconds: float = 3.0, delay: float = 0.0) -> None:
        self.attempts: Counter[str] = Counter()
        self.in_flight = self.max_in_flight = 0
        self.slow_seconds, self.delay = slow_seconds, delay
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status, body, headers=()):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for k, v in headers:
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def do_GET(self):
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = body["messages"][-1]["content"]
                with server.lock:
                    server.attempts[content] += 1
                    attempt = server.attempts[content]
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    script = SCRIPTS.get(content, ["ok"])
                    self._act(script[min(attempt, len(script)) - 1], content, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _act(self, action, content, body):
                time.sleep(server.delay)
                if action == "slow":
                    time.sleep(server.slow_seconds)
                    action = "ok"
                if action == "429":
                    self._send(429, {"error": "rate limited"}, [("Retry-After", "0")])
                elif action in ("400", "500", "503"):
                    self._send(int(action), {"error": {"message": f"scripted {action}"}})
                elif action == "garbage":
                    self._send(200, b"<html>proxy error</html>")
                elif action == "half-json":
                    self._send(200, {"choices": []})
                else:
                    self._send(200, _reply(content, body))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _reply(content: str, body: dict) -> dict:
    if content.startswith("Generate 3 different responses"):
        text = "".join(
            f"<response><text>idea {i}</text><probability>{p}</probability></response>\n"
            for i, p in enumerate((0.5, 0.3, 0.2))
        )
    else:
        text = f"echo: {content} (seed {body.get('seed')})"
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if body.get("logprobs"):
        choice["logprobs"] = {"content": [{"token": "a", "logprob": -0.5}, {"token": "b", "logprob": -0.25}]}
    return {"choices": [choice], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}


def _config(server, **kw):
    return {
        "backend": "openai",
        "model": "fake",
        "base_url": server.base_url,
        "timeout": 1.5,  # the slow reply takes 3 s
        "max_retries": 3,
        "backoff_base": 0.01,
        **kw,
    }


def test_retries_transient_faults_and_records_permanent_ones():
    texts = list(SCRIPTS) + ["fine"]
    with FaultServer() as server:
        cands, stats = run_generation(make_prompts(texts), _config(server, sampling={"logprobs": True}))
    by_text = {
        t: cands.filter(pl.col("prompt_id") == schema.prompt_id(schema.user_prompt(t))).row(0, named=True)
        for t in texts
    }
    for t in ["flaky-429", "flaky-500", "slow", "garbage", "half-json", "fine"]:
        assert by_text[t]["error"] is None, by_text[t]["error"]
        assert by_text[t]["text"].startswith(f"echo: {t}")
        assert by_text[t]["n_tokens"] == 2 and by_text[t]["logprob"] == pytest.approx(-0.75)
    assert "failed after 4 attempts" in by_text["dead"]["error"] and "HTTP 503" in by_text["dead"]["error"]
    assert by_text["refused"]["error"].startswith("HTTP 400") and by_text["refused"]["text"] is None
    scripted = {t: server.attempts[t] for t in ["flaky-429", "flaky-500", "garbage", "half-json", "dead", "refused"]}
    assert scripted == {"flaky-429": 3, "flaky-500": 2, "garbage": 2, "half-json": 2, "dead": 4, "refused": 1}
    assert server.attempts["slow"] >= 2  # timed out at least once
    assert (stats.calls, stats.failed_calls, stats.errors) == (8, 2, 2)
    assert stats.retries == sum(server.attempts.values()) - len(texts)  # every attempt after the first
    assert cands.height == len(texts)


def test_concurrency_is_limited():
    with FaultServer(delay=0.2) as server:
        cands, _ = run_generation(make_prompts([f"q{i}" for i in range(8)]), _config(server, max_concurrency=2, timeout=5))
    assert cands["error"].null_count() == 8
    assert server.max_in_flight == 2


def test_no_server_is_one_clear_error_up_front():
    with pytest.raises(GenerationError, match="no OpenAI-compatible server answers at http://127.0.0.1:"):
        run_generation(make_prompts(["hi"]), {"backend": "openai", "model": "m", "base_url": f"http://127.0.0.1:{free_port()}/v1"})
    with FaultServer() as server:
        with pytest.raises(GenerationError, match=r"model 'other' is not served at .* it serves \['fake'\]"):
            run_generation(make_prompts(["hi"]), _config(server, model="other"))
        assert sum(server.attempts.values()) == 0  # nothing was sent


def test_cached_rerun_sends_nothing(tmp_path):
    prompts = make_prompts(["a", "b", "dead"])
    with FaultServer() as server:
        first, s1 = run_generation(prompts, _config(server, n=2, max_retries=0), tmp_path)
        sent = sum(server.attempts.values())
        second, s2 = run_generation(prompts, _config(server, n=2, max_retries=0), tmp_path)
    assert (s1.calls, s1.failed_calls, sent) == (6, 2, 6)
    # successes come from the cache; the failed calls are tried again
    assert (s2.cache_hits, s2.calls) == (4, 2) and server.attempts["dead"] == 4
    assert first.filter(pl.col("error").is_null()).equals(second.filter(pl.col("error").is_null()))


def test_verbalized_replies_become_candidates():
    with FaultServer() as server:
        cands, stats = run_generation(
            make_prompts(["Tell a joke"]), _config(server, n=3, strategy="verbalized", verbalized_k=3)
        )
    assert stats.calls == 1 and cands.height == 3
    assert cands.sort("sample_index")["text"].to_list() == ["idea 0", "idea 1", "idea 2"]
    probs = [json.loads(m)["verbalized_probability"] for m in cands.sort("sample_index")["meta"]]
    assert probs == [0.5, 0.3, 0.2]
    assert cands["candidate_id"].n_unique() == 3


def test_works_inside_a_running_event_loop():
    """Notebooks and async flows already run a loop; generate() must still work there."""

    async def inside():
        return GENERATORS.build("openai", _config(server)).generate(make_prompts(["x"]))

    with FaultServer() as server:
        cands = asyncio.run(inside())
    assert cands["text"][0].startswith("echo: x")


# ------------------------------------------------ the real server


@pytest.mark.slow
def test_against_vllm_openai_server(vllm_server):
    prompts = make_prompts(["What is 2+2?", "Name a colour.", "Sort 3 1 2"])
    config = {
        "backend": "openai",
        "model": vllm_server.model,
        "base_url": vllm_server.base_url,
        "n": 2,
        "sampling": {"max_tokens": 12, "seed": 1, "logprobs": True},
    }
    cands, stats = run_generation(prompts, config)
    assert cands.height == 6 and cands["error"].null_count() == 6, cands["error"].to_list()
    assert stats.calls == 6 and stats.tokens == cands["n_tokens"].sum()
    assert all(1 <= n <= 12 for n in cands["n_tokens"])
    assert all(lp < 0 and math.isfinite(lp) for lp in cands["logprob"])
    assert set(cands["finish_reason"]) <= {"stop", "length"}
    again, _ = run_generation(prompts, config)  # seeded requests: the server repeats itself
    assert again.select("candidate_id", "text").equals(cands.select("candidate_id", "text"))


@pytest.mark.slow
def test_vllm_server_refusing_a_long_prompt_is_a_row_error(vllm_server):
    prompts = make_prompts(["short", "word " * 3000])  # over the server's --max-model-len
    config = {"backend": "openai", "model": vllm_server.model, "base_url": vllm_server.base_url,
              "sampling": {"max_tokens": 8}}  # fmt: skip
    cands, stats = run_generation(prompts, config)
    assert (stats.calls, stats.failed_calls, stats.errors) == (2, 1, 1)
    err = cands.filter(pl.col("error").is_not_null()).row(0, named=True)
    assert err["prompt_id"] == schema.prompt_id(schema.user_prompt("word " * 3000))
    assert err["error"].startswith("HTTP 400")


def test_the_sdk_waits_with_the_recipes_backoff_and_honours_retry_after(monkeypatch):
    """The SDK keeps its own delays as constants; the recipe's backoff comes in through its delay
    hook. If the SDK stopped calling the hook, every retry would wait 0.5 s or more, silently."""
    from curation.generate import openai_server

    waits: list[tuple[int, float, float]] = []
    real = openai_server.backoff
    monkeypatch.setattr(openai_server, "backoff", lambda attempt, base, most: waits.append((attempt, base, most)) or real(attempt, base, most))
    with FaultServer() as server:
        run_generation(make_prompts(["dead"]), _config(server, backoff_max=0.05))
        assert waits == [(0, 0.01, 0.05), (1, 0.01, 0.05), (2, 0.01, 0.05)]  # three retries of a dead server
        waits.clear()
        cands, _ = run_generation(make_prompts(["flaky-429"]), _config(server))
        assert waits == [] and cands["error"][0] is None  # 'Retry-After: 0' was the wait, twice


def test_reported_model_is_what_the_server_sent():
    """The identity hashes the server's own fields: fields the SDK's Model type adds as None would
    change every cached generation's identity for servers that do not send them."""
    with FaultServer() as server:
        generator = GENERATORS.build("openai", _config(server))
        assert generator.reported_model() == {"id": "fake"}
