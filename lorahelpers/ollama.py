"""Ollama: the Modelfile for a fine-tuned GGUF, registration over the REST API, a managed
`ollama serve` for Colab, and a chat call for the notebook's last cell.

The TEMPLATE and stop strings always come from the training ChatFormat, so Ollama builds the
same prompt the model was trained on and stops where training taught it to.

    >>> server = start_server()                                   # doctest: +SKIP
    >>> register("my-model", "out/model-q8_0.gguf", get_chat_format("chatml"))  # doctest: +SKIP
    >>> chat("my-model", "What is LoRA?")                         # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import ExportError, OllamaError, SettingsError
from .llamacpp import check_gguf, gguf_metadata
from .modelfile import (
    model_parameters,
    ollama_rules,
    version_tuple,
    write_modelfile,
)

MIN_VERSION = (0, 5, 5)  # first server with the structured /api/create (files, template, ...)
# Chat options under which Ollama answers as llama.cpp's greedy decoding of the GGUF: Ollama's
# llama.cpp sampler applies the repetition penalties before the temperature, so temperature 0
# alone still penalizes where the release's default repeat_penalty is 1.1 (before 0.32.10).
# top_k, top_p and min_p keep the most likely token; typical_p is not sent (0.34.1 refuses it).
GREEDY_OPTIONS = {"temperature": 0.0, "repeat_penalty": 1.0, "presence_penalty": 0.0,
                  "frequency_penalty": 0.0}
INSTALL_SCRIPT = "https://ollama.com/install.sh"
_HOST, _NS = r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}", r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"
_NAME = re.compile(rf"(?:(?:(?:(?!://).)*://)?{_HOST}/{_NS}/|{_NS}/)?{_PART}(?::{_PART})?",
                   re.DOTALL)


# ---------------------------------------------------------------- server access

def validate_model_name(name: str) -> str:
    """name, if Ollama accepts it as a model name ([namespace/]model[:tag]); else OllamaError.

    >>> validate_model_name("smollm2-tuned:v1")
    'smollm2-tuned:v1'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise OllamaError(
            f"invalid model name {name!r}. Fix: use [namespace/]model[:tag], each part 1-80 of the "
            "characters A-Z a-z 0-9 _ - . starting with a letter, digit or _ (no '.' in the "
            "namespace), e.g. 'my-model' or 'my-model:v1'")
    return name


def base_url(host: str | None = None) -> str:
    """The server URL for host (else $OLLAMA_HOST, else 127.0.0.1:11434), as the client reads it.

    >>> base_url("localhost:8080")
    'http://localhost:8080'
    """
    host = host or os.environ.get("OLLAMA_HOST") or ""
    scheme, sep, rest = host.partition("://")
    default_port = {"http": 80, "https": 443}.get(scheme, 11434) if sep else 11434
    if not sep:
        scheme, rest = "http", host
    split = urllib.parse.urlsplit(f"{scheme}://{rest}")
    hostname = split.hostname or "127.0.0.1"
    hostname = f"[{hostname}]" if ":" in hostname else hostname
    port = split.port or default_port
    path = split.path.strip("/")
    return f"{scheme}://{hostname}:{port}" + (f"/{path}" if path else "")


def _request(url: str, method: str = "GET", body=None, timeout: float = 30):
    """(status, parsed JSON or None) of one plain HTTP request; raises URLError when down."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"error": raw.decode(errors="replace")}


def server_available(host: str | None = None) -> str | None:
    """The version of the Ollama server at host, or None when none answers.

    >>> server_available() or "no server"                        # doctest: +SKIP
    '0.12.3'
    """
    try:
        status, body = _request(base_url(host) + "/api/version", timeout=3)
        return str(body["version"]) if status == 200 else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _require_server(url: str) -> str:
    version = server_available(url)
    if version is None:
        raise OllamaError(
            f"No Ollama server answers at {url}. Fix: run `ollama serve` in a terminal "
            "(install: https://ollama.com/download), or in Python `from lorahelpers.ollama "
            "import start_server; server = start_server()` (on Colab: start_server(install="
            "True)). If it runs elsewhere, pass host= or set OLLAMA_HOST.")
    if (0, 0, 0) < version_tuple(version) < MIN_VERSION:
        need = ".".join(map(str, MIN_VERSION))
        raise OllamaError(
            f"The Ollama server at {url} is version {version}; registering needs {need} or "
            f"newer (the structured /api/create). Fix: upgrade it with curl -fsSL "
            f"{INSTALL_SCRIPT} | sh")
    return version


# ---------------------------------------------------------------- registration

def sha256_file(path: Path) -> str:
    """'sha256:<hex>' of a file, read in 1 MiB chunks (GGUFs can be many GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _gguf_metadata(path: Path) -> dict:
    """llamacpp.gguf_metadata with general.type as Ollama reads it ("model" when absent), or
    {} when the header cannot be read (the checks that use it are advisory)."""
    try:
        return {"general.type": "model", **gguf_metadata(path)}
    except ExportError:
        return {}


def _upload(client, url: str, path: Path, progress) -> str:
    digest = sha256_file(path)
    status, _ = _request(f"{url}/api/blobs/{digest}", "HEAD")
    if status == 200:
        progress(f"{path.name}: already on the server ({digest[:19]}...)")
        return digest
    progress(f"uploading {path.name} ({path.stat().st_size / 2**20:.1f} MiB)")
    import ollama

    try:
        sent = client.create_blob(path)
    except ollama.ResponseError as e:
        fix = ("the file changed while it was being sent: wait until nothing writes to it "
               "(an export still running?) and register again.") \
            if "digest mismatch" in e.error else "check the server's log and register again."
        raise OllamaError(f"uploading {path} to {url} failed: {e.error}.", fix=fix) from None
    if sent != digest:
        raise OllamaError(f"{path} changed during the upload ({digest} before, {sent} after). "
                          "Fix: wait until nothing writes to it and register again")
    return digest


def _create_error(name: str, error: str, chat_format) -> OllamaError:
    if "no longer supported" in error:
        return OllamaError(f"ollama create {name} failed: {error}: this Ollama refuses what "
                           "0.34.1 and later refuse (LoRA adapters, typical_p). Fix: register "
                           "the merged GGUF (register(..., merged=...)) without typical_p.")
    if "template" in error:
        return OllamaError(f"Ollama rejected the TEMPLATE of chat format "
                           f"{getattr(chat_format, 'name', '?')!r}: {error}. Fix: upgrade "
                           "Ollama, or use a built-in chat format")
    if "GGUF format" in error or "file magic" in error or error == "unknown type":
        return OllamaError(f"Ollama could not read the model file as GGUF: {error}. Fix: export "
                           "it again with lorahelpers.export.")
    return OllamaError(f"ollama create {name} failed: {error}. Fix: check the server's log")


def _create_api(url, name, gguf, adapter, chat_format, system, params, progress):
    import httpx
    import ollama

    client = ollama.Client(host=url)
    try:
        files = {gguf.name: _upload(client, url, gguf, progress)}
        adapters = {adapter.name: _upload(client, url, adapter, progress)} if adapter else None
        last = None
        for update in client.create(model=name, files=files, adapters=adapters,
                                    template=chat_format.go_template, system=system or None,
                                    parameters=params, stream=True):
            if update.status != last:
                progress(update.status)
                last = update.status
    except ollama.ResponseError as e:
        raise _create_error(name, e.error, chat_format) from None
    except (ConnectionError, httpx.TransportError) as e:
        raise OllamaError(f"lost the Ollama server at {url} while registering {name}: {e}. "
                          "Fix: check that it still runs, and register again.") from None


def _create_cli(url, name, gguf, adapter, chat_format, system, params, progress):
    binary = shutil.which("ollama")
    if binary is None:
        raise OllamaError("neither the ollama Python client nor the ollama command is "
                          "available. Fix: pip install ollama")
    try:  # params carry num_ctx and were checked against the server's version already
        modelfile = write_modelfile(gguf, chat_format, system=system, parameters=params,
                                    adapter=adapter)
    except ValueError as e:
        raise OllamaError(f"{e}. Fix: install the Python client (pip install ollama) to register "
                          "through the API instead.") from None
    progress(f"ollama create {name} -f {modelfile}")
    proc = subprocess.Popen([binary, "create", name, "-f", str(modelfile)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OLLAMA_HOST": url}, errors="replace")
    lines = []
    for raw in proc.stdout:
        line = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw).strip()
        if line:
            lines.append(line)
            progress(line)
    if proc.wait() != 0:
        errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
        raise _create_error(name, "\n".join(errors or lines[-5:])
                            or f"exit code {proc.returncode}", chat_format)


def _merged_instead(merged, adapter: Path, version: str, url: str, progress) -> Path:
    """The merged GGUF to register where the server refuses adapters: `merged` itself (a
    path), or what it returns (a function that makes it)."""
    refused = (f"Ollama {version} at {url} refuses LoRA adapters (0.34.1 and later answer "
               "'LoRA adapters are no longer supported')")
    if merged is None:
        raise OllamaError(f"{refused}, and no merged GGUF was given for adapter {adapter}. Fix: "
                          "pass merged= the merged model's GGUF (export_and_verify writes one) "
                          "or a function that makes it, or use an Ollama older than 0.34.1.")
    made = callable(merged)
    path = check_gguf(merged() if made else merged, "merged GGUF", OllamaError)
    if _gguf_metadata(path).get("general.type") == "adapter":
        raise OllamaError(f"merged GGUF {path} is a LoRA adapter, not a merged model. Fix: "
                          "pass the GGUF of the model with the adapter merged in")
    how = "made by the merged= function" if made else "given as merged="
    progress(f"{refused}: registering the merged GGUF {path} ({how}) instead of the adapter")
    return path


def register(name, gguf, chat_format, host=None, *, system=None, parameters=None, adapter=None,
             progress=print, via="auto", verify=True, max_seq_length=None, merged=None) -> dict:
    """Register a GGUF with Ollama under `name`, using chat_format's TEMPLATE and stops and
    PARAMETER num_ctx from the training max_seq_length (parameters={"num_ctx": n} overrides).

    Checks the name, the files and the parameters, then reads the server's version and what it
    accepts before sending anything. With `adapter` (a LoRA GGUF over the base `gguf`) on a
    server that accepts adapters, the adapter is sent as a layer over the base; a server that
    refuses them (0.34.1 and later) gets `merged` instead: a merged GGUF, or a function that
    makes one (called only then); without it, an OllamaError says what to do. Uploads what the
    server lacks, creates the model; with verify, runs a one-token chat. `via` is "api" (the
    ollama Python client), "cli" (`ollama create -f Modelfile`) or "auto" (the API when the
    client is installed, else the command). Returns what /api/show reports, plus
    "ollama_version" and "registration" ("model", "adapter layer" or "merged model").

    >>> info = register("my-model", "out/model-q8_0.gguf", get_chat_format("chatml"))  # doctest: +SKIP
    >>> info["details"]["quantization_level"], info["registration"]  # doctest: +SKIP
    ('Q8_0', 'model')
    """
    if via not in ("auto", "api", "cli"):
        raise SettingsError(f"via={via!r} is unknown. Fix: use 'auto', 'api' or 'cli'")
    name = validate_model_name(name)
    gguf = check_gguf(gguf, "GGUF", OllamaError)
    adapter = check_gguf(adapter, "adapter", OllamaError) if adapter is not None else None
    stop = tuple(chat_format.stop)
    try:
        model_parameters(parameters, stop, max_seq_length)
    except ValueError as e:
        raise OllamaError(str(e)) from None
    if _gguf_metadata(gguf).get("general.type") == "adapter":
        raise OllamaError(f"GGUF {gguf} is a LoRA adapter, not a model. Fix: pass the base "
                          "model's GGUF as gguf and this file as adapter=")
    if adapter is not None and _gguf_metadata(adapter).get("general.type") == "model":
        raise OllamaError(f"adapter {adapter} is not a LoRA GGUF (general.type is not "
                          "'adapter'). Fix: export the adapter with lorahelpers.export")
    url = base_url(host)
    version = _require_server(url)
    rules = ollama_rules(version)
    progress(f"Ollama {version} at {url}")
    mode = "adapter layer" if adapter is not None else "model"
    if adapter is not None and not rules.adapters:
        gguf, adapter, mode = _merged_instead(merged, adapter, version, url, progress), None, \
            "merged model"
    try:
        params = model_parameters(parameters, stop, max_seq_length, version)
    except ValueError as e:
        raise OllamaError(str(e)) from None
    jinja = getattr(chat_format, "jinja_template", None)
    meta = _gguf_metadata(gguf)
    if adapter is None and jinja and meta.get("tokenizer.chat_template", jinja) != jinja:
        progress(f"warning: the chat template inside {gguf.name} differs from chat format "
                 f"{chat_format.name!r}; Ollama 0.30+ may use the GGUF's own template")
    progress(f"registering {name}: {mode}, num_ctx {params['num_ctx']}")
    if via == "auto":
        try:
            import ollama  # noqa: F401
            via = "api"
        except ImportError:
            via = "cli"
    create = _create_api if via == "api" else _create_cli
    try:
        create(url, name, gguf, adapter, chat_format, system, params, progress)
        status, info = _request(f"{url}/api/show", "POST", {"model": name})
        if status != 200:
            raise OllamaError(f"created {name} but /api/show answered {status}: {info}. Fix: "
                              "check the server's log and register again")
        if verify:
            status, answer = _request(f"{url}/api/chat", "POST", timeout=600, body={
                "model": name, "stream": False, "options": {"num_predict": 1},
                "messages": [{"role": "user", "content": "Hello"}]})
            if status != 200:
                raise OllamaError(f"registered {name}, but a test chat failed: {answer}. Fix: "
                                  "check the server's log; the GGUF may not load there")
            progress(f"{name} answers: registration verified")
    except (urllib.error.URLError, ConnectionError) as e:
        raise OllamaError(f"lost the Ollama server at {url} while registering {name}: {e}. "
                          "Fix: check that it still runs, and register again.") from None
    return {**info, "ollama_version": version, "registration": mode}


def parse_show_parameters(text: str) -> dict:
    """The PARAMETERs of /api/show's "parameters" text (one `name value` line each, the value
    as Go's %#v prints it; repeated names such as stop become lists).

    >>> parse_show_parameters('stop    "<|im_end|>"\\nnum_ctx    2048')
    {'stop': ['<|im_end|>'], 'num_ctx': 2048}
    """
    out: dict = {}
    for line in (text or "").splitlines():
        name, _, raw = line.strip().partition(" ")
        if not name:
            continue
        try:
            value = json.loads(raw.strip())
        except ValueError:
            value = raw.strip()
        if name == "stop":
            out.setdefault("stop", []).append(value)
        else:
            out[name] = value
    return out


def show(name, host=None) -> dict:
    """What the server stores for model `name` (/api/show: template, system, details, ...),
    with its PARAMETERs parsed into "options" and the server's version as "ollama_version".

    >>> show("my-model")["options"]["num_ctx"]  # doctest: +SKIP
    2048
    """
    url = base_url(host)
    version = _require_server(url)
    status, info = _request(f"{url}/api/show", "POST", {"model": name})
    if status == 404:
        raise OllamaError(f"model {name!r} is not registered at {url}. Fix: register({name!r}, "
                          "gguf, chat_format) first")
    if status != 200:
        raise OllamaError(f"/api/show {name!r} answered {status}: {info}. Fix: check the "
                          "server's log")
    return {**info, "options": parse_show_parameters(info.get("parameters", "")),
            "ollama_version": version}


def chat(name, messages, host=None, stream=True, *, options=None) -> str:
    """Ask a registered model; messages is a list of {"role", "content"} or one user string.
    With stream, the reply is printed as it arrives. Returns the whole reply.

    >>> chat("my-model", "What is LoRA?")                         # doctest: +SKIP
    """
    import httpx
    import ollama

    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    url = base_url(host)
    client = ollama.Client(host=url)
    try:
        if not stream:
            return client.chat(model=name, messages=messages, options=options).message.content
        parts = []
        for chunk in client.chat(model=name, messages=messages, options=options, stream=True):
            piece = chunk.message.content or ""
            print(piece, end="", flush=True)
            parts.append(piece)
        print()
        return "".join(parts)
    except ollama.ResponseError as e:
        if e.status_code == 404:
            raise OllamaError(f"model {name!r} is not registered at {url} ({e.error}). Fix: "
                              f"register({name!r}, gguf, chat_format) first") from None
        raise OllamaError(f"chat with {name!r} failed: {e.error}. Fix: check the server's "
                          "log") from None
    except (ConnectionError, httpx.TransportError):
        _require_server(url)
        raise


# ---------------------------------------------------------------- managed server

@dataclass
class ServerHandle:
    """A running Ollama server; stop() ends it if start_server started it."""

    url: str
    version: str
    log_path: Path | None = None
    process: subprocess.Popen | None = None

    def stop(self, timeout: float = 10) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _install() -> str:
    if not sys.platform.startswith("linux"):
        raise OllamaError("install=True works on Linux (Colab) only. Fix: install Ollama from "
                          "https://ollama.com/download")
    sudo = [] if os.geteuid() == 0 or not shutil.which("sudo") else ["sudo"]

    def run(cmd, what):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise OllamaError(f"{what} failed (exit {done.returncode}):\n{done.stderr[-2000:]}"
                              "\nFix: install Ollama from https://ollama.com/download")

    if shutil.which("zstd") is None:  # the installer unpacks a .tar.zst since 0.14
        apt = [*sudo, "apt-get", "install", "-y", "zstd"]
        if subprocess.run(apt, capture_output=True).returncode != 0:
            run([*sudo, "apt-get", "update"], "apt-get update")
            run(apt, "apt-get install -y zstd")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "install.sh"
        run(["curl", "-fsSL", "-o", str(script), INSTALL_SCRIPT], f"downloading {INSTALL_SCRIPT}")
        run(["sh", str(script)], "the Ollama install script")
    binary = shutil.which("ollama")
    if binary is None:
        raise OllamaError("the Ollama install script ran but no ollama command is on PATH. "
                          "Fix: install Ollama from https://ollama.com/download")
    return binary


def start_server(install=False, timeout=60, host=None, log_path=None) -> ServerHandle:
    """Start `ollama serve` in the background (log in a file) and wait until it answers.

    A server already answering at host is returned as is (its stop() does nothing). With
    install=True on Linux/Colab a missing ollama is installed first (zstd, then the official
    script; OLLAMA_VERSION pins the version).

    >>> server = start_server(install=True)                       # doctest: +SKIP
    >>> server.stop()                                             # doctest: +SKIP
    """
    url = base_url(host)
    if version := server_available(url):
        return ServerHandle(url, version)
    binary = shutil.which("ollama") or (_install() if install else None)
    if binary is None:
        raise OllamaError("The ollama command is not on PATH. Fix: install it from "
                          "https://ollama.com/download, or on Colab/Linux call "
                          "start_server(install=True).")
    log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / "ollama-serve.log"
    env = {**os.environ, "OLLAMA_HOST": urllib.parse.urlsplit(url).netloc}
    with open(log_path, "wb") as log:  # a fresh log, so its tail is about this start
        proc = subprocess.Popen([binary, "serve"], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    handle = ServerHandle(url, "", log_path, proc)
    deadline = time.monotonic() + timeout
    try:
        while not (version := server_available(url)):
            if proc.poll() is not None:
                raise OllamaError(f"`ollama serve` exited with code {proc.returncode} before "
                                  f"answering at {url}. Its log {log_path} ends with:\n"
                                  f"{_tail(log_path)}\nFix: see the log; is another server "
                                  "using the port?")
            if time.monotonic() > deadline:
                raise OllamaError(f"`ollama serve` did not answer at {url} within {timeout} s "
                                  f"and was stopped. Its log {log_path} ends with:\n"
                                  f"{_tail(log_path)}\nFix: see the log, or start it with a "
                                  "longer timeout=")
            time.sleep(0.2)
    except BaseException:
        handle.stop()
        raise
    handle.version = version
    return handle
