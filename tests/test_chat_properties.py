"""Property tests: for random conversations and random custom templates, the Python render,
the Jinja template (Jinja2 with transformers' settings) and the Go template (Go's own
text/template) give the same bytes, and the spans sit exactly on each response plus eos."""

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lorahelpers.chat import BUILTIN, get_chat_format
from tests.gorender import render_go
from tests.test_chat import jinja_render

TRICKY = ["{{", "}}", "{%", "%}", "{#", "#}", '"""', '"', "'", "\\", "\\n", "\n", "\r", "\t",
          "{INPUT}", "{{ .Content }}", "{{ end }}", "<|im_end|>", "### Instruction:", "é", "日本",
          "😀", "\u2028", "\x00", " ", "{", "}", "$", "`"]
text = st.lists(st.one_of(st.text(max_size=8), st.sampled_from(TRICKY)), max_size=6).map("".join)
# template literal text: anything except the placeholders themselves
literal = text.filter(lambda s: not any(k in s for k in ("{INPUT}", "{OUTPUT}", "{SYSTEM}")))
EOS = st.sampled_from(["</s>", "<|im_end|>", "<|endoftext|>", "<eos>"])


@st.composite
def conversations(draw, end_with="user"):
    messages = []
    system = draw(st.one_of(st.none(), st.just(""), text))
    if system is not None:
        messages.append({"role": "system", "content": system})
    turns = draw(st.integers(1, 3))
    for i in range(turns):
        messages.append({"role": "user", "content": draw(text)})
        if i < turns - 1 or end_with == "assistant":
            messages.append({"role": "assistant", "content": draw(text)})
    return messages


@st.composite
def custom_templates(draw):
    parts = [draw(st.sampled_from(["", "<|begin_of_text|>"]))]
    if draw(st.booleans()):
        parts += [draw(literal), "{SYSTEM}", draw(st.sampled_from(["\n", "\n\n", "<E>"]))]
    parts += [draw(literal), "{INPUT}", draw(literal), "{OUTPUT}", draw(literal)]
    return "".join(parts)


@st.composite
def chat_formats(draw):
    eos = draw(EOS)
    name = draw(st.sampled_from([*BUILTIN, "custom"]))
    if name != "custom":
        return get_chat_format(name, eos=eos)
    template = draw(custom_templates())
    try:
        return get_chat_format(template, eos=eos)
    except ValueError:
        assume(False)


PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.filter_too_much])


@PROPS
@given(fmt=chat_formats(), messages=conversations())
def test_jinja_and_go_render_the_same_generation_prompt(fmt, messages):
    expected = fmt.render(messages, add_generation_prompt=True)
    assert jinja_render(fmt, messages, add_generation_prompt=True) == expected
    assert render_go(fmt.go_template, messages) == expected


@PROPS
@given(fmt=chat_formats(), messages=conversations(end_with="assistant"))
def test_spans_cover_exactly_each_response_and_eos(fmt, messages):
    full, spans = fmt.render_with_spans(messages)
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    assert [full[s:e] for s, e in spans] == [a + fmt.eos for a in answers]
    assert all(e <= s2 for (_, e), (s2, _) in zip(spans, spans[1:], strict=False))
    assert full == fmt.render(messages) == jinja_render(fmt, messages)
    # outside the spans, the text is the same whatever the responses say
    blank = [{**m, "content": ""} if m["role"] == "assistant" else m for m in messages]
    pieces, at = [], 0
    for s, e in spans:
        pieces += [full[at:s], fmt.eos]
        at = e
    assert "".join(pieces) + full[at:] == fmt.render(blank)
    # what Ollama sends before the last response is exactly the training text up to it
    assert render_go(fmt.go_template, messages[:-1]) == full[:spans[-1][0]]
