"""The embedded SmolLM2's tokenizer is built from its GGUF (models.byte_level_bpe_tokenizer), not
by transformers' GGUF reader, which 5.17 got wrong (end of text <|im_start|>, byte-fallback
decoder). CI runs these under the newest transformers and under Colab's set
(scripts/colab_set_tests.sh): the checkpoint must tokenize as llama.cpp runs the GGUF."""

from __future__ import annotations

import json

import pytest

from lorahelpers.llamacpp import gguf_metadata, import_llama_cpp
from lorahelpers.models import embedded_gguf

PROBES = [
    "Hello world", "Bonjour, ça va ? Où est la bibliothèque ?", "Grüße aus München – Straße",
    "你好，世界！今天天气很好。", "こんにちは世界、カタカナ", "Привет, мир! Ёжик", "مرحبا بالعالم",
    "नमस्ते दुनिया", "안녕하세요", "def f(x):\n    return x ** 2  # square\n\tpass\n",
    '{"a": [1, 2.5e-3, null], "b": "c\\n"}', "for (int i = 0; i < 10; ++i) { i--; }",
    "😀👍🏽👨‍👩‍👧‍👦🇫🇷 ok ✅", "  two  spaces\t\ttabs\n\n\nnewlines\r\nwindows   ", " leading",
    "trailing ", "   ", "\n", "don't I'LL we're you've 's",
    # SmolLM's pre-tokenizer splits every digit first: transformers 5.24's own reading of this
    # GGUF does not, and tokenizes the space before a digit differently from llama.cpp.
    "12345 and 2024, 3.14159", "steps\n    5\n    20", "²³ ½ ٣٤ Ⅻ",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "text <|endoftext|> more <repo_name>x<file_sep>", "<|im_sta rt|> <|im_end", "Ġ Ċ literally",
    "\u00a0nbsp\u200bzero-width", "ab" * 100 + " " + "12" * 20,
]


@pytest.fixture(scope="module")
def gguf_vocab():
    llm = import_llama_cpp().Llama(str(embedded_gguf()), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def llama_cpp_ids(llm, text: str) -> list[int]:
    return llm.tokenize(text.encode(), add_bos=False, special=True)


def test_the_embedded_tokenizer_tokenizes_as_llama_cpp_runs_the_gguf(embedded_tokenizer,
                                                                      gguf_vocab):
    for text in PROBES:
        ids = embedded_tokenizer(text)["input_ids"]
        assert ids == llama_cpp_ids(gguf_vocab, text), text
        assert embedded_tokenizer.decode(ids) == text


def test_its_special_tokens_and_chat_template_are_the_gguf_s(embedded_tokenizer, gguf_vocab,
                                                           embedded_path):
    tok = embedded_tokenizer
    meta = gguf_metadata(embedded_gguf())
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == tuple(
        int(meta[f"tokenizer.ggml.{k}_token_id"]) for k in ("bos", "eos", "padding", "unknown"))
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|im_end|>")
    assert tok.chat_template == meta["tokenizer.chat_template"]
    messages = [{"role": "user", "content": "What is 12 + 30? 🙂"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                    "Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 12 + 30? 🙂<|im_end|>\n"
                    "<|im_start|>assistant\n")
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    assert list(ids["input_ids"]) == llama_cpp_ids(gguf_vocab, text)
    # Byte-level BPE: llama.cpp's converter takes a byte-fallback model for SentencePiece.
    model = json.loads((embedded_path / "tokenizer.json").read_text())["model"]
    assert model["type"] == "BPE" and not model.get("byte_fallback")
