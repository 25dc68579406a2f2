#!/usr/bin/env bash
# Check lorahelpers against a real Ollama: print the server version, register the demo model and
# say which registration mode was used, ask it three questions from the held-out sample data, and
# print the answers next to the expected ones.
#
#   bash scripts/ollama_check.sh [MODEL.gguf] [NAME]
#
# MODEL.gguf defaults to the q8_0 GGUF that `make demo` wrote under outputs/demo; NAME to
# lorahelpers-check. OLLAMA_HOST picks the server (default 127.0.0.1:11434); when none answers
# and the ollama command is installed, one is started for the check and stopped afterwards.
# CHAT_FORMAT (default chatml, the demo's) must be the format the model was trained with.
# ADAPTER=lora.gguf registers MODEL.gguf as the base with that LoRA adapter on servers that
# accept adapters; on 0.34.1 and later MERGED=merged.gguf is registered instead.
# MAX_SEQ_LENGTH (the training length) sets PARAMETER num_ctx.
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

gguf, name, format_name = sys.argv[1:4]
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
    print(f"\nOllama server version: {info['ollama_version']}; registration mode: "
          f"{info['registration']}")
except ollama.OllamaError as e:
    sys.exit(f"error: {e}")
finally:
    if server is not None:
        server.stop()
EOF
