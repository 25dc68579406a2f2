"""ChatFormat templates rendered by transformers' own chat-template engine on the embedded
base model's tokenizer (local files only)."""

import copy

from hypothesis import HealthCheck, given, settings

from lorahelpers.chat import get_chat_format, install_chat_template
from tests.gorender import render_go
from tests.test_chat_properties import chat_formats, conversations

TRICKY = [
    {"role": "system", "content": 'Quote """this""" and {{ that }} {% if %} \\n'},
    {"role": "user", "content": "Line one\nLine two\r\n{#comment#} ünïcödé 😀"},
    {"role": "assistant", "content": "{{ .Content }} <|im_start|> '"},
    {"role": "user", "content": ""},
]


def test_transformers_renders_every_builtin_like_python_and_go(embedded_tokenizer):
    eos = embedded_tokenizer.eos_token
    assert eos == "<|im_end|>"
    formats = [get_chat_format(n, eos=eos) for n in ("chatml", "llama3", "alpaca")]
    formats.append(get_chat_format("{SYSTEM}\n<<{INPUT}>>\n'{OUTPUT}'", eos=eos))
    for fmt in formats:
        got = embedded_tokenizer.apply_chat_template(
            TRICKY, chat_template=fmt.jinja_template, tokenize=False, add_generation_prompt=True)
        assert got == fmt.render(TRICKY, add_generation_prompt=True), fmt.name
        assert got == render_go(fmt.go_template, TRICKY), fmt.name


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(fmt=chat_formats(), messages=conversations())
def test_transformers_render_equals_python_render(embedded_tokenizer, fmt, messages):
    got = embedded_tokenizer.apply_chat_template(
        messages, chat_template=fmt.jinja_template, tokenize=False, add_generation_prompt=True)
    assert got == fmt.render(messages, add_generation_prompt=True)


def test_install_chat_template_on_real_tokenizer(embedded_tokenizer):
    tok = copy.deepcopy(embedded_tokenizer)
    fmt = get_chat_format("chatml")
    install_chat_template(tok, fmt)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    text = tok.apply_chat_template(messages, tokenize=False)
    full, spans = fmt.render_with_spans(messages)
    assert text == full
    # SmolLM2's own template would inject a default system prompt; ours must not
    assert "system" not in text
    ids = tok(full[spans[0][0]:spans[0][1]], add_special_tokens=False)["input_ids"]
    assert ids[-1] == tok.convert_tokens_to_ids(fmt.eos)
