"""lorahelpers.ollama against the test double of Ollama's REST API (tests/ollama_double.py),
as each of the releases in VERSIONS: registration and its errors, what each release refuses,
what the double rejects, chat and history truncation, the CLI fallback, start_server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import ollama as ollama_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorahelpers import ollama
from lorahelpers.chat import get_chat_format
from lorahelpers.ollama import GREEDY_OPTIONS, OllamaError
from tests.gorender import GoTemplateError
from tests.modelfile_check import check, name_is_valid
from tests.ollama_double import NEWEST, VERSIONS, OllamaDouble, write_tiny_gguf

CHATML = get_chat_format("chatml")
REPO = Path(__file__).resolve().parent.parent
QUESTION = "What is the capital of France?"


@dataclass(frozen=True)
class Fmt:
    go_template: str
    stop: tuple = ("</s>",)
    name: str = "broken"


@pytest.fixture(params=VERSIONS)
def double(request):
    with OllamaDouble(request.param) as d:
        yield d


def refuses_adapters(double) -> bool:
    return double.release.refuses_adapters


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_gguf(tmp_path / "tiny.gguf")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, method="GET", body=None, data=None):
    """(status, content type, text) of one request, errors included."""
    if body is not None:
        data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def answer(url, method="GET", body=None, data=None):
    """(status, parsed JSON body) of one request."""
    status, _, text = http(url, method, body, data)
    return status, json.loads(text)


def upload(double, data: bytes) -> str:
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert http(f"{double.url}/api/blobs/{digest}", "POST", data=data)[0] == 201
    return digest


def fake_ollama(bin_dir: Path) -> Path:
    """An `ollama` command on bin_dir that runs the double (serve) or its CLI (create)."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "ollama"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO}/tests/fake_ollama.py" "$@"\n')
    script.chmod(0o755)
    return script


# ---------------------------------------------------------------- names, hosts

@pytest.mark.parametrize("name", ["my-model", "my-model:v1", "me/my_model:q8_0",
                                  "host.io:5000/me/m:t", "a" * 80])
def test_valid_names(name):
    assert ollama.validate_model_name(name) == name


@pytest.mark.parametrize("name", ["my model", "-x", "x:", "a/b/c/d", "na.me/x", "modèle",
                                  "a" * 81, "", "x:-y"])
def test_invalid_names(name):
    with pytest.raises(OllamaError, match="invalid model name"):
        ollama.validate_model_name(name)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab_-.:/9é !", max_size=14))
def test_name_rules_match_ollamas(name):
    try:
        ok = ollama.validate_model_name(name) == name
    except OllamaError:
        ok = False
    assert ok == name_is_valid(name)


@pytest.mark.parametrize("host", [None, "", "1.2.3.4", ":56789", "1.2.3.4:56789",
                                  "http://1.2.3.4", "https://example.com:56789/path/",
                                  "example.com/path", "[::1]:8080", "http://[::1]"])
def test_base_url_reads_hosts_like_the_official_client(host, monkeypatch):
    from ollama._client import _parse_host

    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert ollama.base_url(host) == _parse_host(host)


def test_base_url_uses_ollama_host(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:9999")
    assert ollama.base_url() == "http://0.0.0.0:9999"


def test_server_available(double):
    assert ollama.server_available(double.url) == double.version
    assert ollama.server_available(f"127.0.0.1:{free_port()}") is None


# ---------------------------------------------------------------- register

def test_register_uploads_creates_and_returns_show(double, tiny):
    said = []
    info = ollama.register("tiny-test", tiny, CHATML, host=double.url, system="Be brief.",
                           parameters={"temperature": 0.1}, progress=said.append, verify=False)
    digest = ollama.sha256_file(tiny)
    sent = double.creates[-1]
    assert sent["files"] == {"tiny.gguf": digest} and "adapters" not in sent
    assert sent["template"] == CHATML.go_template and sent["system"] == "Be brief."
    assert sent["parameters"] == {"stop": ["<|im_end|>", "<|im_start|>"], "temperature": 0.1,
                                  "num_ctx": 4096, "repeat_penalty": 1.0}
    assert info["template"] == CHATML.go_template and info["system"] == "Be brief."
    assert info["parameters"].splitlines()[0] == 'stop                           "<|im_end|>"'
    assert info["details"]["family"] == "llama"
    assert (info["ollama_version"], info["registration"]) == (double.version, "model")
    assert said[:2] == [f"Ollama {double.version} at {double.url}",
                        "registering tiny-test: model, num_ctx 4096"]
    assert "uploading tiny.gguf (0.0 MiB)" in said and said[-1] == "success"
    assert double.uploads == [digest]

    said.clear()  # again: the blob is on the server already, nothing is sent twice
    ollama.register("tiny-test", tiny, CHATML, host=double.url, progress=said.append,
                    verify=False)
    assert double.uploads == [digest]
    assert f"tiny.gguf: already on the server ({digest[:19]}...)" in said
    models = json.loads(http(f"{double.url}/api/tags")[2])["models"]
    assert [m["name"] for m in models] == ["tiny-test:latest"]  # DisplayShortest


@pytest.mark.parametrize("max_seq_length, parameters, num_ctx", [
    (512, None, 2048), (2048, None, 2048), (3000, None, 4096), (3000, {"num_ctx": 1024}, 1024)])
def test_num_ctx_comes_from_the_training_length_and_can_be_overridden(tiny, max_seq_length,
                                                                      parameters, num_ctx):
    with OllamaDouble() as d:
        ollama.register("m", tiny, CHATML, host=d.url, parameters=parameters, verify=False,
                        max_seq_length=max_seq_length, progress=lambda s: None)
        assert d.creates[-1]["parameters"]["num_ctx"] == num_ctx


def test_adapter_mode_sends_the_lora_as_adapter_where_the_server_accepts_it(double, tiny,
                                                                            tmp_path):
    lora = write_tiny_gguf(tmp_path / "lora.gguf", general_type="adapter")
    merged = write_tiny_gguf(tmp_path / "merged.gguf")
    made, said = [], []

    def make_merged():
        made.append(1)
        return merged

    info = ollama.register("with-lora", tiny, CHATML, host=double.url, adapter=lora,
                           merged=make_merged, progress=said.append, verify=False)
    sent = double.creates[-1]
    if refuses_adapters(double):  # 0.34.1 and later: the merged GGUF, made on demand
        assert "adapters" not in sent and sent["files"] == {
            "merged.gguf": ollama.sha256_file(merged)}
        assert made == [1] and info["registration"] == "merged model"
        assert said[1] == (f"Ollama {double.version} at {double.url} refuses LoRA adapters "
                           "(0.34.1 and later answer 'LoRA adapters are no longer supported'): "
                           f"registering the merged GGUF {merged} (made by the merged= "
                           "function) instead of the adapter")
        assert "\nADAPTER " not in info["modelfile"]
    else:
        assert sent["adapters"] == {"lora.gguf": ollama.sha256_file(lora)}
        assert sent["files"] == {"tiny.gguf": ollama.sha256_file(tiny)}
        assert made == [] and info["registration"] == "adapter layer"
        assert "\nADAPTER " in info["modelfile"]
    with pytest.raises(OllamaError, match="is not a LoRA GGUF"):
        ollama.register("with-lora", tiny, CHATML, host=double.url, adapter=tiny,
                        progress=lambda s: None, verify=False)
    with pytest.raises(OllamaError, match="is a LoRA adapter, not a model. Fix: pass the base"):
        ollama.register("with-lora", lora, CHATML, host=double.url, verify=False)


def test_a_server_that_refuses_adapters_gets_the_given_merged_gguf_or_a_clear_error(tiny,
                                                                                   tmp_path):
    lora = write_tiny_gguf(tmp_path / "lora.gguf", general_type="adapter")
    merged = write_tiny_gguf(tmp_path / "merged.gguf")
    with OllamaDouble("0.34.2") as d:
        said = []
        ollama.register("m", tiny, CHATML, host=d.url, adapter=lora, merged=merged,
                        progress=said.append, verify=False)
        assert "adapters" not in d.creates[-1]
        assert said[1].endswith(f"registering the merged GGUF {merged} (given as merged=) "
                                "instead of the adapter")
        with pytest.raises(OllamaError) as info:
            ollama.register("m", tiny, CHATML, host=d.url, adapter=lora, verify=False)
        assert str(info.value).startswith(f"Ollama 0.34.2 at {d.url} refuses LoRA adapters")
        assert "Fix: pass merged= the merged model's GGUF" in str(info.value)
        assert len(d.creates) == 1
        # what register avoids: the server's own answers
        digest = upload(d, lora.read_bytes())
        assert answer(f"{d.url}/api/create", "POST", {
            "model": "x", "files": {"tiny.gguf": ollama.sha256_file(tiny)},
            "adapters": {"lora.gguf": digest}}) == (
            400, {"error": "LoRA adapters are no longer supported"})
        status, body = http(f"{d.url}/api/create", "POST", {
            "model": "x", "files": {"lora.gguf": digest}})[::2]
        assert status == 200 and json.loads(body.splitlines()[-1]) == {
            "error": "LoRA adapters are no longer supported"}


@pytest.mark.parametrize("version", VERSIONS)
def test_typical_p_is_sent_only_where_ollama_accepts_it(tiny, version):
    with OllamaDouble(version) as d:
        def register():
            return ollama.register("m", tiny, CHATML, host=d.url, verify=False,
                                   parameters={"typical_p": 0.9}, progress=lambda s: None)

        if d.release.refuses_typical_p:
            with pytest.raises(OllamaError, match=rf"'typical_p' is refused by Ollama {version} "
                                                  r".*Fix: remove it"):
                register()
            assert d.creates == []
            body = {"model": "m", "files": {"tiny.gguf": ollama.sha256_file(tiny)},
                    "parameters": {"typical_p": 0.9}}
            assert answer(f"{d.url}/api/create", "POST", body) == (
                400, {"error": "typical_p is no longer supported"})
            assert answer(f"{d.url}/api/create", "POST", {**body, "parameters": {},
                                                          "quantize": "q4_K_M"})[0] == 400
        else:
            register()
            assert d.creates[-1]["parameters"]["typical_p"] == pytest.approx(0.9)


def test_errors_found_before_contacting_a_server(tmp_path, tiny):
    nowhere = f"127.0.0.1:{free_port()}"
    with pytest.raises(OllamaError, match="invalid model name 'my model'"):
        ollama.register("my model", tiny, CHATML, host=nowhere)
    with pytest.raises(OllamaError, match="GGUF .*missing.gguf does not exist. Fix: check the path, or export the model first"):
        ollama.register("m", tmp_path / "missing.gguf", CHATML, host=nowhere)
    zipped = tmp_path / "model.gguf"
    zipped.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(OllamaError, match=r"not a GGUF file \(invalid file magic b'PK"):
        ollama.register("m", zipped, CHATML, host=nowhere)
    with pytest.raises(OllamaError, match="unknown Ollama parameter 'max_tokens'"):
        ollama.register("m", tiny, CHATML, host=nowhere, parameters={"max_tokens": 3})


def test_server_not_running_says_how_to_start_it(tiny):
    with pytest.raises(OllamaError) as info:
        ollama.register("m", tiny, CHATML, host=f"127.0.0.1:{free_port()}", verify=False)
    assert "No Ollama server answers" in str(info.value)
    assert "`ollama serve`" in str(info.value) and "start_server()" in str(info.value)


@pytest.mark.parametrize("version, ok", [("0.5.4", False), ("0.1.32", False), ("0.5.5", True),
                                         ("0.12.6-rc1", True), ("0.0.0", True)])
def test_server_version_is_checked(tiny, version, ok):
    with OllamaDouble(version=version) as old:
        if ok:
            ollama.register("m", tiny, CHATML, host=old.url, progress=lambda s: None,
                            verify=False)
        else:
            with pytest.raises(OllamaError, match=rf"version {version}; registering needs "
                                                  r"0\.5\.5 or newer"):
                ollama.register("m", tiny, CHATML, host=old.url, verify=False)
            assert old.creates == []


def test_template_error_names_the_format(double, tiny):
    with pytest.raises(OllamaError) as info:
        ollama.register("m", tiny, Fmt("{{ range .Messages }"), host=double.url,
                        progress=lambda s: None, verify=False)
    assert str(info.value).startswith("Ollama rejected the TEMPLATE of chat format 'broken': "
                                      "template error: template: :1: unexpected")


def test_a_file_that_changes_during_upload_is_a_digest_mismatch(double, tmp_path):
    big = tmp_path / "big.gguf"
    big.write_bytes(b"GGUF" + bytes(32 << 20))  # larger than any socket buffer

    def change_the_end():  # runs after the client hashed the file, before the server reads
        with open(big, "r+b") as f:
            f.seek(-8, os.SEEK_END)
            f.write(b"changed!")

    double.before_blob_body = change_the_end
    with pytest.raises(OllamaError, match="digest mismatch.*changed while it was being sent"):
        ollama.register("m", big, CHATML, host=double.url, progress=lambda s: None)


def test_a_file_that_changed_after_hashing_is_caught(double, tiny, monkeypatch):
    monkeypatch.setattr(ollama, "sha256_file", lambda path: "sha256:" + "0" * 64)
    with pytest.raises(OllamaError, match="changed during the upload"):
        ollama.register("m", tiny, CHATML, host=double.url, progress=lambda s: None)


def test_verify_catches_a_model_that_cannot_answer(double, tiny):
    with pytest.raises(OllamaError, match="registered m, but a test chat failed"):
        ollama.register("m", tiny, CHATML, host=double.url, progress=lambda s: None)


# ---------------------------------------------------------------- what the double rejects

def test_double_rejects_what_ollama_rejects(double):
    gguf = upload(double, b"GGUF" + bytes(8))  # rejected before its content matters
    text = upload(double, b"plain text")
    missing = "sha256:" + "1" * 64

    def create(**body):
        return http(f"{double.url}/api/create", "POST", {"model": "m", **body})

    def error(**body):
        status, _, text = create(**body)
        return status, json.loads(text)

    status, kind, _ = create(files={"/abs/m.gguf": gguf})
    assert (status, kind) == (400, "application/json")
    assert error(files={"/abs/m.gguf": gguf}) == (400, {"error": "file path must be relative"})
    assert error(files={"../m.gguf": gguf}) == (400, {"error": "file path must be relative"})
    assert error(files={"m.gguf": ""}) == (400, {"error": "invalid digest format"})
    assert create(model="bad name", files={"m.gguf": gguf})[:1] == (400,)
    assert error(model="bad name") == (400, {"error": "invalid model name"})
    assert error() == (400, {"error": "neither 'from' or 'files' was specified"})
    assert error(files={"m.bin": text}) == (400, {"error": "unknown type"})
    # errors found after progress started: a final error line in the NDJSON stream
    status, kind, body = create(files={"m.gguf": text})
    assert (status, kind) == (200, "application/x-ndjson")
    assert [json.loads(line) for line in body.splitlines()] == [
        {"status": "parsing GGUF"}, {"error": "supplied file was not in GGUF format"}]
    assert error(files={"m.gguf": text}, stream=False) == (
        400, {"error": "supplied file was not in GGUF format"})
    last = json.loads(create(files={"m.gguf": missing})[2].splitlines()[-1])
    assert last["error"].endswith("no such file or directory")
    assert json.loads(create(**{"from": "nope"})[2].splitlines()[-1]) == {
        "error": "pull model manifest: file does not exist"}


def test_double_blob_and_template_checks(double, tiny):
    digest = ollama.sha256_file(tiny)
    url = f"{double.url}/api/blobs/"
    assert http(url + "sha256:abc", "HEAD")[0] == 400
    assert http(url + digest, "HEAD")[0] == 404
    assert answer(url + "sha256:xyz", "POST", data=b"x") == (
        400, {"error": "invalid digest format"})
    status, body = answer(url + digest, "POST", data=b"other bytes")
    assert status == 400 and body["error"].startswith('digest mismatch, expected "sha256:')
    assert http(url + digest, "POST", data=tiny.read_bytes())[0] == 201
    assert http(url + digest, "POST", data=tiny.read_bytes())[0] == 200
    assert http(url + digest, "HEAD")[0] == 200
    base = {"model": "t", "files": {"tiny.gguf": digest}}
    status, _, body = http(f"{double.url}/api/create", "POST",
                           {**base, "template": "{{ if }}", "stream": False})
    assert status == 400 and json.loads(body)["error"].startswith("template error: template:")
    assert answer(f"{double.url}/api/create", "POST", {**base, "stream": False}) == (
        200, {"status": "success"})


def test_each_release_renders_with_its_own_functions_and_message_fields(double, tiny):
    msgs = [{"role": "user", "content": "hi"}]
    # Messages mode has no .Prompt: Go prints <no value> (template/template.go Execute)
    assert double.render("{{ .Prompt }}|{{ range .Messages }}{{ .Content }}{{ end }}",
                         msgs) == "<no value>|hi"
    assert double.render("{{ .Tools }}{{ if .Tools }}x{{ end }}{{ range .Messages }}"
                         "{{ .ToolName }}{{ .Thinking }}{{ .ToolCalls }}{{ end }}", msgs) \
        == "null[]"
    ids = "{{ range .Messages }}[{{ .ToolCallID }}]{{ end }}"
    if double.release.tool_call_ids:  # api.Message.ToolCallID since 0.12.10
        assert double.render(ids, msgs) == "[]"
    else:
        with pytest.raises(GoTemplateError, match="can't evaluate field ToolCallID"):
            double.render(ids, msgs)
    digest = upload(double, tiny.read_bytes())
    for func in ("yesterdayDate", "toTypeScriptType", "currentDate", "json"):
        template = f"{{{{ {func} \"x\" }}}}{{{{ range .Messages }}}}{{{{ .Content }}}}{{{{ end }}}}"
        status, body = answer(f"{double.url}/api/create", "POST", {
            "model": "t", "files": {"tiny.gguf": digest}, "template": template,
            "stream": False})
        if func in double.release.funcs:
            assert (status, body) == (200, {"status": "success"}), func
        else:  # yesterdayDate arrived in 0.13.3
            assert (func, status, body["error"]) == (
                "yesterdayDate", 400, 'template error: template: :1: function "yesterdayDate" '
                                      "not defined")


@pytest.mark.parametrize("version", VERSIONS)
def test_history_is_cut_as_each_releases_chat_prompt_cuts_it(version):
    double = OllamaDouble(version)
    try:
        model = {"messages": [], "system": "",
                 "template": "{{ range .Messages }}{{ .Role }}:{{ .Content }} {{ end }}"}
        msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "a a a"},
                {"role": "assistant", "content": "b b b"}, {"role": "system", "content": "T"},
                {"role": "user", "content": "c c c"}, {"role": "assistant", "content": "d d"},
                {"role": "user", "content": "e"}]

        def prompt(messages, num_ctx):  # one token per word
            return double.prompt_for(model, messages, num_ctx, str.split)

        assert prompt(msgs, 100) == prompt(msgs, None)  # all fits: nothing cut
        # the longest tail that fits, with every system message before it
        assert prompt(msgs, 9) == "system:S\n\nT user:c c c assistant:d d user:e "
        assert prompt(msgs, 5) == "system:S\n\nT assistant:d d user:e "
        # nothing but the latest message fits: 0.15.5 and later keep every system message;
        # before, a system message right before the latest one is dropped with the history
        latest = msgs[:3] + [msgs[3], {"role": "user", "content": "e e e e"}]
        kept = "system:S\n\nT" if double.release.truncates_from_the_front else "system:S"
        assert prompt(latest, 2) == f"{kept} user:e e e e "
    finally:
        double._release()


def test_double_missing_models_and_the_official_client(double, tiny):
    # ShowHandler names the model DisplayShortest from 0.30.0, as requested before
    shown = "nope:latest" if double.release.show_names_shortest else "nope"
    assert answer(f"{double.url}/api/show", "POST", {"model": "nope"}) == (
        404, {"error": f"model '{shown}' not found"})
    assert answer(f"{double.url}/api/chat", "POST", {"model": "nope", "messages": []}) == (
        404, {"error": "model 'nope' not found"})
    assert answer(f"{double.url}/api/delete", "DELETE", {"model": "nope"}) == (
        404, {"error": "model 'nope' not found"})
    assert http(double.url + "/") == (200, "text/plain; charset=utf-8", "Ollama is running")
    client = ollama_client.Client(host=double.url)
    with pytest.raises(ollama_client.ResponseError) as info:
        client.show("nope")
    assert info.value.status_code == 404 and info.value.error == f"model '{shown}' not found"
    ollama.register("Tiny", tiny, CHATML, host=double.url, progress=lambda s: None,
                    verify=False)
    assert client.show("tiny").template == CHATML.go_template  # names match case-blind
    assert client.list().models[0].model == "Tiny:latest"
    client.delete("tiny:latest")
    assert client.list().models == []


# ---------------------------------------------------------------- chat on a real model

@pytest.fixture(scope="module")
def smol_double():
    """The double with the embedded SmolLM2 GGUF registered as "smol" (ChatML)."""
    from lorahelpers.models import embedded_gguf

    with OllamaDouble() as d:
        ollama.register("smol", embedded_gguf(), CHATML, host=d.url,
                        system="You are a helpful assistant", progress=lambda s: None)
        yield d


def test_chat_streams_and_uses_the_registered_template(smol_double, capsys):
    reply = ollama.chat("smol", QUESTION, host=smol_double.url, options=GREEDY_OPTIONS)
    assert capsys.readouterr().out == reply + "\n"
    assert reply.strip() and reply == smol_double.last_reply
    assert smol_double.last_prompt == CHATML.render(
        [{"role": "system", "content": "You are a helpful assistant"},
         {"role": "user", "content": QUESTION}], add_generation_prompt=True)
    assert ollama.chat("smol", QUESTION, host=smol_double.url, stream=False,
                       options=GREEDY_OPTIONS) == reply


def test_chat_request_system_replaces_the_modelfile_one_and_turns_merge(smol_double):
    ollama.chat("smol", [{"role": "system", "content": "Be terse."},
                         {"role": "user", "content": "Hi"}, {"role": "user", "content": "Yo"}],
                host=smol_double.url, stream=False, options={"num_predict": 2})
    assert smol_double.last_prompt == ("<|im_start|>system\nBe terse.<|im_end|>\n"
                                       "<|im_start|>user\nHi\n\nYo<|im_end|>\n"
                                       "<|im_start|>assistant\n")


def test_a_long_chat_keeps_the_system_prompt_and_the_latest_turn(smol_double,
                                                                 embedded_tokenizer):
    system = {"role": "system", "content": "You are a helpful assistant"}
    history = []
    for i in range(8):
        history += [{"role": "user", "content": f"Question {i}: " + "tell me more. " * 8},
                    {"role": "assistant", "content": f"Answer {i}: " + "here is more. " * 8}]
    history.append({"role": "user", "content": QUESTION})

    def tokens(messages):
        text = CHATML.render([system] + messages, add_generation_prompt=True)
        return len(embedded_tokenizer(text)["input_ids"])

    num_ctx = 300
    kept = next(k for k in range(len(history)) if tokens(history[k:]) <= num_ctx)
    assert 0 < kept < len(history) - 1  # some history cut, some kept
    assert tokens(history[kept - 1:]) > num_ctx + 2 and tokens(history[kept:]) < num_ctx - 2
    ollama.chat("smol", history, host=smol_double.url, stream=False,
                options={"num_ctx": num_ctx, "num_predict": 1})
    assert smol_double.last_prompt == CHATML.render([system] + history[kept:],
                                                    add_generation_prompt=True)


def test_chat_honours_the_stop_list(smol_double):
    full = ollama.chat("smol", QUESTION, host=smol_double.url, stream=False,
                       options=GREEDY_OPTIONS)
    stop = full.split()[2]  # a word from the middle of the answer
    cut = ollama.chat("smol", QUESTION, host=smol_double.url, stream=False,
                      options=GREEDY_OPTIONS | {"stop": [stop]})
    assert cut == full[:full.index(stop)] and cut


def test_chat_samples_with_the_release_defaults_and_the_seed(smol_double):
    """Without options the double samples as `ollama run` does (temperature 0.8, top_k 40,
    top_p 0.9): a seed repeats its answer, other seeds draw others; top_k 1 is greedy."""
    def ask(**options):
        return ollama.chat("smol", QUESTION, host=smol_double.url, stream=False,
                           options={"num_predict": 24, **options})

    greedy = ask(**GREEDY_OPTIONS)
    assert ask(seed=1) == ask(seed=1)
    assert len({ask(seed=s) for s in range(1, 5)} | {greedy}) > 2
    assert ask(seed=1, top_k=1) == greedy
    assert smol_double.last_options["temperature"] == 0.8


def test_a_release_with_repeat_penalty_1_1_penalizes_even_at_temperature_0():
    """Ollama before 0.32.10 defaults to repeat_penalty 1.1, which llama.cpp applies before the
    temperature and to the prompt's tokens: there temperature 0 alone is not greedy, unless
    the model sets repeat_penalty 1 as lorahelpers' registration does."""
    from lorahelpers.models import embedded_gguf

    question = "Count from 1 to 10."
    replies = {}
    for version in ("0.12.6", "0.34.2"):
        with OllamaDouble(version) as d:
            ollama.register("ours", embedded_gguf(), CHATML, host=d.url, progress=lambda s: None)
            client = ollama_client.Client(host=d.url)  # as a hand-written Modelfile would
            files = {"m.gguf": client.create_blob(embedded_gguf())}
            list(client.create(model="bare", files=files, template=CHATML.go_template,
                               parameters={"stop": list(CHATML.stop)}, stream=True))
            replies[version] = [ollama.chat(name, question, host=d.url, stream=False,
                                            options=options | {"num_predict": 24})
                                for name, options in (("bare", {"temperature": 0}),
                                                      ("ours", {"temperature": 0}),
                                                      ("bare", GREEDY_OPTIONS))]
    greedy = replies["0.34.2"][2]
    assert replies["0.12.6"][0] != greedy  # the release's repeat_penalty 1.1
    assert replies["0.12.6"][1:] == replies["0.34.2"][:2] == [greedy, greedy]


def test_chat_errors(smol_double):
    with pytest.raises(OllamaError, match="model 'nope' is not registered"):
        ollama.chat("nope", "Hi", host=smol_double.url)
    with pytest.raises(OllamaError, match="No Ollama server answers"):
        ollama.chat("smol", "Hi", host=f"127.0.0.1:{free_port()}")


# ---------------------------------------------------------------- the CLI fallback

def test_register_through_the_cli(double, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_ollama(tmp_path / 'bin').parent}:{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "ollama", None)  # the Python client is not installed
    said = []
    info = ollama.register("cli-model", tiny, CHATML, host=double.url, system='Say "hi"',
                           progress=said.append, verify=False)
    modelfile = tiny.parent / "Modelfile"
    assert said[2] == f"ollama create cli-model -f {modelfile}"
    written = check(modelfile.read_text(), double.version)
    assert written.one("template") == CHATML.go_template
    assert written.parameters["num_ctx"] == 4096
    assert double.creates[-1]["files"] == {"tiny.gguf": ollama.sha256_file(tiny)}
    assert info["system"] == 'Say "hi"' and info["template"] == CHATML.go_template
    with pytest.raises(OllamaError, match="Ollama rejected the TEMPLATE.*template error"):
        ollama.register("cli-model", tiny, Fmt("{{ end }}"), host=double.url, via="cli",
                        progress=lambda s: None, verify=False)


# ---------------------------------------------------------------- start_server

@pytest.fixture
def started(monkeypatch):
    """Records the processes start_server launches, and stops any left running."""
    procs = []
    real = subprocess.Popen

    def popen(*args, **kwargs):
        procs.append(real(*args, **kwargs))
        return procs[-1]

    monkeypatch.setattr(ollama.subprocess, "Popen", popen)
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_start_server_starts_polls_and_stops(tmp_path, monkeypatch, started):
    monkeypatch.setenv("PATH", f"{fake_ollama(tmp_path / 'bin').parent}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_OLLAMA_DELAY", "1")  # answers only after a while: polling
    host, log = f"127.0.0.1:{free_port()}", tmp_path / "serve.log"
    with ollama.start_server(host=host, log_path=log, timeout=30) as server:
        assert server.version == NEWEST and server.url == f"http://{host}"
        assert ollama.server_available(host) == NEWEST
        again = ollama.start_server(host=host)  # already running: reused, not restarted
        assert again.process is None and len(started) == 1
        again.stop()
        assert ollama.server_available(host) == NEWEST
    assert started[0].poll() is not None and ollama.server_available(host) is None
    assert f"Listening on {host}" in log.read_text()


def test_start_server_timeout_names_the_log_and_stops_the_process(tmp_path, monkeypatch,
                                                                   started):
    monkeypatch.setenv("PATH", f"{fake_ollama(tmp_path / 'bin').parent}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_OLLAMA_DELAY", "60")
    log = tmp_path / "serve.log"
    with pytest.raises(OllamaError, match=rf"did not answer .* within 1 s and was stopped\. "
                                          rf"Its log {log} ends with"):
        ollama.start_server(host=f"127.0.0.1:{free_port()}", log_path=log, timeout=1)
    assert started[0].poll() is not None


def test_start_server_reports_a_server_that_exits(tmp_path, monkeypatch, started):
    monkeypatch.setenv("PATH", f"{fake_ollama(tmp_path / 'bin').parent}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_OLLAMA_FAIL", "Error: listen tcp: bind: address already in use")
    with pytest.raises(OllamaError, match="exited with code 1 before answering(.|\n)*"
                                          "address already in use"):
        ollama.start_server(host=f"127.0.0.1:{free_port()}", log_path=tmp_path / "l.log")


def test_start_server_without_ollama_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(OllamaError, match=r"not on PATH.*start_server\(install=True\)"):
        ollama.start_server(host=f"127.0.0.1:{free_port()}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the installer is Linux-only")
def test_start_server_install_gets_zstd_then_runs_the_official_script(tmp_path, monkeypatch,
                                                                       started):
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    for tool in ("sh", "cat", "cp", "chmod"):  # all the fake commands below need
        (bin_dir / tool).symlink_to(shutil.which(tool))
    installer = f'cp "{fake_ollama(tmp_path / "later")}" "{bin_dir}/ollama"\n'
    for name, body in {
        "apt-get": f'echo "apt-get $*" >> "{calls}"\nprintf "#!/bin/sh\\n" > "{bin_dir}/zstd"\n'
                   f'chmod +x "{bin_dir}/zstd"\n',
        "curl": f'echo "curl $*" >> "{calls}"\ncat > "$3" <<"EOF"\n{installer}EOF\n',
    }.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    server = ollama.start_server(install=True, host=f"127.0.0.1:{free_port()}",
                                 log_path=tmp_path / "serve.log", timeout=30)
    server.stop()
    lines = calls.read_text().splitlines()
    assert lines[0] == "apt-get install -y zstd"
    assert lines[1].startswith("curl -fsSL -o ") and lines[1].endswith(" " + ollama.INSTALL_SCRIPT)


# ---------------------------------------------------------------- scripts/ollama_check.sh

def ollama_check(double, gguf, **env):
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "ollama_check.sh"), str(gguf), "check-model"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PY": sys.executable, "PYTHONPATH": str(REPO),
             "OLLAMA_HOST": double.url, **env})


def test_ollama_check_names_the_version_and_why_an_adapter_cannot_be_registered(tiny,
                                                                                tmp_path):
    lora = write_tiny_gguf(tmp_path / "lora.gguf", general_type="adapter")
    with OllamaDouble("0.34.2") as d:
        done = ollama_check(d, tiny, ADAPTER=str(lora))
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == f"Ollama server version: 0.34.2 at {d.url}"
    assert f"error: Ollama 0.34.2 at {d.url} refuses LoRA adapters" in done.stderr


@pytest.mark.slow
def test_ollama_check_prints_the_registration_mode(monkeypatch):
    from lorahelpers.models import embedded_gguf
    from tests import ollama_double

    monkeypatch.setattr(ollama_double, "DEFAULT_NUM_PREDICT", 16)  # short answers suffice
    with OllamaDouble(VERSIONS[0]) as d:
        done = ollama_check(d, embedded_gguf(), MAX_SEQ_LENGTH="512", ROWS="3")
        assert d.creates[-1]["parameters"]["num_ctx"] == 2048
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"Ollama server version: {VERSIONS[0]} at {d.url}"
    assert f"registration mode: model on Ollama {VERSIONS[0]}" in lines
    assert lines[-1] == f"Ollama server version: {VERSIONS[0]}; registration mode: model"
    assert sum(line.startswith("(expected: ") for line in lines) == 3
    # the held-out table: the GGUF by llama.cpp, Ollama greedy and with `ollama run` options
    gguf = f"{embedded_gguf().stem} GGUF (llama.cpp)"
    assert "held-out rows: 3" in lines
    assert any(line.startswith(gguf) for line in lines)
    assert any(line.startswith("Ollama, `ollama run` options") and "temperature 0.8" in line
               and "repeat_penalty 1," in line for line in lines)  # the Modelfile's 1, not 1.1
    assert any(line.startswith(f"Ollama greedy against the {gguf}: ") and
               line.endswith(": passed.") for line in lines)
