#!/usr/bin/env bash
# The GPU checks (scripts/gpu_check.py says which): Unsloth against transformers + PEFT
# (tokens/s, peak GPU memory), q8_0 verification against both references, GGUF scoring time.
#
#   scripts/gpu_check.sh             on a CUDA machine (STEPS=30 MODEL=<dir or Hub id> to change)
#   scripts/gpu_check.sh --dry-run   the same code path on CPU with tiny settings
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/gpu_check.py "$@"
