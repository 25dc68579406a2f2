"""The eos and the stop list of every built-in chat format, pinned exactly: Ollama gets the stop
list as PARAMETER stop, so a marker dropped from it lets the model run on into a new turn."""

from __future__ import annotations

import pytest

from lorahelpers.chat import _ALIASES, BUILTIN, get_chat_format

STOPS = {
    "alpaca": ("</s>", ("</s>", "### Instruction:")),
    "chatml": ("<|im_end|>", ("<|im_end|>", "<|im_start|>")),
    "gemma": ("<end_of_turn>", ("<end_of_turn>", "<start_of_turn>")),
    "llama3": ("<|eot_id|>", ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>")),
    "mistral": ("</s>", ("</s>", "[INST]")),
    "phi3": ("<|end|>", ("<|end|>", "<|user|>", "<|endoftext|>")),
    "phi4": ("<|im_end|>", ("<|im_end|>", "<|im_start|>")),
    "qwen": ("<|im_end|>", ("<|im_end|>", "<|im_start|>")),
    "qwen3": ("<|im_end|>", ("<|im_end|>", "<|im_start|>")),
}


def test_every_built_in_format_is_pinned():
    assert set(STOPS) == set(BUILTIN)


@pytest.mark.parametrize("name", sorted(STOPS))
def test_eos_and_stop_list_exactly(name):
    fmt = get_chat_format(name, eos="</s>")  # alpaca takes the tokenizer's eos
    assert (fmt.eos, fmt.stop) == STOPS[name]


@pytest.mark.parametrize("alias", sorted(_ALIASES))
def test_aliases_stop_as_their_format(alias):
    fmt = get_chat_format(alias)
    assert (fmt.eos, fmt.stop) == STOPS[_ALIASES[alias]]
