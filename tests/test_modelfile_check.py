"""The Modelfile checker itself: what Ollama's parser accepts, and what it rejects with which
words (cases from parser/parser.go's behaviour and the reference notes)."""

from __future__ import annotations

import re

import pytest

from tests.modelfile_check import (
    ERR_COMMAND,
    ERR_ROLE,
    ModelfileError,
    check,
    display_shortest,
    go_parse_float32,
    name_is_valid,
    parse,
    request,
)


def cmds(text):
    return parse(text).commands


# ---- accepted input

def test_commands_are_case_insensitive_and_from_is_named_model():
    assert cmds("from ./a.gguf\nTemplate {{ .Prompt }}\nsYsTeM hi\n") == [
        ("model", "./a.gguf"), ("template", "{{ .Prompt }}"), ("system", "hi")]


def test_values_run_to_end_of_line_keeping_inner_spaces():
    assert cmds("FROM  ./my model.gguf  \nSYSTEM a  b\tc") == [
        ("model", "./my model.gguf"), ("system", "a  b\tc")]


def test_comments_only_where_a_command_starts():
    text = "# header\n  # indented comment\nFROM x # not a comment\n"
    assert cmds(text) == [("model", "x # not a comment")]


def test_triple_quotes_span_lines_and_keep_quotes_and_whitespace():
    text = 'FROM x\nTEMPLATE """  line "one"\n\n  {{ .Prompt }} """\nSYSTEM """a"""b"""\n'
    assert cmds(text)[1:] == [("template", '  line "one"\n\n  {{ .Prompt }} '),
                              ("system", 'a"""b')]


def test_single_quotes_span_lines_too():
    assert cmds('FROM x\nSYSTEM "one\ntwo"\n')[1] == ("system", "one\ntwo")


def test_a_quoted_value_ends_at_the_first_line_ending_in_its_quote():
    # what makes a value with a line ending in """ impossible to quote
    assert cmds('FROM x\nSYSTEM """a"""\nSYSTEM b"""\n')[1:] == [
        ("system", "a"), ("system", 'b"""')]
    with pytest.raises(ModelfileError, match=r"\(line 3\): command must be one of"):
        cmds('FROM x\nSYSTEM """a"""\nb"""\n')


def test_runes_go_does_not_print_are_dropped_but_tabs_and_newlines_in_quotes_are_kept():
    text = 'FROM x\nSYSTEM """a\u200bb\u00a0c\x07d\te\r\nf"""\n'
    assert cmds(text)[1] == ("system", "abcd\te\r\nf")


def test_bom_and_crlf():
    assert cmds("\ufeffFROM x\r\nSYSTEM y\r\n") == [("model", "x"), ("system", "y")]


def test_message_roles_and_parameter_names():
    mf = check('FROM x\nMESSAGE user hi there\nMESSAGE assistant """Hello"""\n'
               "PARAMETER num_ctx 4096\nPARAMETER stop A\nPARAMETER stop \"B C\"\n"
               "PARAMETER temperature 1e-1\nPARAMETER top_p 0.9\nPARAMETER use_mmap false\n")
    assert mf.messages == [{"role": "user", "content": "hi there"},
                           {"role": "assistant", "content": "Hello"}]
    assert mf.parameters == {"num_ctx": 4096, "stop": ["A", "B C"],
                             "temperature": pytest.approx(0.1),
                             "top_p": pytest.approx(0.9), "use_mmap": False}


def test_deprecated_parameters_are_dropped_with_a_warning():
    mf = check("FROM x\nPARAMETER mirostat 2\nPARAMETER penalize_newline true\n")
    assert mf.parameters == {}
    assert mf.warnings == ["warning: parameter mirostat is deprecated",
                           "warning: parameter penalize_newline is deprecated"]


def test_go_float_syntax():
    for ok in ("0.7", "1e-05", "+.5", "1_000.5", "0x1p-2", "Inf", "-infinity", "NaN", "7"):
        go_parse_float32(ok)
    for bad in ("0.7 # note", "1,5", " 1", "0x1", "1__0", "_1", "1e", "", "3.5e38"):
        with pytest.raises(ValueError):
            go_parse_float32(bad)


# ---- rejected input, with Ollama's words

@pytest.mark.parametrize("text, error", [
    ("FOO bar\n", f"(line 1): {ERR_COMMAND}"),
    ("FROM x\nCOPY a b\n", f"(line 2): {ERR_COMMAND}"),
    ("FROM x\nFROM2 y\n", f"(line 2): {ERR_COMMAND}"),
    ("SYSTEM hi\n", "no FROM line"),
    ("", "no FROM line"),
    ("# only a comment\n", "no FROM line"),
    ('FROM x\nSYSTEM """never closed\n', "unexpected EOF"),
    ('FROM x\nSYSTEM "never closed\nmore\n', "unexpected EOF"),
    ("FROM", "unexpected EOF"),
    ("FROM x\nPARAMETER\n", f"(line 3): {ERR_COMMAND}"),
    ("FROM x\nPARAMETER num-ctx 1\n", "unexpected EOF: num"),
    ("FROM x\nMESSAGE bot hi\n", f"(line 2): {ERR_ROLE}"),
    ("FROM x\nMESSAGE System hi\n", f"(line 2): {ERR_ROLE}"),
    ("FROM x\nPARAMETER temperature 0.7 # note\n", "invalid float value [0.7 # note]"),
    ("FROM x\nPARAMETER num_ctx 4096.0\n", "invalid int value [4096.0]"),
    ("FROM x\nPARAMETER seed 1_000\n", "invalid int value [1_000]"),
    ("FROM x\nPARAMETER use_mmap yes\n", "invalid bool value [yes]"),
    ("FROM x\nPARAMETER Temperature 1\n", "unknown parameter 'Temperature'"),
    ("FROM x\nPARAMETER max_tokens 10\n", "unknown parameter 'max_tokens'"),
    ("FROM x\nREQUIRES latest\n", "requires must be a valid semver (e.g. 0.14.0)"),
])
def test_rejections(text, error):
    with pytest.raises(ModelfileError) as info:
        check(text)
    assert str(info.value) == error


def test_request_resolves_paths_like_the_cli(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "a.gguf").write_bytes(b"GGUF")
    text = "FROM ./m.gguf\nADAPTER sub/a.gguf\nSYSTEM s\nPARAMETER stop x\n"
    assert request(text, tmp_path, "0.33.0") == {
        "files": [str(tmp_path / "m.gguf")], "adapters": [str(sub / "a.gguf")],
        "system": "s", "parameters": {"stop": ["x"]}}
    # a FROM that is no file is a model name, pulled by the server
    assert request("FROM ./missing.gguf\n", tmp_path) == {"from": "./missing.gguf"}


# ---- what changed between releases

def test_adapter_and_typical_p_are_refused_from_0_34_1(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    for version in ("0.12.6", "0.32.15", "0.34.0"):
        assert check("FROM x\nADAPTER ./a.gguf\nPARAMETER typical_p 0.5\n", version).parameters \
            == {"typical_p": 0.5}
    for version in ("0.34.1", "0.34.2-rc0", "0.40.0", "0.0.0"):
        with pytest.raises(ModelfileError, match="^LoRA adapters are no longer supported$"):
            request("FROM ./m.gguf\nADAPTER ./m.gguf\n", tmp_path, version)
        with pytest.raises(ModelfileError, match="^typical_p is no longer supported$"):
            check("FROM x\nPARAMETER typical_p 0.5\n", version)


def test_commands_and_parameters_each_release_knows():
    old = ('(line 2): command must be one of "from", "license", "template", "system", '
           '"adapter", "renderer", "parser", "parameter", or "message"')
    with pytest.raises(ModelfileError, match=re.escape(old)):
        parse("FROM x\nREQUIRES 0.14.0\n", "0.12.6")
    with pytest.raises(ModelfileError, match=r'"message", or "requires"$'):
        parse("FROM x\nDRAFT ./d.gguf\n", "0.14.0")
    assert parse("FROM x\nDRAFT ./d.gguf\n", "0.23.1").one("draft") == "./d.gguf"
    assert check("FROM x\nREQUIRES 0.14.0\n", "0.14.0").one("requires") == "0.14.0"
    with pytest.raises(ModelfileError, match="unknown parameter 'draft_num_predict'"):
        check("FROM x\nPARAMETER draft_num_predict 4\n", "0.24.0")
    assert check("FROM x\nPARAMETER draft_num_predict 4\n", "0.30.0").parameters == {
        "draft_num_predict": 4}


# ---- model names

@pytest.mark.parametrize("name, valid", [
    ("llama3", True), ("my-model:v1.2", True), ("user/model:latest", True),
    ("registry.example.com:5000/team/model:q8_0", True), ("scheme://h/n/m:t", True),
    ("_x", True), ("a" * 80, True), ("a" * 81, False), ("-model", False), (".model", False),
    ("model:", False), ("model:-tag", False), ("name.space/model", False), ("/model", False),
    ("", False), ("my model", False), ("modèle", False), ("a/b/c/d", False),
    ("host/name:space/model:tag", False), ("m@sha256", False),
])
def test_name_rules(name, valid):
    assert name_is_valid(name) is valid


def test_display_shortest():
    assert display_shortest("m") == "m:latest"
    assert display_shortest("u/m:t") == "u/m:t"
    assert display_shortest("h.io/u/m") == "h.io/u/m:latest"
