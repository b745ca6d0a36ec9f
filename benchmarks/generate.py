"""Generation throughput of the pipeline's vLLM backend next to raw `LLM.chat`, and the cost of a cached re-run.

    python benchmarks/generate.py [--model DIR] [--prompts 128] [--n 4] [--max-tokens 64] [--repeats 3]
        ->  benchmarks/results/generate.json

Both sides use one engine (started once, not timed), the same GSM8K test prompts from the shared
corpus, the same sampling parameters and the same per-sample seeds, so they generate the same
tokens; their runs alternate and the best of `repeats` is compared (the machine is shared).
The pipeline side is `run_generation` without a cache (chat template, long-prompt rule, model
fingerprint, candidates frame); then a run that fills a fresh cache and a fully cached re-run.
Default model: the tiny offline chat model from curation.testing (on a GPU, pass a real one).
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).resolve().parent / "results" / "generate.json"


def load_prompts(limit: int):
    from curation import schema

    rows = []
    with gzip.open(DATA / "gsm8k_prompts_test.jsonl.gz", "rt") as f:
        for line in f:
            messages = json.loads(line)["messages"]
            rows.append({"prompt_id": schema.prompt_id(messages), "messages": messages, "source": "gsm8k"})
            if len(rows) == limit:
                break
    return schema.frame(rows, "prompts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: build the tiny chat model)")
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()

    from curation.generate import build_generator, run_generation
    from curation.generate.strategies import prompt_seed
    from curation.generate.vllm_engine import get_engine, release_engine
    from curation.testing import tiny_chat_model

    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    model = args.model or str(tiny_chat_model(work / "policy"))
    prompts = load_prompts(args.prompts)
    config = {
        "backend": "vllm",
        "model": model,
        "n": args.n,
        "enforce_eager": True,
        "sampling": {"temperature": 1.0, "top_p": 0.95, "max_tokens": args.max_tokens, "seed": 0},
    }
    generator = build_generator(config)
    generator.check()

    started = time.perf_counter()
    llm = get_engine(generator.model_dir, generator.model_identity(), generator.engine_args())
    engine_start_s = time.perf_counter() - started

    from vllm import SamplingParams

    conversations = prompts["messages"].to_list()
    raw_params = [
        SamplingParams(n=args.n, seed=prompt_seed(0, pid), temperature=1.0, top_p=0.95, max_tokens=args.max_tokens)
        for pid in prompts["prompt_id"]
    ]

    def raw() -> tuple[float, int, list[str]]:
        t = time.perf_counter()
        outs = llm.chat(conversations, raw_params, use_tqdm=False)
        seconds = time.perf_counter() - t
        texts = [c.text for o in outs for c in o.outputs]
        return seconds, sum(len(c.token_ids) for o in outs for c in o.outputs), texts

    def pipeline(cache_dir=None) -> tuple[float, int, list[str], object]:
        t = time.perf_counter()
        cands, stats = run_generation(prompts, config, cache_dir)
        seconds = time.perf_counter() - t
        texts = cands.sort("prompt_id", "sample_index")["text"].to_list()
        return seconds, int(cands["n_tokens"].sum()), texts, stats

    raw()  # warm-up: first batch pays kernel set-up
    raw_runs, pipe_runs = [], []
    for _ in range(args.repeats):
        raw_runs.append(raw())
        pipe_runs.append(pipeline())
    raw_best = min(raw_runs, key=lambda r: r[0])
    pipe_best = min(pipe_runs, key=lambda r: r[0])
    order = prompts.with_row_index().sort("prompt_id")["index"].to_list()
    raw_texts = [raw_best[2][i * args.n + j] for i in order for j in range(args.n)]
    same_output = raw_texts == pipe_best[2]

    cache_dir = work / "cache"
    fill_s, _, _, fill_stats = pipeline(cache_dir)
    cached_s, cached_tokens, _, cached_stats = pipeline(cache_dir)
    release_engine()

    def rate(run) -> float:
        return round(run[1] / run[0], 1)

    result = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "model": "tiny chat model (curation.testing)" if args.model is None else args.model,
        "prompts": prompts.height,
        "n": args.n,
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
        "engine_start_s": round(engine_start_s, 1),
        "raw_llm_chat": {"best_s": round(raw_best[0], 3), "tokens": raw_best[1], "tokens_per_s": rate(raw_best),
                         "all_s": [round(r[0], 3) for r in raw_runs]},  # fmt: skip
        "pipeline": {"best_s": round(pipe_best[0], 3), "tokens": pipe_best[1], "tokens_per_s": rate(pipe_best),
                     "all_s": [round(r[0], 3) for r in pipe_runs]},  # fmt: skip
        "ratio_pipeline_to_raw": round(rate(pipe_best) / rate(raw_best), 3),
        "goal_ratio": 0.9,
        "same_output_as_raw": same_output,
        "cache": {
            "fill_run_s": round(fill_s, 3),
            "fill_calls": fill_stats.calls,
            "cached_rerun_s": round(cached_s, 3),
            "cached_rerun_calls": cached_stats.calls,
            "cached_rerun_hits": cached_stats.cache_hits,
            "cached_rerun_tokens_generated": cached_stats.tokens,
            "cached_rerun_fraction_of_fresh": round(cached_s / fill_s, 4),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":  # vLLM starts its engine in a spawned process: the guard is required
    main()
