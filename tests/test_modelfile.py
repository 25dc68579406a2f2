"""render_modelfile / write_modelfile: exact text, and every Modelfile read back by the checker
(tests/modelfile_check.py, Ollama's grammar) exactly as meant."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorahelpers.chat import get_chat_format
from lorahelpers.modelfile import check_parameters, render_modelfile, write_modelfile
from tests.gorender import GoTemplateError, render_go
from tests.modelfile_check import ModelfileError, check, parse, request

CHATML = get_chat_format("chatml")
FORMATS = [CHATML, get_chat_format("llama3"), get_chat_format("alpaca", eos="</s>"),
           get_chat_format('"""{SYSTEM}"""\n\nQ: {INPUT}\nA: {OUTPUT}', eos="<eos>")]
MESSAGES = [{"role": "system", "content": 'Quote: """x"""'},
            {"role": "user", "content": "Hi\n\"there\""},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]


@dataclass(frozen=True)
class Fmt:
    """The two ChatFormat attributes render_modelfile reads, for templates no format makes."""

    go_template: str
    stop: tuple = ("</s>",)
    name: str = "test"


def test_exact_text(tmp_path):
    fmt = Fmt("{{ .Prompt }}", ("</s>", " User:"))
    text = render_modelfile(tmp_path / "m.gguf", fmt, system="Be brief.", parameters={
        "temperature": 0.7, "num_ctx": 2048, "stop": ["\n\nUser", "</s>"], "use_mmap": False})
    assert text == (
        "FROM ./m.gguf\n"
        'TEMPLATE """{{ .Prompt }}"""\n'
        'SYSTEM """Be brief."""\n'
        "PARAMETER stop </s>\n"
        'PARAMETER stop """ User:"""\n'
        'PARAMETER stop """\n\nUser"""\n'
        "PARAMETER temperature 0.7\n"
        "PARAMETER num_ctx 2048\n"
        "PARAMETER use_mmap false\n"
        "PARAMETER repeat_penalty 1.0\n")


def test_chatml_text_and_no_empty_system(tmp_path):
    text = render_modelfile(tmp_path / "out" / "model-q8_0.gguf", CHATML, system="")
    assert text == ('FROM ./model-q8_0.gguf\nTEMPLATE """' + CHATML.go_template + '"""\n'
                    "PARAMETER stop <|im_end|>\nPARAMETER stop <|im_start|>\n"
                    "PARAMETER num_ctx 4096\nPARAMETER repeat_penalty 1.0\n")


@pytest.mark.parametrize("max_seq_length, parameters, num_ctx", [
    (None, None, 4096), (256, None, 2048), (2048, None, 2048), (2049, None, 4096),
    (5000, {"num_ctx": 1000}, 1000)])
def test_num_ctx_from_the_training_length_rounded_up(tmp_path, max_seq_length, parameters,
                                                     num_ctx):
    text = render_modelfile(tmp_path / "m.gguf", CHATML, parameters=parameters,
                            max_seq_length=max_seq_length)
    assert check(text).parameters["num_ctx"] == num_ctx
    assert text.count("PARAMETER num_ctx") == 1


@pytest.mark.parametrize("bad", [0, -5, 2048.0, True, "512"])
def test_a_bad_training_length_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="max_seq_length must be a positive int.*Fix:"):
        render_modelfile(tmp_path / "m.gguf", CHATML, max_seq_length=bad)


@pytest.mark.parametrize("version", ["0.12.6", "0.32.15", "0.34.0", "0.34.1", "0.34.2",
                                     "0.0.0", None])
def test_the_writer_follows_the_version_rules_of_the_checker(tmp_path, version):
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    checker = version or "0.33.0"  # no version: what some release accepts
    for kwargs in ({"adapter": tmp_path / "a.gguf"}, {"parameters": {"typical_p": 0.5}}):
        try:
            text = render_modelfile(tmp_path / "b.gguf", CHATML, version=version, **kwargs)
        except ValueError as e:
            assert "Fix:" in str(e) and version in str(e)
            with pytest.raises(ModelfileError, match="no longer supported"):
                written = render_modelfile(tmp_path / "b.gguf", CHATML, **kwargs)
                request(written, tmp_path, checker)
        else:
            request(text, tmp_path, checker)  # the checker of that release accepts it


def test_adapter_mode_and_paths_relative_to_the_modelfile(tmp_path):
    base, lora = tmp_path / "base" / "b.gguf", tmp_path / "run" / "~lora.gguf"
    text = render_modelfile(base, Fmt("{{ .Prompt }}"), adapter=lora,
                            modelfile_dir=tmp_path / "run")
    assert text.splitlines()[:2] == ["FROM ../base/b.gguf", "ADAPTER ./~lora.gguf"]
    # before the files exist, Ollama's CLI would take FROM as a model name to pull
    with pytest.raises(ModelfileError, match="no such file"):
        request(text, tmp_path / "run", "0.33.0")
    for path in (base, lora):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"GGUF")
    assert request(text, tmp_path / "run", "0.33.0") == {
        "files": [str(base)], "adapters": [str(lora)], "template": "{{ .Prompt }}",
        "parameters": {"stop": ["</s>"], "num_ctx": 4096, "repeat_penalty": 1.0}}


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_every_format_reads_back_exactly(tmp_path, fmt):
    gguf = tmp_path / "my model.gguf"
    gguf.write_bytes(b"GGUF")
    system = 'He said """stop""" and\nleft "quietly"'
    text = render_modelfile(gguf, fmt, system=system, parameters={"top_k": 40})
    mf = check(text)
    assert mf.one("template") == fmt.go_template
    assert mf.one("system") == system
    assert mf.parameters == {"stop": list(fmt.stop), "top_k": 40, "num_ctx": 4096,
                             "repeat_penalty": 1.0}
    assert request(text, tmp_path)["files"] == [str(gguf)]


def _quotable(value: str, command: str) -> bool:
    """Whether any Modelfile spelling of value reads back as exactly value (the oracle)."""
    for spelling in (value, f'"{value}"', f'"""{value}"""'):
        try:
            if parse(f"FROM x\n{command} {spelling}\n").commands[1:] == [(command.lower(), value)]:
                return True
        except ModelfileError:
            pass
    return False


tricky = st.lists(st.sampled_from(['"', '"""', "\n", "\r", " ", "\t", "a", "#", "é", "{{",
                                   "\u200b", "\x07", "\u00a0"]), max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(system=st.one_of(tricky, st.text(max_size=30)))
def test_system_prompts_read_back_or_are_rejected(tmp_path_factory, system):
    gguf = tmp_path_factory.getbasetemp() / "m.gguf"
    try:
        text = render_modelfile(gguf, CHATML, system=system)
    except ValueError as e:
        assert "SYSTEM" in str(e)
        assert not _quotable(system, "SYSTEM"), "rejected a system prompt that can be written"
        return
    mf = check(text)
    assert mf.one("system") == (system or None)
    assert mf.one("template") == CHATML.go_template


@settings(max_examples=300, deadline=None)
@given(stop=tricky.filter(bool))
def test_stop_strings_read_back_or_are_rejected(tmp_path_factory, stop):
    gguf = tmp_path_factory.getbasetemp() / "m.gguf"
    try:
        text = render_modelfile(gguf, Fmt("{{ .Prompt }}", (stop,)))
    except ValueError:
        assert not _quotable(stop, "PARAMETER stop")
        return
    assert check(text).parameters["stop"] == [stop]


def _same_render(original: str, written: str):
    for msgs in (MESSAGES, MESSAGES[1:2], []):
        assert render_go(written, msgs) == render_go(original, msgs)


@pytest.mark.parametrize("template", [
    '{{ range .Messages }}{{ .Content }}"""\n{{ end }}',          # a line ends in """
    '""""{{ range .Messages }}\u200b{{ .Content }}\x07{{ end }}\n"""',
    '{{- range .Messages }}""" \n  {{- .Content }}{{ end }}"""  \nend"',
])
def test_templates_ollama_cannot_quote_are_rewritten_to_render_the_same(tmp_path, template):
    text = render_modelfile(tmp_path / "m.gguf", Fmt(template))
    written = check(text).one("template")
    assert written != template
    _same_render(template, written)


pieces = st.lists(st.sampled_from(['"', '"""', "\n", " ", "x", "\u200b", "{{ .System }}",
                                   "{{ range .Messages }}{{ .Role }}: {{ .Content }}{{ end }}",
                                   '{{ if .System }}"S"{{ end }}', "{{- ", " -}}"]),
                  max_size=10).map("".join)


@settings(max_examples=150, deadline=None)
@given(template=pieces)
def test_any_template_reads_back_or_renders_the_same(tmp_path_factory, template):
    try:
        render_go(template, [])
    except GoTemplateError:
        return  # not a template Go accepts; Ollama's create would reject it anyway
    text = render_modelfile(tmp_path_factory.getbasetemp() / "m.gguf", Fmt(template))
    written = check(text).one("template")
    if written != template:
        _same_render(template, written)


def test_a_template_no_quoting_can_hold_is_rejected(tmp_path):
    # three quotes end a line inside a raw string: no text rewriting can reach it
    with pytest.raises(ValueError, match="TEMPLATE cannot be written.*line 1 ends with three"):
        render_modelfile(tmp_path / "m.gguf", Fmt('{{ `a"""\nb` }}'))


def test_a_system_line_ending_in_three_quotes_is_rejected_not_altered(tmp_path):
    with pytest.raises(ValueError, match="SYSTEM cannot be written.*line 2 ends with three"):
        render_modelfile(tmp_path / "m.gguf", CHATML, system='ok\nsay """hi"""  \nbye')
    assert not _quotable('ok\nsay """hi"""  \nbye', "SYSTEM")


def test_unprintable_system_text_is_rejected_with_its_place(tmp_path):
    with pytest.raises(ValueError, match=r"SYSTEM has U\+200D \(ZERO WIDTH JOINER\) at "
                                         r"character 2"):
        render_modelfile(tmp_path / "m.gguf", CHATML, system="ab\u200dc")


@pytest.mark.parametrize("params, error", [
    ({"max_tokens": 5}, "unknown Ollama parameter 'max_tokens'"),
    ({"mirostat": 2}, "'mirostat' is deprecated"),
    ({"num_ctx": 2048.0}, "needs a finite int"),
    ({"num_ctx": True}, "needs a finite int"),
    ({"temperature": "0.7"}, "needs a finite float"),
    ({"temperature": float("inf")}, "needs a finite float"),
    ({"temperature": 1e39}, "needs a finite float"),
    ({"use_mmap": 1}, "needs a finite bool"),
    ({"stop": [""]}, "non-empty strings"),
    ({"stop": [3]}, "non-empty strings"),
])
def test_bad_parameters(params, error):
    with pytest.raises(ValueError, match=error):
        check_parameters(params, ("</s>",))


def test_parameters_merge_stops_without_duplicates():
    assert check_parameters({"stop": "B", "seed": 1, "temperature": 1}, ("A", "B")) == {
        "stop": ["A", "B"], "seed": 1, "temperature": 1.0}


def test_write_modelfile_is_atomic_and_next_to_the_gguf(tmp_path):
    gguf = tmp_path / "m.gguf"
    path = write_modelfile(gguf, CHATML, system="Hi")
    assert path == tmp_path / "Modelfile"
    assert check(path.read_text()).one("system") == "Hi"
    before = path.read_text()
    with pytest.raises(ValueError):
        write_modelfile(gguf, CHATML, system="bad\x00")
    assert path.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["Modelfile"]
