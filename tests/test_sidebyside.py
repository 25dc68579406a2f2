"""The notebook's chat cell (lorahelpers.sidebyside): one message to the PyTorch model and to
the Ollama model (the test double), both answers side by side as text, HTML and, in a notebook,
a box that sends more."""

from __future__ import annotations

import pytest

from lorahelpers import ollama
from lorahelpers.chat import get_chat_format
from lorahelpers.sidebyside import SideBySide, chat_side_by_side
from tests.ollama_double import OllamaDouble

CHATML = get_chat_format("chatml")
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def base(embedded_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(embedded_path, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(embedded_path)


def test_both_answers_side_by_side(base):
    from lorahelpers.inference import generate
    from lorahelpers.models import embedded_gguf

    model, tok = base
    with OllamaDouble() as double:
        ollama.register("smol", embedded_gguf(), CHATML, host=double.url,
                        progress=lambda s: None)
        shown = chat_side_by_side(QUESTION, model, tok, CHATML, ollama_name="smol",
                                  system="Be brief.",
                                  host=double.url, max_new_tokens=16)
        again = shown.ask("Name a colour.")  # what the box's Send button calls
        prompt, sampled = double.last_prompt, double.last_options
    labels = ["PyTorch (greedy)", "Ollama smol (greedy)"]
    assert list(shown.answers) == labels and list(again.answers) == labels
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
    assert shown.answers[labels[0]] == generate(model, tok, messages, CHATML, max_new_tokens=16,
                                                stream=False)
    assert shown.answers[labels[1]].strip() and shown.prompt == CHATML.generation_prefix(messages)
    assert prompt == CHATML.generation_prefix(
        [messages[0], {"role": "user", "content": "Name a colour."}])  # the second message
    assert (sampled["temperature"], sampled["repeat_penalty"]) == (0.0, 1.0)  # greedy
    text = str(shown)
    assert text.startswith(f"Message: {QUESTION}\nPyTorch (greedy)")
    assert shown.answers[labels[0]].split()[0] in text
    assert "<table>" in shown._repr_html_() and "&lt;|im_start|&gt;system" in shown._repr_html_()
    box = shown.box()
    assert box is not None and box.children[0].children[1].description == "Send"


def test_without_a_server_the_ollama_column_says_why(base, monkeypatch):
    model, tok = base
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens there
    shown = chat_side_by_side(QUESTION, model, tok, CHATML, ollama_name="smol", max_new_tokens=4)
    assert shown.answers["Ollama smol (greedy)"].startswith("skipped: no Ollama server answers")
    assert SideBySide("Hi", {"a": "x"}).box() is None  # nothing to send more messages with
