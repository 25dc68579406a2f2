"""End to end: fine-tuned model -> q8_0 GGUF -> registered with the Ollama double -> chat, with
the double as each release in VERSIONS.

The prompt Ollama builds must equal the Hugging Face chat template's rendering (the template in
the GGUF, which training used) byte for byte, and the reply must equal llama.cpp's own greedy
continuation of that prompt, cut at the stop strings. In adapter mode the reply is that of the
base with the LoRA where the release accepts adapters, and that of the merged model where it
refuses them (0.34.1 and later).
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np
import pytest

from lorahelpers import ollama
from lorahelpers.chat import get_chat_format
from lorahelpers.ollama import GREEDY_OPTIONS
from tests.ollama_double import DEFAULT_NUM_PREDICT, VERSIONS, OllamaDouble

pytestmark = pytest.mark.slow
CHATML = get_chat_format("chatml")
SYSTEM = "You are a helpful assistant"
CONVERSATION = [{"role": "user", "content": "Name three colours of the rainbow."},
                {"role": "assistant", "content": "Red, orange and yellow."},
                {"role": "user", "content": "What is the capital of France?"}]


def greedy(gguf, prompt: str, stop, lora=None, n_predict=DEFAULT_NUM_PREDICT):
    """Prompt tokens and llama.cpp's greedy reply: the prompt evaluated in one batch, then one
    token at a time until an end-of-generation token, cut at the first stop string. Computed
    once per file, prompt and adapter: every release's double is compared with the same."""
    return _greedy(str(gguf), prompt, tuple(stop), str(lora) if lora else None, n_predict)


@functools.cache
def _greedy(gguf: str, prompt: str, stop: tuple, lora: str | None, n_predict: int):
    import llama_cpp

    llm = llama_cpp.Llama(gguf, n_ctx=2048, n_threads=1, n_threads_batch=1, lora_path=lora,
                          verbose=False)
    try:
        tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        llm.eval(tokens)
        out: list[int] = []
        for _ in range(n_predict):
            logits = np.ctypeslib.as_array(
                ctypes.cast(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                            ctypes.POINTER(ctypes.c_float)), shape=(llm.n_vocab(),))
            token = int(np.argmax(logits))
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            out.append(token)
            text = llm.detokenize(out, prev_tokens=tokens).decode("utf-8", errors="ignore")
            if any(s in text for s in stop):
                break
            llm.eval([token])
        text = llm.detokenize(out, prev_tokens=tokens).decode("utf-8", errors="ignore")
        cuts = [text.index(s) for s in stop if s in text]
        return tokens, text[:min(cuts)] if cuts else text
    finally:
        llm.close()


def gguf_chat_template(path) -> str:
    from gguf import GGUFReader

    return GGUFReader(path).fields["tokenizer.chat_template"].contents()


@pytest.fixture(scope="module", params=VERSIONS)
def double(request):
    with OllamaDouble(request.param) as d:
        yield d


def test_merged_q8_0_prompt_and_reply_match_training(double, q8_gguf, embedded_tokenizer):
    template = gguf_chat_template(q8_gguf)
    assert template == CHATML.jinja_template  # the GGUF carries the training template
    info = ollama.register("tuned", q8_gguf, CHATML, host=double.url, system=SYSTEM,
                           progress=lambda s: None)
    assert info["template"] == CHATML.go_template
    assert info["details"]["quantization_level"] == "Q8_0"
    assert (info["registration"], info["ollama_version"]) == ("model", double.version)

    for request, seen in [
        (CONVERSATION, [{"role": "system", "content": SYSTEM}] + CONVERSATION),
        ([{"role": "system", "content": "Answer in one word."}] + CONVERSATION[2:],
         [{"role": "system", "content": "Answer in one word."}] + CONVERSATION[2:]),
    ]:
        reply = ollama.chat("tuned", request, host=double.url, stream=False,
                            options=GREEDY_OPTIONS)
        hf = embedded_tokenizer.apply_chat_template(seen, chat_template=template,
                                                    tokenize=False, add_generation_prompt=True)
        assert double.last_prompt == hf  # byte for byte
        assert double.last_prompt == CHATML.render(seen, add_generation_prompt=True)
        tokens, expected = greedy(q8_gguf, hf, CHATML.stop)
        assert tokens == embedded_tokenizer(hf, add_special_tokens=True)["input_ids"]
        assert reply == expected and reply.strip()


def test_adapter_mode_reply_matches_llama_cpp_with_the_lora(double, base_f16_gguf,
                                                            adapter_gguf, f16_gguf):
    info = ollama.register("tuned-lora", base_f16_gguf, CHATML, host=double.url,
                           adapter=adapter_gguf, merged=f16_gguf, progress=lambda s: None)
    refused = double.release.refuses_adapters
    assert info["registration"] == ("merged model" if refused else "adapter layer")
    assert ("adapters" in double.creates[-1]) is not refused
    model, lora = (f16_gguf, None) if refused else (base_f16_gguf, adapter_gguf)
    changed = []
    for question in ("Name three colours of the rainbow.", "What is the capital of France?"):
        messages = [{"role": "user", "content": question}]
        reply = ollama.chat("tuned-lora", messages, host=double.url, stream=False,
                            options=GREEDY_OPTIONS | {"num_predict": 40})
        prompt = CHATML.render(messages, add_generation_prompt=True)
        assert double.last_prompt == prompt
        assert reply == greedy(model, prompt, CHATML.stop, lora, 40)[1]
        changed.append(reply != greedy(base_f16_gguf, prompt, CHATML.stop, None, 40)[1])
    assert any(changed)  # the LoRA was applied, not just the base model
