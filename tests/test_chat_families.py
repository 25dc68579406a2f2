"""Chat formats of the model families (Gemma, Mistral, Phi, Qwen): exact strings, Jinja == Go,
the choice of "auto", and ours against the tokenizers' own templates where one ships locally."""

from types import SimpleNamespace

import pytest

from lorahelpers.chat import BUILTIN, detect_chat_format, get_chat_format
from tests.test_chat import U2, A, S, U, all_renders

CONV = [S, U, A, U2]


def test_gemma_folds_the_system_prompt_into_the_first_user_turn():
    fmt = get_chat_format("gemma")
    assert (fmt.eos, fmt.stop) == ("<end_of_turn>", ("<end_of_turn>", "<start_of_turn>"))
    assert all_renders(fmt, CONV) == (
        "<start_of_turn>user\nBe brief.\n\nWhat is 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n4<end_of_turn>\n"
        "<start_of_turn>user\nAnd 3+3?<end_of_turn>\n"
        "<start_of_turn>model\n")
    # without a system message, every user turn has its own prefix
    assert all_renders(fmt, [U, A, U2]).startswith("<start_of_turn>user\nWhat is 2+2?")
    # a second user turn is never folded, even if it is message 1
    assert all_renders(fmt, [U, U2]) == (
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
        "<start_of_turn>user\nAnd 3+3?<end_of_turn>\n<start_of_turn>model\n")


def test_mistral_inst_layout():
    fmt = get_chat_format("mistral")
    assert fmt.eos == "</s>" and "[INST]" in fmt.stop
    assert all_renders(fmt, CONV) == (
        "[INST] Be brief.\n\nWhat is 2+2?[/INST]4</s>[INST] And 3+3?[/INST]")


def test_phi3_and_phi4():
    phi3 = get_chat_format("phi")
    assert phi3.name == "phi3" and phi3.eos == "<|end|>"
    assert all_renders(phi3, CONV) == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nWhat is 2+2?<|end|>\n"
        "<|assistant|>\n4<|end|>\n<|user|>\nAnd 3+3?<|end|>\n<|assistant|>\n")
    phi4 = get_chat_format("phi4")
    assert all_renders(phi4, CONV) == (
        "<|im_start|>system<|im_sep|>Be brief.<|im_end|>"
        "<|im_start|>user<|im_sep|>What is 2+2?<|im_end|>"
        "<|im_start|>assistant<|im_sep|>4<|im_end|>"
        "<|im_start|>user<|im_sep|>And 3+3?<|im_end|>"
        "<|im_start|>assistant<|im_sep|>")


def test_qwen_is_chatml_and_qwen3_answers_after_an_empty_think_block():
    chatml = all_renders(get_chat_format("chatml"), CONV)
    assert all_renders(get_chat_format("qwen2.5"), CONV) == chatml
    qwen3 = get_chat_format("qwen3")
    text, spans = qwen3.render_with_spans([U, A])
    empty_think = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert text == f"<|im_start|>user\nWhat is 2+2?<|im_end|>\n{empty_think}4<|im_end|>\n"
    assert [text[s:e] for s, e in spans] == ["4<|im_end|>"]
    assert all_renders(qwen3, [U]).endswith(empty_think)


def test_every_builtin_is_listed_in_the_unknown_name_error():
    with pytest.raises(ValueError, match="gemma, llama3, mistral, phi3, phi4, qwen, qwen3"):
        get_chat_format("gema")
    with pytest.raises(ValueError, match="Did you mean 'gemma'"):
        get_chat_format("gema")
    with pytest.raises(ValueError, match="pass tokenizer="):
        get_chat_format("auto")


def fake_tokenizer(tokens=(), template=None, eos="</s>"):
    vocab = {t: i for i, t in enumerate([eos, *tokens])}
    return SimpleNamespace(get_vocab=lambda: vocab, chat_template=template, eos_token=eos)


# Opening pieces of the templates the families ship (enough to be recognised).
TEMPLATES = {
    "llama3": "{{- bos_token }}{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}",
    "gemma": "{{ bos_token }}{{ '<start_of_turn>' + role + '\\n' }}",
    "phi4": "{{'<|im_start|>user<|im_sep|>' + message['content'] + '<|im_end|>'}}",
    "qwen3": "{{- '<|im_start|>' + message.role + '\\n<think>\\n' }}",
    "qwen": "{{ '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud.<|im_end|>' }}",
    "chatml": "{{ '<|im_start|>' + message['role'] + '\\n' }}",
    "phi3": "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}",
    "mistral": "{{ '[INST] ' + message['content'] + '[/INST]' }}",
}
VOCABS = {
    "llama3": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "gemma": ["<start_of_turn>", "<end_of_turn>"],
    "phi4": ["<|im_start|>", "<|im_end|>", "<|im_sep|>"],
    "qwen3": ["<|im_start|>", "<|im_end|>", "<think>", "</think>"],
    "chatml": ["<|im_start|>", "<|im_end|>"],
    "phi3": ["<|user|>", "<|assistant|>", "<|end|>"],
    "mistral": ["[INST]", "[/INST]"],
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_auto_reads_the_tokenizers_own_template_first(name):
    # the vocabulary says chatml; the template is what decides
    tok = fake_tokenizer(["<|im_start|>", "<|im_end|>"], TEMPLATES[name])
    picked, why = detect_chat_format(tok)
    assert picked == name and "chat template" in why
    assert get_chat_format("auto", tokenizer=tok).name == name


@pytest.mark.parametrize("name", sorted(VOCABS))
def test_auto_falls_back_to_the_special_tokens(name):
    picked, why = detect_chat_format(fake_tokenizer(VOCABS[name]))
    assert picked == name and "special tokens" in why


def test_auto_without_template_or_chat_tokens_is_alpaca_with_the_eos():
    tok = fake_tokenizer(["hello"], eos="<|endoftext|>")
    assert detect_chat_format(tok)[0] == "alpaca"
    fmt = get_chat_format("auto", tokenizer=tok)
    assert fmt.name == "alpaca" and fmt.eos == "<|endoftext|>"


@pytest.mark.parametrize("name", BUILTIN)
def test_each_builtin_renders_alike_in_python_jinja_and_go(name):
    fmt = get_chat_format(name, eos="</s>")
    for messages in ([U], [S, U], [U, A, U2], CONV, [S, U, A, U2, A, U]):
        all_renders(fmt, messages)


PROBES = [[U], [S, U], [S, U, A, U2], [U, A, U2], [{"role": "user", "content": " spaced \n"}]]


def test_chatml_matches_smollm2s_own_template_but_for_its_default_system_prompt(
        embedded_tokenizer):
    # The embedded tokenizer still carries SmolLM2's own template. The one deliberate
    # difference: without a system message it inserts a default one; chatml does not (it
    # would double the tokens of short training examples and be trained into every answer).
    own = embedded_tokenizer.chat_template
    assert own and "<|im_start|>" in own
    assert detect_chat_format(embedded_tokenizer)[0] == "chatml"
    fmt = get_chat_format("chatml")
    default = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
               "Hugging Face<|im_end|>\n")
    for messages in PROBES:
        theirs = embedded_tokenizer.apply_chat_template(messages, tokenize=False,
                                                        add_generation_prompt=True)
        ours = fmt.render(messages, add_generation_prompt=True)
        assert theirs == (ours if messages[0]["role"] == "system" else default + ours)
