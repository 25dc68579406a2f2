#!/usr/bin/env bash
# The non-slow tests under the versions a Colab GPU runtime gets: transformers, trl, peft,
# datasets, accelerate... exactly as scripts/check_colab_resolution.py resolves them beside
# Unsloth, with torch's CPU build, in a virtualenv of their own (default .venv-colab), and a
# fresh lorahelpers cache so that no checkpoint built by another transformers is reused.
# Safe to run again: each step checks first and installs only what is missing or changed.
#   scripts/colab_set_tests.sh           resolve the Colab set first (about a minute)
#   scripts/colab_set_tests.sh PINS      use PINS, written by check_colab_resolution.py --pins
set -euo pipefail
cd "$(dirname "$0")/.."
. lorahelpers/pins.env  # TORCH_CPU

VENV=${COLAB_VENV:-.venv-colab}
PY="$VENV/bin/python"
start=$SECONDS
step() { printf '\n==> [%d s] %s\n' $((SECONDS - start)) "$*"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pins=${1:-}
if [ -z "$pins" ]; then
  step "Resolving the Colab install set"
  pins="$work/colab-pins.txt"
  python3 scripts/check_colab_resolution.py --pins "$pins"
fi

python312() {
  local p
  for p in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
    if "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

if [ ! -x "$PY" ]; then
  # Colab's Python is 3.12. PyPI has no CPU build of torch for it: pip takes the CUDA build
  # (a 527 MB wheel and about 3 GB of nvidia-* wheels, 4.7 GB installed, about a minute from
  # pip's cache), which runs on the CPU as Colab's own CUDA torch does. Without a Python 3.12
  # the Colab versions are tested under python3.
  base=python3
  if p=$(python312); then
    base=$p
  else
    echo "colab_set_tests: no Python 3.12 found (pyenv install 3.12);" \
         "the Colab versions are tested under $(python3 --version)."
  fi
  step "Creating virtualenv $VENV ($("$base" --version))"
  "$base" -m venv "$VENV"
  "$PY" -m pip --disable-pip-version-check -q install --upgrade pip
fi

# The rest is scripts/setup.sh --dev in this virtualenv, with the resolution as a constraint
# on every pip call (torch, llama-cpp-python, the embedded models and the test tools as there).
# setup.sh reinstalls the requirements when its stamp is gone: removed when the pins change.
STAMP="$VENV/.colab-pins"
want=$(sha256sum < "$pins" | cut -c1-16)
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
  rm -f "$VENV/.lorahelpers-requirements"
fi
# torch here is PyPI's 2.13.0, not Colab's: the resolution's triton (Unsloth's, for Colab's
# torch) would conflict with the one this torch pins, and nothing on the CPU runs triton.
constraints="$work/colab-pins-here.txt"
grep -v -i -E '^(triton|nvidia-[a-z0-9-]*|cuda-[a-z0-9-]*)==' "$pins" > "$constraints"
step "scripts/setup.sh --dev in $VENV under the Colab set's versions"
VENV=$VENV PIP_CONSTRAINT=$constraints bash scripts/setup.sh --dev
echo "$want" > "$STAMP"

# The versions that matter must be the resolved ones (pip keeps constraints; this says which).
"$PY" - "$pins" <<'EOF'
import importlib.metadata as md
import sys

pinned = dict(line.strip().split("==") for line in open(sys.argv[1]) if "==" in line)
names = ("transformers", "trl", "peft", "datasets", "accelerate", "tokenizers")
wrong = [f"{n} {md.version(n)} (resolved {pinned[n]})" for n in names
         if n in pinned and md.version(n) != pinned[n]]
if wrong:
    sys.exit(f"colab_set_tests: installed versions differ from the resolution: {wrong}. Fix: "
             f"delete {sys.prefix} and run again")
print(f"Python {sys.version.split()[0]}, torch {md.version('torch')}, "
      + ", ".join(f"{n} {md.version(n)}" for n in names))
EOF

cache="$work/lorahelpers-cache"
step "Fetching llama.cpp's converter into a fresh lorahelpers cache ($cache)"
LORAHELPERS_CACHE=$cache "$PY" -c "from lorahelpers.export import converter_dir; converter_dir()"
step "Non-slow tests under the Colab set"
LORAHELPERS_CACHE=$cache "$PY" -m pytest tests -m "not slow" -n 2 --dist loadgroup \
  -p no:cacheprovider -q ${PYTEST_ARGS:-}
step "Colab set done"
