"""push_to_hub: the repository folder Ollama pulls from hf.co (GGUFs, template, params, system,
model card), read back the way Ollama reads it, and the upload through an injected api object
(never the network)."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lorahelpers.chat import get_chat_format
from lorahelpers.hub import (
    HubError,
    gguf_name,
    hub_files,
    hub_token,
    push_to_hub,
    trim_proof,
)
from lorahelpers.modelfile import render_modelfile
from tests.gorender import render_go
from tests.modelfile_check import PARAMETER_KINDS, check

FORMATS = [get_chat_format("chatml"), get_chat_format("llama3"),
           get_chat_format("alpaca", eos="</s>")]
SYSTEM = 'You answer in one line.\nQuote: """x"""'
CONVERSATION = [{"role": "user", "content": "Ship 2 kg to zone B?"},
                {"role": "assistant", "content": "12.40"},
                {"role": "user", "content": "And 3 kg?"}]


def float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


@dataclass
class Report:
    """The parts of a VerifyReport the model card reads."""

    artifact: str
    passed: bool = True

    def status(self) -> str:
        return "verified" if self.passed else "UNVERIFIED: mean KL 0.4 > 0.05"

    def rows(self):
        return [("top-1 agreement", "97.5%", ">= 90%"), ("mean KL (nats)", "8.00e-03", "<= 0.05"),
                ("a | pipe", "x", "")]


@dataclass
class Export:
    ggufs: dict
    reports: dict = field(default_factory=dict)


class FakeApi:
    """Records what huggingface_hub's HfApi would be asked, and the folder as it was then."""

    def __init__(self):
        self.calls, self.uploaded = [], {}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        self.calls.append(("upload_folder", repo_id, kwargs))
        root = Path(folder_path)
        self.uploaded = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
                         if p.is_file()}


def _ggufs(tmp_path, quants=("q4_k_m", "q8_0")) -> dict:
    (tmp_path / "gguf").mkdir(exist_ok=True)
    out = {}
    for q in quants:
        out[q] = tmp_path / "gguf" / f"run-{q}.gguf"
        out[q].write_bytes(b"GGUF" + q.encode())
    return out


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_template_renders_the_training_prompt_in_ollama(tmp_path, fmt):
    files = hub_files("me/shop-bot", _ggufs(tmp_path), fmt, system=SYSTEM)
    template = files["template"]
    # Ollama puts the `system` file first when a request brings no system message.
    messages = [{"role": "system", "content": files["system"]}] + CONVERSATION
    modelfile = check(render_modelfile(tmp_path / "m.gguf", fmt, system=SYSTEM))
    for conversation in (messages, CONVERSATION):
        expected = fmt.generation_prefix(conversation)
        assert render_go(template, conversation) == expected
        # the same as our Modelfile's TEMPLATE, read by Ollama's parser
        assert render_go(modelfile.one("template"), conversation) == expected
        # and the same if the file is trimmed on its way: nothing to trim at either end
        assert render_go(template.strip(), conversation) == expected
    assert template == template.strip()
    assert files["system"] == SYSTEM


@pytest.mark.parametrize("template", [
    "{{ .Prompt }}\n", "\n\t{{ .Prompt }}  \n", "{{ .Prompt -}}\n\n", "\n{{- .Prompt }}",
    'A "quoted" \u00e9 {{ .Prompt }}\r\n', "   ", "{{ .Prompt }}"])
def test_trim_proof_templates_render_the_same(template):
    proof = trim_proof(template)
    assert render_go(proof, CONVERSATION) == render_go(template, CONVERSATION)
    if template.strip():
        assert proof == proof.strip()


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_params_are_the_modelfile_parameters_as_ollama_decodes_them(tmp_path, fmt):
    files = hub_files("me/shop-bot", _ggufs(tmp_path), fmt, max_seq_length=3000,
                      parameters={"temperature": 0.2, "stop": "\n\nUser"})
    params = json.loads(files["params"])  # Ollama: json.Decode into a map, then its Options
    modelfile = check(render_modelfile(tmp_path / "m.gguf", fmt, max_seq_length=3000,
                                       parameters={"temperature": 0.2, "stop": "\n\nUser"}))
    as_go = {k: float32(v) if isinstance(v, float) else v for k, v in params.items()}
    assert as_go == modelfile.parameters  # Ollama's Options hold floats as float32
    assert params["stop"] == [*fmt.stop, "\n\nUser"] and params["num_ctx"] == 4096
    kinds = {"int": int, "float": float, "list": list}
    assert all(isinstance(v, kinds[PARAMETER_KINDS[k]]) for k, v in params.items())


def test_the_folder_holds_the_ggufs_by_quant_tag_and_no_empty_system(tmp_path):
    ggufs = _ggufs(tmp_path)
    files = hub_files("me/shop-bot", ggufs, FORMATS[0], base_model="/local/checkpoint")
    assert sorted(files) == ["README.md", "params", "shop-bot-Q4_K_M.gguf",
                             "shop-bot-Q8_0.gguf", "template"]
    assert files["shop-bot-Q8_0.gguf"] == ggufs["q8_0"]
    # the Modelfile's rule: 4096 when the training length is unknown, else from it
    assert json.loads(files["params"])["num_ctx"] == 4096
    with_length = hub_files("me/shop-bot", ggufs, FORMATS[0], max_seq_length=256)
    assert json.loads(with_length["params"])["num_ctx"] == 2048
    assert "base_model" not in files["README.md"]  # a local path is no Hub id
    assert gguf_name("jane/x", "f16") == "x-F16.gguf"


def test_model_card_says_how_to_run_it_and_shows_the_verification(tmp_path):
    ggufs = _ggufs(tmp_path)
    reports = {q: Report(str(p)) for q, p in ggufs.items()}
    card = hub_files("me/shop-bot", ggufs, FORMATS[1], system="Be brief.", reports=reports,
                     base_model="unsloth/Llama-3.2-3B-Instruct-bnb-4bit")["README.md"]
    head = card.split("---")[1]
    assert "base_model: unsloth/Llama-3.2-3B-Instruct-bnb-4bit" in head and "- ollama" in head
    assert "ollama run hf.co/me/shop-bot:Q4_K_M" in card
    assert "ollama run hf.co/me/shop-bot:Q8_0" in card
    assert "**run-q8_0.gguf**: verified" in card
    assert "| top-1 agreement | 97.5% | >= 90% |" in card
    assert "| a \\| pipe | x |  |" in card  # a pipe inside a cell does not split it
    assert "`<|eot_id|>`" in card and "`system` file" in card


@pytest.mark.parametrize("repo_id", ["shop-bot", "me/", "me/shop bot", "me/../x", "a/b/c", "",
                                     "me/x.git"])
def test_bad_repo_ids_say_how_to_write_one(tmp_path, repo_id):
    with pytest.raises(HubError, match="Fix: write it as '<your user name>/<model name>'"):
        hub_files(repo_id, _ggufs(tmp_path), FORMATS[0])


def test_push_uploads_exactly_the_folder_through_the_api(tmp_path):
    ggufs = _ggufs(tmp_path)
    export = Export(ggufs, {q: Report(str(p)) for q, p in ggufs.items()})
    api, messages = FakeApi(), []
    url = push_to_hub("me/shop-bot", export, FORMATS[0], system="Be brief.", api=api,
                      private=True, progress=messages.append)
    assert url == "https://huggingface.co/me/shop-bot"
    (create, repo, kwargs), (upload, repo2, kwargs2) = api.calls
    assert (create, repo, kwargs) == ("create_repo", "me/shop-bot",
                                      {"repo_type": "model", "private": True, "exist_ok": True})
    assert upload == "upload_folder" and repo2 == "me/shop-bot"
    assert kwargs2["repo_type"] == "model" and kwargs2["delete_patterns"] == ["*.gguf"]
    expected = hub_files("me/shop-bot", ggufs, FORMATS[0], system="Be brief.",
                         reports=export.reports)
    assert api.uploaded == {name: c.read_bytes() if isinstance(c, Path) else c.encode()
                            for name, c in expected.items()}
    assert api.uploaded["system"] == b"Be brief."
    # the GGUFs are linked into the folder, not copied
    staged = tmp_path / "hub" / "shop-bot-Q8_0.gguf"
    assert os.path.samefile(staged, ggufs["q8_0"])
    assert "ollama run hf.co/me/shop-bot" in messages[-1]


def test_push_refuses_an_unverified_gguf_unless_asked(tmp_path):
    ggufs = _ggufs(tmp_path)
    export = Export(ggufs, {"q4_k_m": Report("a"), "q8_0": Report("b", passed=False)})
    api = FakeApi()
    with pytest.raises(HubError, match="q8_0 GGUF did not pass verification.*Fix:"):
        push_to_hub("me/shop-bot", export, FORMATS[0], api=api, progress=lambda m: None)
    assert api.calls == []
    push_to_hub("me/shop-bot", export, FORMATS[0], api=api, allow_unverified=True,
                progress=lambda m: None)
    assert "UNVERIFIED" in api.uploaded["README.md"].decode()


def test_without_a_token_the_error_says_where_to_put_one(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))  # no saved login
    assert hub_token() is None
    with pytest.raises(HubError, match="no Hugging Face token.*secret named HF_TOKEN"):
        push_to_hub("me/shop-bot", _ggufs(tmp_path), FORMATS[0], progress=lambda m: None)
    monkeypatch.setenv("HF_TOKEN", "hf_abc")
    assert hub_token() == "hf_abc"
