#!/usr/bin/env bash
# Check lorahelpers against a real Ollama: print the server version, register the demo model and
# say which registration mode was used, ask it three questions from the held-out sample data and
# print the answers next to the expected ones, then score the held-out rows with llama.cpp on the
# GGUF and through the server (greedy, and with the options `ollama run` uses) and print the
# comparison table with the check (greedy through Ollama must keep the GGUF's score).
#
#   bash scripts/ollama_check.sh [MODEL.gguf] [NAME]
#
# MODEL.gguf defaults to the q8_0 GGUF that `make demo` wrote under outputs/demo; NAME to
# lorahelpers-check. OLLAMA_HOST picks the server (default 127.0.0.1:11434); when none answers
# and the ollama command is installed, one is started for the check and stopped afterwards.
# CHAT_FORMAT (default chatml, the demo's) must be the format the model was trained with.
# ADAPTER=lora.gguf registers MODEL.gguf as the base with that LoRA adapter on servers that
# accept adapters; on 0.34.1 and later MERGED=merged.gguf is registered instead.
# MAX_SEQ_LENGTH (the training length) sets PARAMETER num_ctx. EVAL_DATA (default
# data/alpaca_eval.jsonl) holds the held-out rows, ROWS how many of them to score (default all),
# SCORER the scorer (exact); TOKENIZER the training tokenizer's folder (default: the merged model
# beside the GGUF's folder, as export_and_verify writes it, else the embedded base's).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

gguf=${1:-}
if [ -z "$gguf" ]; then
  gguf=$(find outputs/demo -name '*q8_0*.gguf' 2>/dev/null | sort | head -n 1 || true)
  if [ -z "$gguf" ]; then
    echo "No q8_0 GGUF under outputs/demo: run 'make demo' first, or pass a .gguf path." >&2
    exit 1
  fi
fi
name=${2:-lorahelpers-check}

exec "$PY" - "$gguf" "$name" "${CHAT_FORMAT:-chatml}" <<'EOF'
import json
import os
import sys
from pathlib import Path

from lorahelpers import ollama
from lorahelpers.chat import get_chat_format
from lorahelpers.errors import LorahelpersError

gguf, name, format_name = sys.argv[1:4]


def tokenizer_for(gguf):
    from transformers import AutoTokenizer

    from lorahelpers.models import embedded_base

    merged = Path(gguf).resolve().parent.parent / "merged"
    folder = os.environ.get("TOKENIZER") or (
        merged if (merged / "tokenizer_config.json").exists() else embedded_base())
    return AutoTokenizer.from_pretrained(folder)


def held_out(gguf, name, fmt):
    """Score the held-out rows with llama.cpp and through the server; print the table."""
    from lorahelpers.data import to_conversations
    from lorahelpers.heldout import compare, score_ollama
    from lorahelpers.inference import evaluate_gguf

    rows, _ = to_conversations(os.environ.get("EVAL_DATA") or "data/alpaca_eval.jsonl")
    rows = rows[:int(os.environ.get("ROWS") or len(rows))]
    scorer, tokenizer = os.environ.get("SCORER") or "exact", tokenizer_for(gguf)
    print(f"\nScoring {len(rows)} held-out rows with llama.cpp on {Path(gguf).name}")
    report = evaluate_gguf(gguf, rows, fmt, tokenizer, scorer=scorer)
    quant = Path(gguf).stem  # the table's column: "<stem> GGUF (llama.cpp)"
    scores = score_ollama(name, rows, fmt, tokenizer, scorer=scorer, gguf=gguf,
                          gguf_report=report, quant=quant)
    print(compare(None, None, {quant: report}, scores))
    return scores.check
server = None
try:
    if ollama.server_available() is None:
        print("No Ollama server answers; starting `ollama serve` for this check.")
        server = ollama.start_server()
    print(f"Ollama server version: {ollama.server_available()} at {ollama.base_url()}")
    length = os.environ.get("MAX_SEQ_LENGTH")
    info = ollama.register(name, gguf, get_chat_format(format_name),
                           adapter=os.environ.get("ADAPTER") or None,
                           merged=os.environ.get("MERGED") or None,
                           max_seq_length=int(length) if length else None)
    details = info.get("details", {})
    print(f"registered {name}: {details.get('family')} {details.get('parameter_size')} "
          f"{details.get('quantization_level')}")
    print(f"registration mode: {info['registration']} on Ollama {info['ollama_version']}")
    rows = [json.loads(line) for line in Path("data/alpaca_eval.jsonl").open()][:3]
    for row in rows:
        question = row["instruction"]
        if row.get("input"):
            question += "\n\n### Input:\n" + row["input"]
        print(f"\nQ: {question}\nA: ", end="", flush=True)
        ollama.chat(name, question)
        print(f"(expected: {row['output']})")
    check = held_out(gguf, name, get_chat_format(format_name))
    print(f"\nOllama server version: {info['ollama_version']}; registration mode: "
          f"{info['registration']}")
    if not check.passed:
        sys.exit(1)
except LorahelpersError as e:
    sys.exit(f"error: {e}")
finally:
    if server is not None:
        server.stop()
EOF
