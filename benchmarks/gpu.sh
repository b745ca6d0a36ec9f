#!/usr/bin/env bash
# One command on a fresh GPU machine: install with CURATE_GPU=1 (scripts/setup.sh), then measure
#   1. generation tokens/s: the pipeline's vLLM backend vs raw LLM.chat, and their ratio (benchmarks/generate.py)
#   2. reward-model scoring rows/s through vLLM's pooling runner vs transformers (benchmarks/score_vllm.py)
#   3. a short DPO run through curation.train: seconds per step (benchmarks/dpo_step.py)
# and write JSON under $OUT (default benchmarks/results/gpu/): one file per part, steps.jsonl, gpu.json.
# Budget: 8 minutes in all (BUDGET_S, seconds; 30 minutes with --cpu); each part gets a timeout from what is left, and a part that fails or
# runs out is recorded (rc, seconds) and the next one still runs. Exit status: 0 only if all passed.
#
#   bash benchmarks/gpu.sh          on a GPU machine, from a fresh clone with ../shared/data beside it
#   bash benchmarks/gpu.sh --cpu    here: no install, no GPU check, small sizes, $PY (default .venv/bin/python)
#
# CURATE_GPU_MODEL=/path/to/policy uses a real chat model for parts 1 and 3 (default: the tiny
# offline model built by curation.testing, which measures the pipeline's overhead, not a GPU's speed).
# Never called by the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
if [ "${1:-}" = "--cpu" ]; then MODE=cpu; elif [ -n "${1:-}" ]; then echo "usage: bash benchmarks/gpu.sh [--cpu]" >&2; exit 2; fi
OUT=${OUT:-benchmarks/results/gpu}
MODEL=${CURATE_GPU_MODEL:-}
DATA=../shared/data
PY=${PY:-.venv/bin/python}

for f in gsm8k_prompts_test.jsonl.gz alpaca_eval1_gpt4_pairs.jsonl.gz hh_rlhf_test.jsonl.gz; do
  [ -f "$DATA/$f" ] || { echo "gpu.sh: $DATA/$f is missing (the shared corpus must sit beside the repository)" >&2; exit 2; }
done
mkdir -p "$OUT"
rm -f "$OUT/steps.jsonl" "$OUT/gpu.json" "$OUT/nvidia-smi.txt" "$OUT/generate.json" "$OUT/score_vllm.json" "$OUT/dpo_step.json"

if [ "$MODE" = gpu ]; then
  BUDGET_S=${BUDGET_S:-480}
  command -v nvidia-smi >/dev/null || { echo "gpu.sh: nvidia-smi not found: not a GPU machine (use --cpu to try the parts here)" >&2; exit 2; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/nvidia-smi.txt"
  echo "gpu.sh: installing (CURATE_GPU=1 scripts/setup.sh) ..."
  CURATE_GPU=1 bash scripts/setup.sh > "$OUT/setup.log" 2>&1 || { echo "gpu.sh: set-up failed, see $OUT/setup.log" >&2; exit 1; }
  PY=.venv/bin/python
  "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu.sh: torch sees no GPU after the install")'
  GEN_ARGS=(--prompts 256 --n 4 --max-tokens 128 --repeats 2)
  SCORE_ARGS=(--rows 1024 --repeats 2 --device cuda --enforce-eager)
  DPO_ARGS=(--pairs 256 --steps 20 --batch-size 8)
else
  BUDGET_S=${BUDGET_S:-1800}  # vLLM's CPU engine takes minutes to start on a loaded machine
  GEN_ARGS=(--prompts 8 --n 2 --max-tokens 16 --repeats 1)
  SCORE_ARGS=(--rows 32 --repeats 1 --device cpu --enforce-eager --models tiny)
  DPO_ARGS=(--pairs 16 --steps 3 --max-length 256)
fi
[ -x "$PY" ] || { echo "gpu.sh: no python at $PY (set PY=...)" >&2; exit 2; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false

FAILED=0
# part NAME SHARE_OF_WHAT_IS_LEFT COMMAND...: run with a timeout, log to $OUT/NAME.log, record rc and seconds
part() {
  local name=$1 share=$2 left limit t rc
  shift 2
  left=$((BUDGET_S - SECONDS))
  limit=$((left * share / 100))
  if [ "$limit" -lt 30 ]; then
    echo "gpu.sh: $name skipped, ${left}s of the budget left"
    rc=124
  else
    echo "gpu.sh: $name (timeout ${limit}s) ..."
    t=$SECONDS
    if timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1; then rc=0; else rc=$?; fi
    echo "gpu.sh: $name rc=$rc in $((SECONDS - t))s"
  fi
  [ "$rc" -eq 0 ] || FAILED=1
  printf '{"part": "%s", "rc": %d, "seconds": %d, "timeout_s": %d}\n' "$name" "$rc" "$((SECONDS - ${t:-SECONDS}))" "$limit" >> "$OUT/steps.jsonl"
}

part generate 40 "$PY" benchmarks/generate.py ${MODEL:+--model "$MODEL"} "${GEN_ARGS[@]}" --out "$OUT/generate.json"
part score_vllm 55 "$PY" benchmarks/score_vllm.py "${SCORE_ARGS[@]}" --out "$OUT/score_vllm.json"
part dpo_step 100 "$PY" benchmarks/dpo_step.py ${MODEL:+--model "$MODEL"} "${DPO_ARGS[@]}" --out "$OUT/dpo_step.json"

"$PY" - "$OUT" "$MODE" "$SECONDS" <<'EOF'
import json, sys
from pathlib import Path

out, mode, seconds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
summary = {"mode": mode, "total_s": seconds, "parts": [json.loads(l) for l in (out / "steps.jsonl").read_text().splitlines()]}
gpu = out / "nvidia-smi.txt"
summary["gpu"] = gpu.read_text().strip() if gpu.exists() else None
for name in ("generate", "score_vllm", "dpo_step"):
    f = out / f"{name}.json"
    summary[name] = json.loads(f.read_text()) if f.exists() else None
(out / "gpu.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"gpu.sh: wrote {out / 'gpu.json'} in {seconds}s")
EOF
exit "$FAILED"
