#!/usr/bin/env bash
# GPU check: train the same short LoRA job with the Unsloth backend (when it imports) and with
# plain transformers + PEFT, each in its own process (importing Unsloth patches transformers),
# and print tokens/s and peak GPU memory for both.
#
#   scripts/gpu_check.sh             on a CUDA machine (STEPS=30 MODEL=<dir or Hub id> to change)
#   scripts/gpu_check.sh --dry-run   the same code path on CPU with tiny settings
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
export DRY STEPS="${STEPS:-30}" MODEL="${MODEL:-}"

run_backend() {  # $1: unsloth | transformers; prints one result line
    "$PY" - "$1" <<'EOF'
import json, os, statistics, sys, tempfile

backend = sys.argv[1]
if backend == "transformers":
    sys.modules["unsloth"] = None  # keep Unsloth's patches out of the plain PEFT run
import torch

dry = os.environ["DRY"] == "1"
if not dry and not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA GPU here; use --dry-run to exercise the code path on CPU")
from lorahelpers.data import to_conversations
from lorahelpers.models import LoraSettings, add_lora, embedded_base, load_model
from lorahelpers.training import TrainSettings, train

steps = 2 if dry else int(os.environ["STEPS"])
convs, _ = to_conversations("data/alpaca_train.jsonl")
model, tokenizer = load_model(os.environ["MODEL"] or embedded_base(), max_seq_length=512,
                              backend=backend, chat_format="chatml")
model = add_lora(model, LoraSettings())
if torch.cuda.is_available():
    torch.cuda.reset_peak_memory_stats()
extra = {"batch_size": 2, "grad_accum": 1} if dry else {}
with tempfile.TemporaryDirectory() as out:
    result = train(model, tokenizer, convs, None, "chatml",
                   TrainSettings(output_dir=out, max_steps=steps, save_steps=10_000,
                                 progress="none", reraise_interrupt=False, **extra))
rates = [r for r in result.history.column("tokens_per_s")[1:] if r] or \
    result.history.column("tokens_per_s")
peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
s = result.settings
print("RESULT " + json.dumps({
    "backend": backend, "steps": result.steps, "tokens_per_s": statistics.median(rates),
    "peak_gb": peak, "final_loss": result.final_loss,
    "settings": f"batch {s.batch_size}x{s.grad_accum}, {s.optim}, bf16={s.bf16}, "
                f"checkpointing={s.gradient_checkpointing}"}))
EOF
}

"$PY" -c "from lorahelpers.runtime import runtime_report; print(runtime_report().summary())"
BACKENDS="transformers"
if [ "$DRY" = 0 ] && "$PY" -c "import unsloth" >/dev/null 2>&1; then
    BACKENDS="unsloth transformers"
else
    echo "Unsloth not importable here: measuring transformers + PEFT only."
fi
RESULTS=""
for b in $BACKENDS; do
    echo "== $b =="
    line=$(run_backend "$b" | tee /dev/stderr | grep '^RESULT ' || true)
    [ -n "$line" ] || { echo "gpu_check: the $b run failed" >&2; exit 1; }
    RESULTS+="${line#RESULT }"$'\n'
done
RESULTS="$RESULTS" "$PY" - <<'EOF'
import json, os

rows = [json.loads(line) for line in os.environ["RESULTS"].splitlines() if line.strip()]
print(f"\n{'backend':14} {'steps':>5} {'tokens/s':>9} {'peak GB':>8} {'loss':>7}  settings")
for r in rows:
    print(f"{r['backend']:14} {r['steps']:5d} {r['tokens_per_s']:9.0f} {r['peak_gb']:8.2f} "
          f"{r['final_loss']:7.3f}  {r['settings']}")
if len(rows) == 2:
    fast, plain = rows
    print(f"unsloth / transformers: {fast['tokens_per_s'] / plain['tokens_per_s']:.2f}x tokens/s, "
          f"{fast['peak_gb'] / plain['peak_gb']:.2f}x peak GPU memory")
EOF
