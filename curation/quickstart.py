"""The quickstart's synthetic task: two-number addition with verifiable answers, and a tiny policy.

The whole curation loop needs a policy that is right sometimes and not always, so that on-policy
candidates disagree and a verifier can tell good from bad. Nothing can be downloaded, so the
policy is the tiny offline chat model of `curation.testing`, pre-trained here for about a
minute on the task itself. Everything is deterministic for a seed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path

import polars as pl

from curation import schema

log = logging.getLogger(__name__)

TASK = "addition"
HELDOUT = (200, 123)  # (count, seed): the held-out problems; never shown in pre-training or curation
POOL = (256, 1)  # (count, seed): the prompts the quickstart generates candidates for
# examples/closed-loop.yaml: enough held-out problems (the quickstart's 200 first) for an interval
# that can exclude zero, and a larger pool; its policy never sees any of the 500
CLOSED_LOOP_HELDOUT = (500, HELDOUT[1])
CLOSED_LOOP_POOL = (512, 2)
_POLICY_MARKER = "curate_quickstart_policy.json"


def addition_problems(n: int, seed: int, digits: int = 2, exclude: set[tuple[int, int]] | None = None):
    """`n` distinct (a, b) pairs of `digits`-digit operands, none in `exclude`."""
    rng = random.Random(seed)
    lo, hi = 10 ** (digits - 1), 10**digits - 1
    if n > (hi - lo + 1) ** 2 - len(exclude or ()):
        raise ValueError(f"cannot draw {n} distinct {digits}-digit addition problems")
    seen = set(exclude or ())
    out = []
    while len(out) < n:
        ab = (rng.randint(lo, hi), rng.randint(lo, hi))
        if ab not in seen:
            seen.add(ab)
            out.append(ab)
    return out


def question(a: int, b: int) -> str:
    return f"{a}+{b}="


def addition_prompts(n: int, seed: int = 0, digits: int = 2, exclude=None) -> pl.DataFrame:
    """A `prompts` frame of addition problems; `meta` holds the reference answer."""
    rows = []
    for a, b in addition_problems(n, seed, digits, exclude):
        messages = schema.user_prompt(question(a, b))
        rows.append(
            {
                "prompt_id": schema.prompt_id(messages),
                "messages": messages,
                "source": TASK,
                "meta": schema.dumps({"answer": str(a + b), "task": TASK}),
            }
        )
    return schema.frame(rows, "prompts")


def write_prompts_jsonl(path: str | os.PathLike, n: int, seed: int, digits: int = 2, exclude=None) -> Path:
    """Write problems as JSONL ({"messages", "answer"} per line) for a recipe's `sources`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = addition_prompts(n, seed, digits, exclude)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        for row in frame.iter_rows(named=True):
            answer = json.loads(row["meta"])["answer"]
            f.write(json.dumps({"messages": row["messages"], "answer": answer}) + "\n")
    os.replace(tmp, path)
    return path


def heldout_problems(count: int = HELDOUT[0]) -> set[tuple[int, int]]:
    """The first `count` held-out problems (the same draw for every count, so 200 are inside 500)."""
    return set(addition_problems(count, HELDOUT[1]))


def write_quickstart_data(folder: str | os.PathLike) -> tuple[Path, Path]:
    """The quickstart's two prompt files: the generation pool and the held-out set (disjoint)."""
    folder = Path(folder)
    heldout = write_prompts_jsonl(folder / "addition-heldout.jsonl", *HELDOUT)
    pool = write_prompts_jsonl(folder / "addition-pool.jsonl", *POOL, exclude=heldout_problems())
    return pool, heldout


def write_closed_loop_data(folder: str | os.PathLike) -> tuple[Path, Path]:
    """examples/closed-loop.yaml's prompt files: 512 pool problems and 500 held-out ones (disjoint)."""
    folder = Path(folder)
    count = CLOSED_LOOP_HELDOUT[0]
    heldout = write_prompts_jsonl(folder / f"addition-heldout-{count}.jsonl", *CLOSED_LOOP_HELDOUT)
    pool = write_prompts_jsonl(
        folder / f"addition-pool-{CLOSED_LOOP_POOL[0]}.jsonl", *CLOSED_LOOP_POOL, exclude=heldout_problems(count)
    )
    return pool, heldout


def build_policy(path: str | os.PathLike, heldout: int = HELDOUT[0], **options) -> Path:
    """The recipe's `quickstart_policy` model builder: the tiny policy, the first `heldout`
    held-out problems excluded from its pre-training."""
    return pretrain_policy(path, holdout=heldout_problems(heldout), **options)


def is_correct(response: str | None, answer: str) -> bool:
    """The recipe's verifier (the `verify` scorer's math check) on one response."""
    from curation.scorers.verify import answers_match, extract_answer

    found, _ = extract_answer(response or "")
    return found is not None and answers_match(found, str(answer))[0]


# ---------------------------------------------------------------- the tiny policy


def _chat_ids(tok, q: str, a: str) -> tuple[list[int], int]:
    """Token ids of one (question, answer) chat and where the answer starts."""
    prefix = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
    p_ids = tok(prefix, add_special_tokens=False)["input_ids"]
    a_ids = tok(a + "<|im_end|>", add_special_tokens=False)["input_ids"]
    return p_ids + a_ids, len(p_ids)


def pretrain_policy(
    path: str | os.PathLike,
    *,
    steps: int = 1200,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    digits: int = 2,
    holdout: set[tuple[int, int]] | None = None,
) -> Path:
    """Build the tiny chat model in `path` and train it on addition for `steps` steps (once).

    Supervised next-token loss on the answer tokens only. The step count, not a clock, bounds
    the training so the model is the same on every machine; about a minute on 2 cores.
    `holdout` problems are never shown, so evaluation measures generalisation. One torch thread:
    the model is so small that more threads only add synchronisation (on a busy machine, ten
    times the CPU time per step).
    """
    path = Path(path)
    if (path / _POLICY_MARKER).exists():
        return path
    import torch

    from curation.testing import tiny_chat_model

    base = tiny_chat_model(path.with_name(path.name + ".base"), seed=seed)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    lo, hi = 10 ** (digits - 1), 10**digits - 1
    holdout = holdout or set()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    started = time.monotonic()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step in range(steps):
            batch = []
            while len(batch) < batch_size:
                a, b = rng.randint(lo, hi), rng.randint(lo, hi)
                if (a, b) not in holdout:
                    batch.append(_chat_ids(tok, question(a, b), str(a + b)))
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((batch_size, width), tok.pad_token_id)
            labels = torch.full((batch_size, width), -100)
            attention = torch.zeros((batch_size, width), dtype=torch.long)
            for i, (ids, start) in enumerate(batch):
                input_ids[i, : len(ids)] = torch.tensor(ids)
                labels[i, start : len(ids)] = torch.tensor(ids[start:])
                attention[i, : len(ids)] = 1
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            if step % 100 == 0 or step == steps - 1:
                log.info("policy pre-training: step %d/%d loss %.3f (%.0fs)", step + 1, steps, loss.item(), time.monotonic() - started)
    finally:
        torch.set_num_threads(threads)
    tmp = path.with_name(path.name + ".tmp")
    model.eval()
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / _POLICY_MARKER).write_text(
        json.dumps({"task": TASK, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "digits": digits})
    )
    if path.exists():
        import shutil

        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def task_accuracy(model_path: str | os.PathLike, prompts: pl.DataFrame, batch_size: int = 128) -> float:
    """Greedy accuracy of a causal LM on addition prompts (answers in `meta`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    rows = prompts.select("messages", "meta").to_dicts()
    right = 0
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        texts = [tok.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=False) for r in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **enc, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
            )
        for r, ids in zip(chunk, out[:, enc["input_ids"].shape[1] :]):
            right += is_correct(tok.decode(ids, skip_special_tokens=True), json.loads(r["meta"])["answer"])
    return right / max(1, len(rows))
