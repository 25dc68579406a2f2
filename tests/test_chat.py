"""ChatFormat: exact strings per format, template parsing, and errors (pure, no torch)."""

import jinja2
import jinja2.ext
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lorahelpers.chat import ChatFormat, get_chat_format, install_chat_template, parse_template
from tests.gorender import render_go

U = {"role": "user", "content": "What is 2+2?"}
A = {"role": "assistant", "content": "4"}
S = {"role": "system", "content": "Be brief."}
U2 = {"role": "user", "content": "And 3+3?"}


def jinja_render(fmt: ChatFormat, messages, add_generation_prompt=False) -> str:
    """Render like transformers does: sandboxed, trim_blocks and lstrip_blocks on."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(fmt.jinja_template).render(
        messages=messages, add_generation_prompt=add_generation_prompt,
        bos_token="<BOS>", eos_token=fmt.eos)


def all_renders(fmt, messages):
    """The generation prompt from Python, Jinja and Go; they must agree."""
    py = fmt.render(messages, add_generation_prompt=True)
    assert jinja_render(fmt, messages, add_generation_prompt=True) == py
    assert render_go(fmt.go_template, messages) == py
    return py


def test_chatml_exact():
    fmt = get_chat_format("chatml")
    assert (fmt.name, fmt.eos, fmt.stop) == ("chatml", "<|im_end|>", ("<|im_end|>", "<|im_start|>"))
    assert all_renders(fmt, [S, U, A, U2]) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
        "<|im_start|>assistant\n")
    # no default system prompt is injected
    assert all_renders(fmt, [U]) == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


def test_llama3_exact():
    fmt = get_chat_format("llama3")
    assert fmt.eos == "<|eot_id|>"
    assert set(fmt.stop) == {"<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"}
    text = all_renders(fmt, [S, U, A, U2])
    assert text == (
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "<|begin_of_text|>" not in text


def test_alpaca_exact_single_turn_and_input():
    fmt = get_chat_format("alpaca", eos="</s>")
    assert fmt.stop == ("</s>", "### Instruction:")
    user = {"role": "user", "content": "Translate.\n\n### Input:\nHallo"}
    text, spans = fmt.render_with_spans([user, {"role": "assistant", "content": "Hello"}])
    assert text == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n"
        "### Instruction:\nTranslate.\n\n### Input:\nHallo\n\n"
        "### Response:\nHello</s>\n\n")
    assert [text[s:e] for s, e in spans] == ["Hello</s>"]


def test_alpaca_system_replaces_preamble_and_multi_turn_concatenates():
    fmt = get_chat_format("alpaca", eos="<|im_end|>")
    assert all_renders(fmt, [S, U, A, U2]) == (
        "Be brief.\n\n"
        "### Instruction:\nWhat is 2+2?\n\n### Response:\n4<|im_end|>\n\n"
        "### Instruction:\nAnd 3+3?\n\n### Response:\n")


def test_alpaca_and_custom_need_eos():
    with pytest.raises(ValueError, match="eos=tokenizer.eos_token"):
        get_chat_format("alpaca")
    with pytest.raises(ValueError, match="eos=tokenizer.eos_token"):
        get_chat_format("Q: {INPUT}\nA: {OUTPUT}")


def test_unknown_name_suggests_closest():
    with pytest.raises(ValueError, match="Did you mean 'chatml'"):
        get_chat_format("chatlm")


def test_spans_cover_each_assistant_content_and_eos():
    fmt = get_chat_format("chatml")
    a2 = {"role": "assistant", "content": "6"}
    text, spans = fmt.render_with_spans([S, U, A, U2, a2])
    assert [text[s:e] for s, e in spans] == ["4<|im_end|>", "6<|im_end|>"]
    assert text == fmt.render([S, U, A, U2, a2])
    # the prompt used at inference is exactly the text before the last response
    assert text[:spans[-1][0]] == fmt.generation_prefix([S, U, A, U2])


def test_render_with_spans_needs_a_final_assistant_turn():
    with pytest.raises(ValueError, match="ends with an assistant"):
        get_chat_format("chatml").render_with_spans([U])


@pytest.mark.parametrize("messages, match", [
    ([{"role": "bot", "content": "x"}], "role 'bot' is unknown. Fix: use one of"),
    ([{"role": "user", "content": None}], "content is a NoneType. Fix: make it a string"),
    ([U, S], "system message after the first. Fix: move it"),
    ("hello", "must be a list"),
])
def test_bad_messages(messages, match):
    with pytest.raises((ValueError, TypeError), match=match):
        get_chat_format("chatml").render(messages)


def test_jinja_rejects_late_system_message():
    with pytest.raises(jinja2.exceptions.TemplateError, match="system only first"):
        jinja_render(get_chat_format("chatml"), [U, S])


def test_chat_format_validates_eos_in_stop():
    with pytest.raises(ValueError, match="lacks the eos"):
        ChatFormat("x", "</s>", ("###",))
    with pytest.raises(ValueError, match="non-empty"):
        ChatFormat("x", "", ("",))


UNSLOTH_ALPACA = ("Below are some instructions that describe some tasks. Write responses that "
                  "appropriately complete each request.\n\n### Instruction:\n{INPUT}\n\n"
                  "### Response:\n{OUTPUT}")


def test_custom_unsloth_alpaca_template():
    fmt = get_chat_format(UNSLOTH_ALPACA, eos="</s>")
    assert fmt.name == "custom" and fmt.stop == ("</s>", "### Instruction:")
    assert all_renders(fmt, [U, A, U2]) == (
        "Below are some instructions that describe some tasks. Write responses that "
        "appropriately complete each request.\n\n"
        "### Instruction:\nWhat is 2+2?\n\n### Response:\n4</s>\n\n"
        "### Instruction:\nAnd 3+3?\n\n### Response:\n")
    assert all_renders(fmt, [S, U]) == (
        "Be brief.\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\n")


def test_custom_with_system_line():
    fmt = get_chat_format("{SYSTEM}\nUSER: {INPUT}\nASSISTANT: {OUTPUT}", eos="</s>")
    assert fmt.stop == ("</s>", "USER:")
    assert all_renders(fmt, [S, U, A, U2]) == (
        "Be brief.\nUSER: What is 2+2?\nASSISTANT: 4</s>\nUSER: And 3+3?\nASSISTANT: ")
    # no system message: the system part is left out, nothing is injected
    assert all_renders(fmt, [U]) == "USER: What is 2+2?\nASSISTANT: "


LLAMA3_ONE = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{SYSTEM}<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\n{INPUT}<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n{OUTPUT}<|eot_id|>")
LLAMA3_TWO = LLAMA3_ONE + ("<|start_header_id|>user<|end_header_id|>\n\n{INPUT}<|eot_id|>"
                           "<|start_header_id|>assistant<|end_header_id|>\n\n{OUTPUT}<|eot_id|>")


@pytest.mark.parametrize("template", [LLAMA3_ONE, LLAMA3_TWO])
def test_custom_llama3_style_equals_builtin(template):
    custom = get_chat_format(template, eos="<|eot_id|>")
    builtin = get_chat_format("llama3")
    assert custom.turns == builtin.turns
    for messages in ([S, U, A, U2], [U]):
        assert all_renders(custom, messages) == builtin.render(messages, True)


def test_custom_two_examples_alpaca():
    two = UNSLOTH_ALPACA + "\n\n### Instruction:\n{INPUT}\n\n### Response:\n{OUTPUT}"
    fmt = get_chat_format(two, eos="</s>")
    one = get_chat_format(UNSLOTH_ALPACA, eos="</s>")
    assert fmt.render([U, A, U2], True) == one.render([U, A, U2], True)


def test_custom_template_with_braces_quotes_and_backslashes():
    template = ('"""{SYSTEM}""" {{not jinja}} {% raw %} \\n \'q\'\n'
                '<< {INPUT} }}\n>> {{ {OUTPUT} {#')
    fmt = get_chat_format(template, eos="[END]")
    text = all_renders(fmt, [S, U, A, U2])
    assert text == (
        '"""Be brief.""" {{not jinja}} {% raw %} \\n \'q\'\n'
        "<< What is 2+2? }}\n>> {{ 4[END] {#"
        "<< And 3+3? }}\n>> {{ ")


@pytest.mark.parametrize("template, match", [
    ("no markers here {INPUT}", "once each"),
    ("{OUTPUT} then {INPUT}", "comes before {INPUT}.*Fix: put {INPUT} first"),
    ("{INPUT}{OUTPUT}", "marker"),
    ("{INPUT}\n{SYSTEM}\n{OUTPUT}", "after the first {INPUT}.*Fix: put {SYSTEM} first"),
    ("{SYSTEM} {INPUT}\n{OUTPUT}", "where the system part ends"),
    ("A {INPUT}\nB {OUTPUT}\nA {INPUT}\nC {OUTPUT}\n", "differ"),
    ("{INPUT}\n=> {OUTPUT}\n</s>", "right after"),
])
def test_bad_custom_templates(template, match):
    with pytest.raises(ValueError, match=match):
        parse_template(template, "</s>")


def test_custom_eos_in_template_is_not_doubled():
    fmt = get_chat_format("Q: {INPUT}\nA: {OUTPUT}</s>\n", eos="</s>")
    text, spans = fmt.render_with_spans([U, A])
    assert text == "Q: What is 2+2?\nA: 4</s>\n"
    assert [text[s:e] for s, e in spans] == ["4</s>"]


def test_go_template_of_builtins_is_ollama_shaped():
    go = get_chat_format("chatml").go_template
    assert ".Messages" in go and "{{-" not in go and "-}}" not in go
    assert go.endswith("<|im_start|>assistant\n")


class FakeTokenizer:
    eos_token = "<|im_end|>"
    chat_template = None

    def get_vocab(self):
        return {"<|im_end|>": 2, "<|im_start|>": 1}


def test_install_chat_template_checks_eos_token():
    tok = FakeTokenizer()
    install_chat_template(tok, get_chat_format("chatml"))
    assert tok.chat_template == get_chat_format("chatml").jinja_template
    with pytest.raises(ValueError, match="not a token of this tokenizer"):
        install_chat_template(tok, get_chat_format("llama3"))
