"""The quickstart's synthetic task: two-number addition with verifiable answers, and a tiny policy.

The closed loop can only help where the policy is right sometimes and not reliably: then its own
samples disagree, a verifier tells the right ones from the wrong ones, and training on those pairs
teaches what greedy decoding missed. So the tiny policy (the offline chat model of
`curation.testing`, nothing can be downloaded) is pre-trained for about a minute on additions that
rarely carry: it adds without a carry reliably and carries only now and then. Curation samples
carrying problems it never saw in pre-training, and evaluation asks other unseen carrying problems,
so a gain is the skill learned from verified on-policy samples, not memory. Everything is
deterministic for a seed.
"""

from __future__ import annotations

import inspect
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
# (count, seed) of the carrying problems held out for evaluation and of the pools curation samples;
# none of them is ever shown in pre-training, and the pools never hold a held-out problem
HELDOUT = (200, 123)
POOL = (256, 1)
# examples/closed-loop.yaml: enough held-out problems (the quickstart's 200 first) for an interval
# that can exclude zero, and a larger pool: 512 fresh problems for each of its two rounds
CLOSED_LOOP_HELDOUT = (500, HELDOUT[1])
CLOSED_LOOP_POOL = (1024, 2)
QUICKSTART_RESERVED_POOL = 512  # of the closed-loop pool the quickstart's policy never sees (its build since 512 was all)
CARRY_SHARE = 0.1  # of pre-training problems that carry: greedy decoding gets about half of unseen carries right
_POLICY_MARKER = "curate_quickstart_policy.json"


def carries(a: int, b: int) -> bool:
    """Whether a + b carries out of the ones digit: the skill pre-training leaves under-trained."""
    return a % 10 + b % 10 >= 10


def addition_problems(n: int, seed: int, digits: int = 2, exclude: set[tuple[int, int]] | None = None,
                      carry: bool | None = None) -> list[tuple[int, int]]:
    """`n` distinct (a, b) pairs of `digits`-digit operands, none in `exclude`; only carrying (or
    only non-carrying) ones when `carry` is set. The same seed draws the same sequence, so the
    first n of a larger draw are the draw of n."""
    rng = random.Random(seed)
    lo, hi = 10 ** (digits - 1), 10**digits - 1
    space = (hi - lo + 1) ** 2 if carry is None else sum(
        carries(a, b) == carry for a in range(lo, hi + 1) for b in range(lo, hi + 1))
    if n > space - len(set(exclude or ())):
        raise ValueError(f"cannot draw {n} distinct {digits}-digit addition problems")
    seen = set(exclude or ())
    out = []
    while len(out) < n:
        ab = (rng.randint(lo, hi), rng.randint(lo, hi))
        if ab not in seen and (carry is None or carries(*ab) == carry):
            seen.add(ab)
            out.append(ab)
    return out


def question(a: int, b: int) -> str:
    return f"{a}+{b}="


def addition_prompts(n: int, seed: int = 0, digits: int = 2, exclude=None, carry: bool | None = None) -> pl.DataFrame:
    """A `prompts` frame of addition problems; `meta` holds the reference answer."""
    rows = []
    for a, b in addition_problems(n, seed, digits, exclude, carry):
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


def write_prompts_jsonl(path: str | os.PathLike, n: int, seed: int, digits: int = 2, exclude=None,
                        carry: bool | None = None) -> Path:
    """Write problems as JSONL ({"messages", "answer"} per line) for a recipe's `sources`."""
    return _write_problems(Path(path), addition_problems(n, seed, digits, exclude, carry))


def _write_problems(path: Path, problems: list[tuple[int, int]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        for a, b in problems:
            f.write(json.dumps({"messages": schema.user_prompt(question(a, b)), "answer": str(a + b)}) + "\n")
    os.replace(tmp, path)
    return path


def heldout_problems(count: int = HELDOUT[0]) -> set[tuple[int, int]]:
    """The first `count` held-out carrying problems (the same draw for every count: 200 are inside 500)."""
    return set(addition_problems(count, HELDOUT[1], carry=True))


def pool_problems(count: int, seed: int) -> list[tuple[int, int]]:
    """A pool of carrying problems for curation, disjoint from every held-out problem."""
    return addition_problems(count, seed, exclude=heldout_problems(CLOSED_LOOP_HELDOUT[0]), carry=True)


def reserved_problems(closed_loop_pool: int = QUICKSTART_RESERVED_POOL) -> set[tuple[int, int]]:
    """Every problem a recipe curates or evaluates on: pre-training never shows one. Of the closed
    loop's pool, the first `closed_loop_pool` (the same draw for every count, like the held-out set)."""
    return (heldout_problems(CLOSED_LOOP_HELDOUT[0]) | set(pool_problems(*POOL))
            | set(pool_problems(closed_loop_pool, CLOSED_LOOP_POOL[1])))


def write_quickstart_data(folder: str | os.PathLike) -> tuple[Path, Path]:
    """The quickstart's two prompt files: the generation pool and the held-out set (disjoint)."""
    folder = Path(folder)
    heldout = _write_problems(folder / "addition-heldout.jsonl", addition_problems(*HELDOUT, carry=True))
    return _write_problems(folder / "addition-pool.jsonl", pool_problems(*POOL)), heldout


def write_closed_loop_data(folder: str | os.PathLike) -> tuple[Path, Path]:
    """examples/closed-loop.yaml's prompt files: 1,024 pool problems (512 fresh ones per round) and
    500 held-out ones (disjoint)."""
    folder = Path(folder)
    n_held, n_pool = CLOSED_LOOP_HELDOUT[0], CLOSED_LOOP_POOL[0]
    heldout = _write_problems(folder / f"addition-heldout-{n_held}.jsonl", addition_problems(*CLOSED_LOOP_HELDOUT, carry=True))
    return _write_problems(folder / f"addition-pool-{n_pool}.jsonl", pool_problems(*CLOSED_LOOP_POOL)), heldout


def build_policy(path: str | os.PathLike, *, closed_loop_pool: int = QUICKSTART_RESERVED_POOL, **options) -> Path:
    """The recipe's `quickstart_policy` model builder: the tiny policy, never shown a problem that a
    recipe curates or evaluates on. `closed_loop_pool`: how many closed-loop pool problems it never
    sees; examples/closed-loop.yaml reserves all 1,024 (its second round's problems must be as new as
    its first's), the quickstart keeps the 512 it was built with (the same policy as before)."""
    return pretrain_policy(path, holdout=reserved_problems(closed_loop_pool), **options)


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
    steps: int = 650,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    digits: int = 2,
    carry_share: float = CARRY_SHARE,
    holdout: set[tuple[int, int]] | None = None,
) -> Path:
    """Build the tiny chat model in `path` and train it on addition for `steps` steps (once).

    Supervised next-token loss on the answer tokens only; `carry_share` of the problems carry, so
    the rest of the task is learnt and carrying stays unreliable: at 650 steps and lr 1e-3, greedy
    decoding gets about 0.1 of unseen carries right at a 5% share, 0.5 at 10%, 0.75 at 15%, while
    adding without a carry is right every time (the accuracy follows the share, not a point on a
    steep training curve). The step count, not a clock, bounds the training so the model is the
    same on every machine; about a minute on 2 cores. A folder built with other settings is
    rebuilt.
    `holdout` problems are never shown, so evaluation measures generalisation. One torch thread:
    the model is so small that more threads only add synchronisation (on a busy machine, ten
    times the CPU time per step).
    """
    path = Path(path)
    holdout = holdout or set()
    settings = {"task": TASK, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "digits": digits,
                "carry_share": carry_share, "holdout": schema.content_hash("holdout", sorted(holdout))}
    marker = path / _POLICY_MARKER
    if marker.exists() and json.loads(marker.read_text()) == settings:
        return path  # built before with these settings; other settings (an older quickstart's) build anew
    import torch

    from curation.testing import tiny_chat_model

    base = tiny_chat_model(path.with_name(path.name + ".base"), seed=seed)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    lo, hi = 10 ** (digits - 1), 10**digits - 1
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
                carry = rng.random() < carry_share
                while (ab := (rng.randint(lo, hi), rng.randint(lo, hi))) in holdout or carries(*ab) != carry:
                    pass
                batch.append(_chat_ids(tok, question(*ab), str(sum(ab))))
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
    (tmp / _POLICY_MARKER).write_text(json.dumps(settings))
    if path.exists():
        import shutil

        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


# the builder's options are pretrain_policy's (the recipe checks them at load), less the problems it
# reserves, plus how many of the closed-loop pool those are
build_policy.__signature__ = inspect.signature(pretrain_policy).replace(
    parameters=[*(p for p in inspect.signature(pretrain_policy).parameters.values() if p.name != "holdout"),
                inspect.Parameter("closed_loop_pool", inspect.Parameter.KEYWORD_ONLY, default=QUICKSTART_RESERVED_POOL,
                                  annotation=int)])


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
