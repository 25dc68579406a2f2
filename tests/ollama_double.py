"""A test double of Ollama's REST API (`ollama serve`, 0.5.5 and later), since no Ollama server
can be installed on the machines the tests run on. It behaves as one named release at a time:
`OllamaDouble(version="0.12.6")`; `Release` lists what differs between releases, each behaviour
with the source it was read from.

It stands in for the server lorahelpers.ollama talks to: GET / and /api/version, HEAD/POST
/api/blobs/<digest> (digest format and content checked), POST /api/create (files, adapters,
from, template, system, parameters, messages, license; NDJSON progress, or one JSON object when
stream is false), GET /api/tags, POST /api/show, DELETE /api/delete and POST /api/chat. What the
real server rejects it rejects with the same status and wording, read from Ollama's sources:
invalid names, absolute or `..` file names, bad or unknown digests, files that are not GGUF,
TEMPLATE syntax errors (parsed by Go's own text/template through tests/gorender.py, with the
release's template functions), missing models (404 `model 'x' not found`), and from 0.34.1
adapters, typical_p and GGUF quantization. Errors that the real server finds after it has
started streaming come as a final {"error": ...} line, as there.

Chat builds Ollama's Messages-mode data (the model's MESSAGEs, then the request's; the
Modelfile SYSTEM first only when the request does not start with a system message;
consecutive same-role messages joined by a blank line), drops the oldest history that does not
fit in num_ctx as the release's chatPrompt does (server/prompt.go), renders the stored TEMPLATE
with Go, records it in `.last_prompt`, and generates with llama.cpp (llama-cpp-python) on the
registered GGUF (plus the LoRA GGUF in adapter mode), cutting at the stop list. The sampling
options are the request's over the model's PARAMETERs over the release's DefaultOptions
(`Release.default_options`), drawn by llama.cpp's own sampler chain in the order Ollama's
llama.cpp runners build it (`sampler`): repetition penalties (the prompt's tokens included),
top_k, typical_p, top_p, min_p, temperature, then a draw seeded by `seed`. So a chat with no
options samples at temperature 0.8 with a random seed, as `ollama run` does, and a release
whose default repeat_penalty is 1.1 penalizes even at temperature 0.

Where it differs from Ollama: models live in memory and blobs in a temporary folder; it does
not quantize, convert safetensors, pull from a registry or detect templates from the GGUF; it
runs on one CPU thread, so its logits (and so the tokens a seed draws) differ slightly from a
real server's on other hardware or with another llama.cpp build: equal seeds give equal
answers here, not the same answers as a real server; it always samples as Ollama's llama.cpp
runners do, also for the architectures that releases before 0.30 run on Ollama's own Go engine
(gemma3, qwen3, mistral3, ...), whose sampler ignores the repetition penalties and orders top_k,
temperature, top_p and min_p differently with its own random numbers; it has no llama-server
prompt cache nor its abort after 30 repeated tokens; num_predict defaults to 256, not
unlimited; prompt tokens for truncation are counted with llama.cpp's tokenizer and a BOS; it
knows only Messages-mode templates (no legacy .Prompt/.Response mode, tools, images,
thinking), and evaluates every prompt afresh, so equal requests with a fixed seed get equal
answers.

tests/fake_ollama.py wraps it in a fake `ollama` command (serve, create -f) for the tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from lorahelpers.modelfile import version_tuple
from tests import modelfile_check as mfc
from tests.gorender import GoTemplateError, render_go

DIGEST = re.compile(r"^sha256[:-][0-9a-fA-F]{64}$")
DEFAULT_NUM_PREDICT = 256
# OLLAMA_CONTEXT_LENGTH's default before 0.15.5 (envconfig/config.go); later releases choose
# 4k, 32k or 256k by GPU memory, which is 4k on a machine without a GPU.
DEFAULT_NUM_CTX = 4096
# One release of each line the tests run against: before 0.30 (Go runner), 0.30-0.33
# (llama-server, adapters still accepted), 0.34.1 and later (adapters refused); and 0.34.1
# itself, the first release that refuses, so that a boundary off by one release is seen.
VERSIONS = ("0.12.6", "0.32.15", "0.34.1", "0.34.2")
NEWEST = VERSIONS[-1]


@dataclass(frozen=True)
class Release:
    """What one Ollama release does differently, for everything lorahelpers touches. Each
    property names where it was read: github.com/ollama/ollama at the release tags (0.12.0 to
    0.33.0-rc2 were compared tag by tag); the 0.34.1 changes from its pull requests 14969
    (adapters) and 18448 (typical_p) and the import docs, whose source was not available here.
    0.34.1 and 0.34.2 behave alike in everything below: neither tag's source was available
    (the newest there is 0.33.0-rc2; main of 2026-08-21 still accepts adapters and typical_p),
    so a difference between the two could not be read. "0.0.0" (a source build) is taken as
    the newest."""

    version: str

    def since(self, *v: int) -> bool:
        have = version_tuple(self.version)
        return have == (0, 0, 0) or have >= v

    @property
    def funcs(self) -> tuple[str, ...]:
        """template/template.go `funcs`: toTypeScriptType since 0.11.3, yesterdayDate since
        0.13.3."""
        return ("json", "currentDate") + (("yesterdayDate",) if self.since(0, 13, 3) else ()) \
            + (("toTypeScriptType",) if self.since(0, 11, 3) else ())

    @property
    def tool_call_ids(self) -> bool:
        """api/types.go Message.ToolCallID and ToolCall.ID, which templates can read: since
        0.12.10 (template.templateMessage keeps them from 0.14.0)."""
        return self.since(0, 12, 10)

    @property
    def show_names_shortest(self) -> bool:
        """server/routes.go ShowHandler: since 0.30.0 the 404 names the model as
        name.DisplayShortest() ("x:latest"), before as requested ("x")."""
        return self.since(0, 30, 0)

    @property
    def truncates_from_the_front(self) -> bool:
        """server/prompt.go chatPrompt: since 0.15.5 it tries the whole history, then drops
        messages from the front until it fits, keeping every system message before the cut.
        Before, it walks back from the latest message and stops at the first that does not
        fit; a system message at exactly that place is dropped with it."""
        return self.since(0, 15, 5)

    @property
    def refuses_adapters(self) -> bool:
        """0.34.1 (pull request 14969, server/create.go errAdaptersUnsupported): 400 "LoRA
        adapters are no longer supported" for `adapters`, and for an adapter GGUF in `files`."""
        return self.since(0, 34, 1)

    @property
    def refuses_typical_p(self) -> bool:
        """0.34.1 (pull request 18448): 400 "typical_p is no longer supported" for a create
        with the parameter and for requests with the option."""
        return self.since(0, 34, 1)

    @property
    def default_options(self) -> dict:
        """api/types.go DefaultOptions (the sampling options of a chat where the model and the
        request set none), compared at every tag from 0.5.5 to 0.33.0-rc2: temperature 0.8,
        top_k 40, top_p 0.9, typical_p 1.0, repeat_last_n 64, seed -1, MinP unset (0);
        repeat_penalty 1.1, but 1.0 in 0.17.5-0.17.7 (#14537, reverted in 0.18.0) and from
        0.32.10 (commit 6a261db "api: stop applying repeat_penalty 1.1 to models that don't
        set one"); 0.34.x taken as 0.33.0-rc2."""
        off = self.since(0, 32, 10) or (self.since(0, 17, 5) and not self.since(0, 18, 0))
        return {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "typical_p": 1.0,
                "repeat_last_n": 64, "repeat_penalty": 1.0 if off else 1.1,
                "presence_penalty": 0.0, "frequency_penalty": 0.0, "seed": -1}

    @property
    def refuses_gguf_quantize(self) -> bool:
        """0.34.1 (release notes, docs/import: "Ollama does not quantize GGUF models during
        import"). The wording of its error was not available: the double's is its own."""
        return self.since(0, 34, 1)


class CreateError(Exception):
    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.status = status


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _valid_fs_path(name: str) -> bool:
    """Go's io/fs.ValidPath."""
    if name == ".":
        return True
    return bool(name) and all(part not in ("", ".", "..") for part in name.split("/"))


def _human_number(n: int) -> str:
    """format.HumanNumber."""
    for size, suffix, digits in ((10**9, "B", 1), (10**6, "M", 2)):
        if n >= size:
            x = n / size
            return f"{x:.{0 if x == int(x) else digits}f}{suffix}"
    return f"{n / 1000:.0f}K" if n >= 1000 else str(n)


def _show_quote(s: str) -> str:
    """parser.quote, which `ollama show --modelfile` uses."""
    if "\n" in s or s.startswith(" ") or s.endswith(" "):
        return f'"""{s}"""' if '"' in s else f'"{s}"'
    return s


class OllamaDouble:
    """The fake server; `with OllamaDouble() as d: d.url` runs it in a thread."""

    def __init__(self, version: str = NEWEST, port: int = 0):
        self.version = version
        self.release = Release(version)
        self._tmp = tempfile.mkdtemp(prefix="ollama-double-")
        self.blobs = Path(self._tmp) / "blobs"
        self.blobs.mkdir()
        self.models: dict[str, dict] = {}
        self.last_prompt: str | None = None
        self.last_options: dict | None = None  # the options the last chat sampled with
        self.last_reply: str | None = None
        self.creates: list[dict] = []  # create requests as received
        self.uploads: list[str] = []  # digests of blob uploads, in order
        self.before_blob_body = None  # test hook: called before a blob upload is read
        self._llms: dict = {}
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> OllamaDouble:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self._release()

    def _release(self) -> None:
        self.httpd.server_close()
        for llm in self._llms.values():
            llm.close()
        self._llms.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # ---- store
    def blob_path(self, digest: str) -> Path:
        if not DIGEST.match(digest):
            raise CreateError("invalid digest format", 400)
        return self.blobs / digest.replace(":", "-")

    def find(self, name: str) -> dict | None:
        key = mfc.display_shortest(name).lower() if mfc.name_is_valid(name) else None
        return self.models.get(key) if key else None

    def _gguf(self, digest: str, source: str) -> dict:
        from gguf import GGUFReader

        path = self.blob_path(digest)
        if not path.exists():
            raise CreateError(f"open {path}: no such file or directory")
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise CreateError("supplied file was not in GGUF format", 400)
        try:
            reader = GGUFReader(path)
        except Exception as e:  # what ggml.Decode would report
            raise CreateError(f"failed to decode {source}: {e}") from None
        fields = reader.fields

        def get(key, default=None):
            return fields[key].contents() if key in fields else default

        return {"digest": digest, "source": source, "path": path,
                "type": get("general.type", "model"), "arch": get("general.architecture", ""),
                "file_type": get("general.file_type"), "size": path.stat().st_size,
                "params": int(sum(int(t.n_elements) for t in reader.tensors)),
                "chat_template": get("tokenizer.chat_template")}

    def create(self, req: dict):
        """Yields progress dicts; raises CreateError. Mirrors server/create.go's order."""
        if req.get("from"):
            base = self.find(req["from"])
            if base is None:
                yield {"status": "pulling manifest"}
                raise CreateError("pull model manifest: file does not exist")
            layers = dict(base, name=None)
        elif req.get("files") is not None:
            layers = {"template": None, "system": "", "parameters": {}, "messages": [],
                      "license": [], "adapters": []}
            layers["model"] = yield from self._layers(req["files"], adapter=False)
        else:
            raise CreateError("neither 'from' or 'files' was specified", 400)
        if req.get("adapters") is not None:
            layers["adapters"] = yield from self._layers(req["adapters"], adapter=True)
        if req.get("quantize") or req.get("quantization"):
            raise CreateError("the test double does not quantize")
        if self.release.refuses_adapters and any(x["type"] == "adapter" for x in layers["model"]):
            raise CreateError("LoRA adapters are no longer supported", 400)
        for layer in layers["model"] + layers["adapters"]:
            yield {"status": f"using existing layer {layer['digest']}"}
        if req.get("template"):
            try:
                self.render(req["template"], [])
            except GoTemplateError as e:
                if "executing" not in str(e):
                    raise CreateError(f"template error: {e}", 400) from None
            layers["template"] = req["template"]
        if req.get("system"):
            layers["system"] = req["system"]
        if req.get("license"):
            lic = req["license"]
            layers["license"] = [lic] if isinstance(lic, str) else list(lic)
        if req.get("parameters"):
            layers["parameters"] = {**layers["parameters"], **req["parameters"]}
        if req.get("messages"):
            layers["messages"] = [{"role": m["role"], "content": m.get("content", "")}
                                  for m in req["messages"]]
        for key in ("template", "system", "parameters"):
            if req.get(key):
                text = json.dumps(req[key]) if key == "parameters" else req[key]
                yield {"status": "creating new layer sha256:"
                       + hashlib.sha256(text.encode()).hexdigest()}
        yield {"status": "writing manifest"}
        name = self._existing_name(req.get("model") or req.get("name"))
        layers.update(name=name, modified_at=_now())
        with self._lock:
            self.models[mfc.display_shortest(name).lower()] = layers
            for key in [k for k in self._llms if k[0] == name]:
                self._llms.pop(key).close()
        yield {"status": "success"}

    def _layers(self, files: dict, adapter: bool):
        kind = ""
        for n in files:  # detectModelTypeFromFiles: the first file that tells
            kind = ("safetensors" if n.endswith(".safetensors") else
                    "gguf" if n.endswith(".gguf") else self._sniff(files[n]))
            if kind:
                break
        if kind == "safetensors":
            raise CreateError("the test double does not convert safetensors")
        if kind == "":
            raise CreateError("unknown type", 400)
        if adapter and len(files) > 1:
            raise CreateError("only one adapter is currently supported", 400)
        out = []
        for n in sorted(files):
            yield {"status": "parsing GGUF"}
            out.append(self._gguf(files[n], n))
        return out

    def _sniff(self, digest: str) -> str:
        try:
            with open(self.blob_path(digest), "rb") as f:
                return "gguf" if f.read(4) == b"GGUF" else ""
        except (OSError, CreateError):
            return ""

    def _existing_name(self, name: str) -> str:
        found = self.find(name)
        return found["name"] if found else name

    # ---- chat
    def render(self, template: str, msgs: list[dict]) -> str:
        """template.Execute in Messages mode: consecutive same-role messages merged, .System
        all system messages joined, rendered by Go with this release's functions."""
        collated: list[dict] = []
        for m in msgs:
            if collated and collated[-1]["role"] == m["role"] and m["role"] != "tool":
                collated[-1] = {**collated[-1],
                                "content": collated[-1]["content"] + "\n\n" + m["content"]}
            else:
                collated.append(dict(m))
        system = "\n\n".join(m["content"] for m in collated if m["role"] == "system")
        return render_go(template, collated, system=system, funcs=self.release.funcs,
                         tool_call_ids=self.release.tool_call_ids)

    def truncate(self, msgs: list[dict], fits) -> list[dict]:
        """chatPrompt's cut of the history (server/prompt.go): the messages to render, always
        with the latest one; `fits(messages)` says whether they fit in num_ctx."""
        last = len(msgs) - 1
        if self.release.truncates_from_the_front:
            for i in range(last + 1):
                system = [m for m in msgs[:i] if m["role"] == "system"]
                if i == last or fits(system + msgs[i:]):
                    return system + msgs[i:]
        n, system = last, []
        for i in range(last - 1, -1, -1):
            system = [m for m in msgs[:i] if m["role"] == "system"]
            if not fits(system + msgs[i:]):
                break
            n = i
        return system + msgs[n:]

    def prompt_for(self, model: dict, messages: list[dict], num_ctx: int | None = None,
                   tokenize=None) -> str:
        """The prompt Ollama builds for a chat: with num_ctx and tokenize (text -> tokens), the
        history is cut to fit as the release does."""
        msgs = list(model["messages"]) + [
            {"role": m["role"], "content": m.get("content", "")} for m in messages]
        if messages[0]["role"] != "system" and model["system"]:
            msgs.insert(0, {"role": "system", "content": model["system"]})
        template = model["template"]
        if not template or "Messages" not in template:
            raise CreateError("the test double renders only .Messages templates")
        if num_ctx is not None and tokenize is not None:
            msgs = self.truncate(msgs, lambda ms: len(tokenize(self.render(template, ms)))
                                 <= num_ctx)
        return self.render(template, msgs)

    def llm(self, model: dict, num_ctx: int):
        from llama_cpp import Llama

        adapters = model.get("adapters") or []
        key = (model["name"], num_ctx)
        with self._lock:
            if key not in self._llms:
                # One thread: llama.cpp's spinning worker threads slow it down a hundredfold
                # on a machine whose cores are busy with other tests.
                self._llms[key] = Llama(
                    model_path=str(model["model"][0]["path"]), n_ctx=num_ctx, verbose=False,
                    n_threads=1, n_threads_batch=1,
                    lora_path=str(adapters[0]["path"]) if adapters else None)
            return self._llms[key]

    def load(self, model: dict, options: dict | None):
        """(llama.cpp model, options) for a chat: the request's options over the model's
        parameters over the release's defaults (server/routes.go modelOptions), and the model
        loaded with their num_ctx."""
        opts = {**self.release.default_options, **model["parameters"], **(options or {})}
        opts["num_ctx"] = int(opts.get("num_ctx") or DEFAULT_NUM_CTX)
        try:
            return self.llm(model, opts["num_ctx"]), opts
        except Exception as e:  # the real server reports a runner that failed to load
            raise CreateError(f"llama runner process has terminated: {e}") from None

    def generate(self, llm, prompt: str, opts: dict):
        """Yields (text piece, None) then (None, done_reason): tokens drawn by llama.cpp's
        sampler with `opts` (sampler()) until an end-of-generation token, num_predict tokens
        or a stop string, where the reply is cut; a piece that may begin a stop string is held
        back until it is clear it does not (Ollama's runner does the same)."""
        import llama_cpp

        stop = opts.get("stop") or []
        stop = [s for s in ([stop] if isinstance(stop, str) else stop) if s]
        n = int(opts.get("num_predict") or DEFAULT_NUM_PREDICT)
        n = n if n > 0 else DEFAULT_NUM_PREDICT
        with self._lock:
            # A fresh evaluation each time: llama-cpp-python would otherwise reuse the cached
            # prompt and re-evaluate only its last token, whose logits differ slightly from
            # the batched ones, so the same chat could answer differently twice.
            llm.reset()
            tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
            vocab = llama_cpp.llama_model_get_vocab(llm.model)
            chain = sampler(llm, opts, tokens)
            out: list[int] = []
            text, sent, reason = "", 0, "length"
            llm.eval(tokens)
            try:
                while len(out) < n:
                    token = chain.sample(llm._ctx, -1)  # also accepts it (penalty history)
                    if llama_cpp.llama_vocab_is_eog(vocab, token):
                        reason = "stop"
                        break
                    out.append(token)
                    text = llm.detokenize(out, prev_tokens=tokens).decode("utf-8", "ignore")
                    cuts = [text.index(s) for s in stop if s in text]
                    if cuts:
                        text, reason = text[:min(cuts)], "stop"
                        break
                    hold = max((k for s in stop for k in range(1, len(s))
                                if text.endswith(s[:k])), default=0)
                    if len(text) - hold > sent:
                        yield text[sent:len(text) - hold], None
                        sent = len(text) - hold
                    llm.eval([token])
            finally:
                chain.close()
            if len(text) > sent:
                yield text[sent:], None
        yield None, reason


def sampler(llm, opts: dict, prompt_tokens):
    """llama.cpp's sampler chain as Ollama builds it for llama.cpp models (runner/llamarunner
    before 0.30, llama-server after: common_sampler with Ollama's options): repetition
    penalties over the last repeat_last_n tokens, the prompt's included (both runners accept
    the prompt tokens into the sampler), then top_k, typical_p, top_p, min_p, temperature (at
    0 or below: the highest logit) and a draw seeded by `seed` (-1: a random seed, as
    Go's uint32(-1) is llama.cpp's LLAMA_DEFAULT_SEED). DRY, XTC and top-n-sigma are off in
    Ollama and left out."""
    from llama_cpp import _internals

    chain = _internals.LlamaSampler()
    chain.add_penalties(llm.n_vocab(), int(opts["repeat_last_n"]), float(opts["repeat_penalty"]),
                        float(opts["frequency_penalty"]), float(opts["presence_penalty"]))
    chain.add_top_k(int(opts["top_k"]))
    chain.add_typical(float(opts["typical_p"]), 1)
    chain.add_top_p(float(opts["top_p"]), 1)
    chain.add_min_p(float(opts["min_p"]), 1)
    chain.add_temp(float(opts["temperature"]))
    chain.add_dist(int(opts["seed"]) & 0xFFFFFFFF)
    for token in prompt_tokens:
        chain.accept(token)
    return chain


def _handler(double: OllamaDouble):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        # ---- plumbing
        def _send(self, status: int, body=None, content_type="application/json"):
            data = b"" if body is None else (
                body.encode() if isinstance(body, str) else json.dumps(body).encode())
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _error(self, status: int, message: str):
            self._send(status, {"error": message})

        def _chunks(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    yield self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                data = self.rfile.read(min(left, 1 << 20))
                if not data:
                    return
                left -= len(data)
                yield data

        def _json(self):
            raw = b"".join(self._chunks())
            if not raw:
                self._error(400, "missing request body")
                return None
            try:
                body = json.loads(raw)
            except ValueError as e:
                self._error(400, str(e))
                return None
            if not isinstance(body, dict):
                self._error(400, "json: cannot unmarshal into Go value of type object")
                return None
            return body

        def _stream(self, events, stream: bool, final=None):
            """Ollama's streamResponse / waitForStream over a generator of dicts."""
            started, latest = False, None
            try:
                for event in events:
                    latest = event
                    if stream:
                        if not started:
                            self.send_response(200)
                            self.send_header("Content-Type", "application/x-ndjson")
                            self.send_header("Transfer-Encoding", "chunked")
                            self.end_headers()
                            started = True
                        self._write_chunk(json.dumps(event) + "\n")
            except CreateError as e:
                if started:
                    self._write_chunk(json.dumps({"error": str(e)}) + "\n")
                else:
                    self._error(e.status, str(e))
                    return
            else:
                if not stream:
                    self._send(200, final(latest) if final else latest)
                    return
            if started:
                self._write_chunk("")

        def _write_chunk(self, text: str):
            data = text.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        # ---- routes
        def do_HEAD(self):
            if self.path in ("/", "/api/version"):
                return self.do_GET()
            m = re.fullmatch(r"/api/blobs/(.+)", self.path)
            if not m:
                return self._send(404)
            try:
                path = double.blob_path(m.group(1))
            except CreateError as e:
                return self._error(400, str(e))
            self._send(200 if path.exists() else 404)

        def do_GET(self):
            if self.path == "/":
                return self._send(200, "Ollama is running", "text/plain; charset=utf-8")
            if self.path == "/api/version":
                return self._send(200, {"version": double.version})
            if self.path == "/api/tags":
                # ListHandler (and 0.30's model list cache) name models DisplayShortest.
                return self._send(200, {"models": [{
                    "name": mfc.display_shortest(m["name"]),
                    "model": mfc.display_shortest(m["name"]), "modified_at": m["modified_at"],
                    "size": sum(x["size"] for x in m["model"]),
                    "digest": m["model"][0]["digest"].split(":")[1],
                    "details": _details(m)} for m in double.models.values()]})
            self._send(404, "404 page not found", "text/plain")

        def do_DELETE(self):
            if self.path != "/api/delete":
                for _ in self._chunks():
                    pass
                return self._send(404, "404 page not found", "text/plain")
            body = self._json()
            if body is None:
                return
            name = body.get("model") or body.get("name") or ""
            if not mfc.name_is_valid(name):
                return self._error(400, f'name "{name}" is invalid')
            if double.find(name) is None:
                return self._error(404, f"model '{name}' not found")
            with double._lock:
                model = double.models.pop(mfc.display_shortest(name).lower())
                for key in [k for k in double._llms if k[0] == model["name"]]:
                    double._llms.pop(key).close()
            self._send(200)

        def do_POST(self):
            m = re.fullmatch(r"/api/blobs/(.+)", self.path)
            if m:
                return self._post_blob(m.group(1))
            route = {"/api/create": self._create, "/api/show": self._show,
                     "/api/chat": self._chat}.get(self.path)
            if route is None:
                for _ in self._chunks():
                    pass
                return self._send(404, "404 page not found", "text/plain")
            body = self._json()
            if body is not None:
                route(body)

        def _post_blob(self, digest: str):
            try:
                path = double.blob_path(digest)
            except CreateError as e:
                b"".join(self._chunks())
                return self._error(400, str(e))
            double.uploads.append(digest)
            if path.exists():
                for _ in self._chunks():
                    pass
                return self._send(200)
            if double.before_blob_body:
                double.before_blob_body()
            sha = hashlib.sha256()
            tmp = path.with_name(path.name + ".partial")
            with open(tmp, "wb") as f:
                for data in self._chunks():
                    sha.update(data)
                    f.write(data)
            got = "sha256:" + sha.hexdigest()
            if got != digest:
                tmp.unlink()
                return self._error(400, f'digest mismatch, expected "{digest}", got "{got}"')
            os.replace(tmp, path)
            self._send(201)

        def _create(self, body: dict):
            double.creates.append(body)
            for group in ("files", "adapters"):
                for fname, digest in (body.get(group) or {}).items():
                    if group == "files" and not _valid_fs_path(fname):
                        return self._error(400, "file path must be relative")
                    if not digest:
                        return self._error(400, "invalid digest format")
            if not mfc.name_is_valid(body.get("model") or body.get("name") or ""):
                return self._error(400, "invalid model name")
            release = double.release
            if release.refuses_adapters and body.get("adapters"):
                return self._error(400, "LoRA adapters are no longer supported")
            if release.refuses_typical_p and "typical_p" in (body.get("parameters") or {}):
                return self._error(400, "typical_p is no longer supported")
            gguf = not any(n.endswith(".safetensors") for n in body.get("files") or {})
            if release.refuses_gguf_quantize and gguf and (body.get("quantize")
                                                           or body.get("quantization")):
                return self._error(400, "quantizing is not supported for GGUF imports: quantize "
                                        "with llama.cpp before creating the model")
            self._stream(double.create(body), body.get("stream", True) is not False)

        def _show(self, body: dict):
            name = body.get("model") or body.get("name")
            if not name:
                return self._error(400, "model is required")
            if not mfc.name_is_valid(name):
                return self._error(400, "invalid model name")
            model = double.find(name)
            if model is None:
                shown = mfc.display_shortest(name) if double.release.show_names_shortest else name
                return self._error(404, f"model '{shown}' not found")
            self._send(200, _show(model))

        def _chat(self, body: dict):
            name = body.get("model") or ""
            if not mfc.name_is_valid(name):
                return self._error(400, "model is required")
            model = double.find(name)
            if model is None:
                return self._error(404, f"model '{name}' not found")
            messages = body.get("messages") or []
            stream = body.get("stream", True) is not False
            head = {"model": name, "created_at": _now()}
            if not messages:
                return self._send(200, {**head, "message": {"role": "assistant", "content": ""},
                                        "done": True, "done_reason": "load"})
            if double.release.refuses_typical_p and "typical_p" in (body.get("options") or {}):
                return self._error(400, "typical_p is no longer supported")
            try:
                llm, opts = double.load(model, body.get("options"))

                def tokenize(text):
                    with double._lock:  # one thread at a time in llama.cpp
                        return llm.tokenize(text.encode(), add_bos=True, special=True)

                cut = body.get("truncate", True) is not False
                prompt = double.prompt_for(model, messages, opts["num_ctx"] if cut else None,
                                           tokenize)
            except (CreateError, GoTemplateError) as e:
                return self._error(500, str(e))
            double.last_prompt, double.last_options = prompt, opts
            parts: list[str] = []

            def events():
                for piece, reason in double.generate(llm, prompt, opts):
                    if piece is not None:
                        parts.append(piece)
                        yield {**head, "message": {"role": "assistant", "content": piece},
                               "done": False}
                    else:
                        double.last_reply = "".join(parts)
                        yield {**head, "message": {"role": "assistant", "content": ""},
                               "done": True, "done_reason": reason}

            self._stream(events(), stream, final=lambda last: {
                **last, "message": {"role": "assistant", "content": "".join(parts)}})

    return Handler


def _details(model: dict) -> dict:
    base = model["model"][0]
    ftype = base["file_type"]
    try:
        from gguf import LlamaFileType

        level = LlamaFileType(ftype).name.removeprefix("MOSTLY_") if ftype is not None else ""
    except ValueError:
        level = str(ftype)
    return {"parent_model": "", "format": "gguf", "family": base["arch"],
            "families": [base["arch"]], "parameter_size": _human_number(base["params"]),
            "quantization_level": level}


def _show(model: dict) -> dict:
    params = []
    for k, v in model["parameters"].items():
        for item in v if isinstance(v, list) else [v]:
            params.append(f"{k:<30} {json.dumps(item, ensure_ascii=False)}")
    lines = [f"FROM {model['model'][0]['path']}"]
    lines += [f"ADAPTER {a['path']}" for a in model.get("adapters") or []]
    if model["template"]:
        lines.append(f"TEMPLATE {_show_quote(model['template'])}")
    if model["system"]:
        lines.append(f"SYSTEM {_show_quote(model['system'])}")
    lines += [f"PARAMETER {k} {_show_quote(str(item))}" for k, v in model["parameters"].items()
              for item in (v if isinstance(v, list) else [v])]
    lines += [f"MESSAGE {m['role']} {_show_quote(m['content'])}" for m in model["messages"]]
    base = model["model"][0]
    return {
        "license": "\n".join(model["license"]),
        "modelfile": '# Modelfile generated by "ollama show"\n# To build a new Modelfile based '
                     f"on this, replace FROM with:\n# FROM {mfc.display_shortest(model['name'])}"
                     "\n\n" + "\n".join(lines) + "\n",
        "parameters": "\n".join(params), "template": model["template"] or "{{ .Prompt }}",
        "system": model["system"], "details": _details(model), "messages": model["messages"],
        "model_info": {"general.architecture": base["arch"],
                       "general.parameter_count": base["params"]},
        "capabilities": ["completion"], "modified_at": model["modified_at"],
    }


def write_tiny_gguf(path: Path, general_type: str | None = None,
                    chat_template: str | None = None) -> Path:
    """A valid, tiny GGUF (one 4x8 tensor) for registration tests that never chat."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    if general_type:
        writer.add_type(general_type)
    if chat_template:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
