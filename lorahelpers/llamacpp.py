"""llama.cpp as lorahelpers uses it: the converter scripts from the llama-cpp-python source
release matching the installed bindings (fetched once, cached per version), run in their own
process; the C quantizer; GGUF metadata; silencing the C library's log.

Nothing here imports torch, so the set-up script can ask `converter_is_cached()` cheaply.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import ctypes
import importlib.metadata
import mmap
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lorahelpers.atomic import atomic_dir
from lorahelpers.errors import ExportError
from lorahelpers.pins import LLAMA_CPP_PYTHON, PORTABLE_CMAKE_ARGS
from lorahelpers.quants import GGUF_TYPES
from lorahelpers.runtime import cache_dir

PACKAGE = "llama-cpp-python"
TESTED_VERSION = LLAMA_CPP_PYTHON
# What the converters need from the 77 MB source release (about 2 MB); the C sources stay out.
KEEP = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/gguf/",
        "gguf-py/pyproject.toml", "gguf-py/LICENSE", "requirements/", "requirements.txt",
        "LICENSE")
REQUIRED = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/__init__.py",
            "gguf-py/gguf/__init__.py")
GGUF_MAGIC = b"GGUF"


class LlamaCppMissingError(ExportError):
    pass


class ConverterUnavailableError(ExportError):
    pass


class UnsupportedArchitectureError(ExportError):
    pass


class TokenizerNotRecognizedError(ExportError):
    pass


def install_hint() -> str:
    return (
        f"install it with portable CPU flags (about 6 minutes once; pip caches the wheel):\n"
        f'    CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" CMAKE_BUILD_PARALLEL_LEVEL=2 \\\n'
        f"        pip install {PACKAGE}=={TESTED_VERSION}\n"
        "or run `make setup`. (The default native build has crashed with 'Illegal instruction' "
        "on CPUs other than the one it was built on.)")


def llama_cpp_version() -> str:
    """Version of the installed llama-cpp-python, read without importing it."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise LlamaCppMissingError(f"{PACKAGE} is not installed; exporting to GGUF needs it.",
                                   fix=install_hint()) from None


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise LlamaCppMissingError(f"{PACKAGE} cannot be imported ({e}).",
                                   fix=install_hint()) from None
    return llama_cpp


def _cached_dir(version: str) -> Path:
    return cache_dir() / f"llama.cpp-{version}"


def _is_complete(path: Path) -> bool:
    return all((path / name).is_file() for name in REQUIRED)


def converter_is_cached() -> bool:
    """True when the converter for the installed llama-cpp-python is in the cache (no network)."""
    try:
        return _is_complete(_cached_dir(llama_cpp_version()))
    except LlamaCppMissingError:
        return False


def converter_dir(progress=print) -> Path:
    """The llama.cpp tree (convert_hf_to_gguf.py, conversion/, convert_lora_to_gguf.py,
    gguf-py/) of the installed llama-cpp-python version; downloaded once with pip into
    cache_dir()/llama.cpp-<version>/.

    >>> (converter_dir() / "convert_hf_to_gguf.py").is_file()  # doctest: +SKIP
    True
    """
    version = llama_cpp_version()
    target = _cached_dir(version)
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    progress(f"Fetching llama.cpp's converter from the {PACKAGE} {version} source release "
             f"(once, about 77 MB) into {target}...")
    # An incomplete one there (written by hand) is replaced.
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.download-", dir=target.parent) \
            as download, atomic_dir(target) as tree:
        sdist = _download_sdist(version, Path(download))
        _extract_converter(sdist, tree)
        if not _is_complete(tree):
            missing = [n for n in REQUIRED if not (tree / n).is_file()]
            raise ConverterUnavailableError(
                f"{sdist.name} lacks {', '.join(missing)} under vendor/llama.cpp/; this "
                f"{PACKAGE} release does not ship the converter lorahelpers expects. Fix: "
                f"install llama-cpp-python=={TESTED_VERSION}")
    return target


def _download_sdist(version: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
           "--no-binary", ":all:", f"{PACKAGE}=={version}", "-d", str(dest)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob("*.tar.gz")) if dest.is_dir() else []
    if run.returncode != 0 or not found:
        said = "\n".join((run.stdout + run.stderr).strip().splitlines()[-6:])
        raise ConverterUnavailableError(
            f"Could not download the {PACKAGE} {version} source release, which holds llama.cpp's "
            f"converter scripts. pip said:\n{said}\n"
            "This is a one-time step. Fix: when online, run\n"
            "    python -c 'from lorahelpers.export import converter_dir; converter_dir()'\n"
            f"(or `make setup`); it is then cached in {_cached_dir(version)}.")
    return found[0]


def _extract_converter(sdist: Path, dest: Path) -> None:
    marker = "/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            if not member.isfile() or marker not in member.name:
                continue
            rel = member.name.split(marker, 1)[1]
            parts = Path(rel).parts
            if not rel.startswith(KEEP) or rel.startswith("/") or ".." in parts:
                continue
            out = dest.joinpath(*parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)


def supported_architectures(conv: Path) -> set[str] | None:
    """Hugging Face architecture names the converter knows (its TEXT_MODEL_MAP), or None when
    this llama.cpp version keeps no such table."""
    source = (conv / "conversion" / "__init__.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and node.target.id == "TEXT_MODEL_MAP" and node.value is not None):
            return set(ast.literal_eval(node.value))
    return None


def unsupported_architecture(arch: str, where: Path, version: str) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(
        f"{where}: architecture {arch!r} is not supported by llama.cpp's converter in "
        f"{PACKAGE} {version}, so a model trained on it could not become a GGUF for Ollama. "
        "Fix: pick a base model with a supported architecture (Llama, Mistral, Qwen2/3, Gemma, "
        "Phi-3 ...), or upgrade to a newer release that supports it (check its list with "
        "`python convert_hf_to_gguf.py --print-supported-models`):\n"
        f'    CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install -U {PACKAGE}\n'
        "and call converter_dir() once while online.")


def check_architecture(config: dict, where, conv: Path | None = None) -> str | None:
    """The architecture a Hugging Face model config names (None: it names none), after
    checking that the converter in `conv` (converter_dir()) takes it, else
    UnsupportedArchitectureError naming `where`. Without `conv`, the cached converter is asked
    if there is one; if not, nothing is known yet, and the export checks again.

    >>> check_architecture({"architectures": ["OPTForCausalLM"]}, "facebook/opt-125m")  # doctest: +SKIP
    Traceback (most recent call last):
    UnsupportedArchitectureError: facebook/opt-125m: architecture 'OPTForCausalLM' is not ...
    """
    arches = config.get("architectures") or (config.get("text_config") or {}).get(
        "architectures") or []
    if conv is None and arches and converter_is_cached():
        conv = converter_dir()
    if not arches or conv is None:
        return arches[0] if arches else None
    known = supported_architectures(conv)
    if known is not None and arches[0] not in known:
        raise unsupported_architecture(arches[0], where, llama_cpp_version())
    return arches[0]


def run_script(script: str, args: list[str], progress=print) -> None:
    """Run one of llama.cpp's Python scripts in its own process with its own gguf-py first on
    the path (PyPI's gguf, which transformers imports, is too old for it), streaming its
    progress; a failure becomes an ExportError that says what to do."""
    conv = converter_dir(progress)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("NO_LOCAL_GGUF", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(conv / "gguf-py")] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    proc = subprocess.Popen([sys.executable, str(conv / script), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tail: collections.deque[str] = collections.deque(maxlen=60)
    relay = _Relay(progress)
    try:
        buffer = b""
        while chunk := proc.stdout.read1(65536):
            *lines, buffer = re.split(rb"[\r\n]", buffer + chunk)
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    tail.append(line)
                    relay(line)
        if buffer.strip():
            tail.append(buffer.decode("utf-8", "replace").rstrip())
        code = proc.wait()
    except BaseException:  # Ctrl-C or a failing progress callback: stop the child first
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
    if code != 0:
        raise classify_failure(script, args, list(tail), code, version=llama_cpp_version())


class _Relay:
    """Passes the converter's log lines on, without the per-tensor lines, most progress-bar
    redraws, and multi-line values such as the chat template, which would bury the rest."""

    def __init__(self, progress):
        self.progress = progress
        self.last_bar = -100.0

    def __call__(self, line: str) -> None:
        bar = re.match(r"\w+:\s+(\d+)%\|", line)
        if bar:
            percent = float(bar.group(1))
            if percent - self.last_bar >= 25 or (percent == 100 and self.last_bar < 100):
                self.last_bar = percent
                self.progress(line)
            return
        logged = re.match(r"(INFO|WARNING|ERROR|CRITICAL):[\w.-]+:(.*)", line)
        if logged and " --> " not in line and "chat_template" not in line:
            level, text = logged.groups()
            self.progress(text if level == "INFO" else f"{level}: {text}")


def classify_failure(script: str, args: list[str], lines: list[str], code: int,
                     *, version: str) -> ExportError:
    """The ExportError for a converter run that exited with `code`, from its last lines."""
    text = "\n".join(lines)
    where = args[0] if args else script
    if "BPE pre-tokenizer was not recognized" in text:
        found = re.search(r"chkhsh:\s+([0-9a-f]{64})", text)
        chkhsh = found.group(1) if found else "(not printed)"
        return TokenizerNotRecognizedError(
            f"{where}: llama.cpp's converter ({PACKAGE} {version}) does not recognise this "
            f"tokenizer's BPE pre-tokenizer (chkhsh {chkhsh}). It identifies BPE tokenizers by "
            "a hash of how they split a test string, and this hash is not in "
            "convert_hf_to_gguf.py's list, so llama.cpp would tokenize text differently from "
            f"the model. Fix: use a newer {PACKAGE} whose converter knows it, or a base model "
            "with a known tokenizer (its original, unmodified tokenizer files). Changing add_bos_token "
            "or the pre-tokenizer settings in tokenizer.json also changes the hash.")
    unsupported = re.search(r"Model (\S+) is not supported|Architecture '([^']+)' not supported",
                            text)
    if unsupported:
        return unsupported_architecture(unsupported.group(1) or unsupported.group(2),
                                        Path(where), version)
    missing = re.search(r"No module named '([\w.]+)'", text)
    if missing:
        return ExportError(f"llama.cpp's {script} needs the Python package "
                           f"{missing.group(1).split('.')[0]!r}. Fix: pip install it and retry.")
    killed = " (killed: out of memory?)" if code in (-9, 137) else ""
    last = "\n".join(lines[-15:])
    return ExportError(f"llama.cpp's {script} failed on {where} with exit code {code}{killed}. "
                       f"Its last lines:\n{last}\nFix: read those lines; with 'killed', free "
                       "memory or export a smaller type")


@contextlib.contextmanager
def quiet_llama_logs():
    """Route llama.cpp's C log into a list instead of stderr; yields that list."""
    llama_cpp = import_llama_cpp()
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):
        if len(lines) < 5000:
            lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        from llama_cpp import _logger  # llama-cpp-python's own callback, which honours verbose

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


class GGUFRunner:
    """A GGUF loaded by llama.cpp (optionally with a LoRA adapter GGUF over it), its C log kept
    out of the output: tokenize, next-token logits, greedy decoding, detokenize. Verification
    and GGUF scoring both run models through it.

    >>> with GGUFRunner("out/m-q8_0.gguf", n_ctx=256) as gguf:  # doctest: +SKIP
    ...     gguf.detokenize(gguf.greedy(gguf.tokenize("Hi"), 8, stop_ids={2}))
    """

    def __init__(self, path, lora_path=None, n_ctx: int = 512, n_gpu_layers: int = 0):
        llama_cpp = import_llama_cpp()
        self.quiet = quiet_llama_logs()
        log = self.quiet.__enter__()
        try:
            self.llm = llama_cpp.Llama(
                str(path), n_ctx=n_ctx, n_batch=min(n_ctx, 512), logits_all=True,
                n_threads=os.cpu_count() or 1, n_gpu_layers=n_gpu_layers, verbose=False,
                lora_path=str(lora_path) if lora_path else None)
        except (ValueError, RuntimeError) as e:
            self.quiet.__exit__(None, None, None)
            said = "".join(log[-5:]).strip()
            raise ExportError(f"llama.cpp cannot load {path}"
                              f"{f' with adapter {lora_path}' if lora_path else ''} ({e}): "
                              f"{said}", fix="check that the file is a complete GGUF of an "
                              "architecture this llama-cpp-python supports (re-export it, or "
                              "upgrade llama-cpp-python)") from None
        self.template = None if lora_path else self.llm.metadata.get("tokenizer.chat_template")

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def detokenize(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids, special=True).decode("utf-8", errors="replace")

    def logits(self, ids: list[int]):
        """Next-token logits at every position of `ids`, as a (len(ids), vocab) numpy array."""
        import numpy as np

        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[: self.llm.n_tokens])

    def greedy(self, ids: list[int], n: int, stop_ids) -> list[int]:
        """Up to `n` argmax tokens after `ids`, the first of `stop_ids` included."""
        self.llm.reset()
        self.llm.eval(ids)
        out: list[int] = []
        for _ in range(n):
            token = int(self.llm.scores[self.llm.n_tokens - 1].argmax())
            out.append(token)
            if token in stop_ids or len(out) == n:
                break
            self.llm.eval([token])
        return out

    def close(self) -> None:
        self.llm.close()
        self.quiet.__exit__(None, None, None)

    def __enter__(self) -> GGUFRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def quantize(src: Path, dst: Path, quant: str, nthread: int = 0) -> None:
    """Quantize a 16/32-bit GGUF with llama.cpp's C quantizer (what llama-quantize runs)."""
    llama_cpp = import_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = GGUF_TYPES[quant].ftype
    params.nthread = nthread
    with quiet_llama_logs() as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                            ctypes.byref(params))
    if rc != 0:
        said = "".join(log[-10:]).strip()
        raise ExportError(f"llama.cpp could not quantize {src} to {quant} (code {rc}):\n{said}\n"
                          "Fix: check the message above; export f16 or q8_0, which need no "
                          "quantizing step")


def check_gguf(path: Path, what: str = "GGUF file", error: type = ExportError) -> Path:
    """Path of an existing GGUF file, or `error` naming what is wrong with it (`what` names
    the file's role in the message, e.g. "adapter").

    >>> check_gguf("missing.gguf", "adapter")
    Traceback (most recent call last):
    ...
    lorahelpers.errors.ExportError: adapter missing.gguf does not exist. Fix: check the path, or export the model first (lorahelpers.export.export_gguf)
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist. Fix: check the path, or export the model "
                    "first (lorahelpers.export.export_gguf)")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        raise error(f"{what} {path} is not a GGUF file (invalid file magic {head!r}, not "
                    "b'GGUF'; Ollama answers 'supplied file was not in GGUF format'). Fix: pass "
                    "a .gguf written by export_gguf or export_adapter_gguf.")
    return path


def gguf_metadata(path) -> dict[str, str]:
    """Key/value metadata of a GGUF (tokenizer.chat_template, general.file_type, ...) as
    llama.cpp's model metadata gives it: each value as text, arrays (the vocabulary) left out.
    Read from the file's header alone, so it also reads adapter GGUFs and needs neither
    llama-cpp-python nor PyPI's gguf (too old for some files).

    >>> gguf_metadata("model-q8_0.gguf")["general.file_type"]  # doctest: +SKIP
    '7'
    """
    path = check_gguf(path)
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _GGUFHeader(data).metadata()
    except (struct.error, ValueError, KeyError) as e:
        raise ExportError(f"{path}: its GGUF header cannot be read ({e}).", fix="export the "
                          "file again; a copy may be incomplete") from None


class _GGUFHeader:
    """The key/value section of a GGUF (versions 2 and 3, little-endian), read in place."""

    SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q",
               11: "q", 12: "d"}
    STRING, ARRAY = 8, 9

    def __init__(self, data):
        self.data, self.at = data, 4  # after the magic

    def take(self, fmt: str):
        (value,) = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def value(self, kind: int):
        if kind == self.STRING:
            n = self.take("Q")
            self.at += n
            if self.at > len(self.data):
                raise ValueError("a string runs past the end of the file")
            return bytes(self.data[self.at - n:self.at]).decode("utf-8", "replace")
        if kind != self.ARRAY:
            return self.take(self.SCALARS[kind])
        item, n = self.take("I"), self.take("Q")
        if item in self.SCALARS:
            self.at += n * struct.calcsize(self.SCALARS[item])
        else:
            for _ in range(n):
                self.value(item)
        return None

    def metadata(self) -> dict[str, str]:
        version = self.take("I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version}; llama.cpp reads versions 2 and 3")
        _tensors, count = self.take("Q"), self.take("Q")
        out = {}
        for _ in range(count):
            key, kind = self.value(self.STRING), self.take("I")
            value = self.value(kind)
            # The text llama.cpp's metadata gives (gguf_kv_to_str, std::to_string); no arrays.
            if kind == 7:
                out[key] = "true" if value else "false"
            elif kind != self.ARRAY:
                out[key] = f"{value:f}" if kind in (6, 12) else str(value)
        return out


@contextlib.contextmanager
def _vocab_only(path):
    """The GGUF loaded by llama.cpp with its vocabulary only (no weights), closed afterwards."""
    path = check_gguf(path)
    llama_cpp = import_llama_cpp()
    with quiet_llama_logs() as log:
        try:
            llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        except (ValueError, RuntimeError) as e:
            said = "".join(log[-5:]).strip()
            raise ExportError(f"llama.cpp cannot read {path} ({e}): {said}") from None
        try:
            yield llm
        finally:
            llm.close()



@dataclass(frozen=True)
class EndOfGeneration:
    """Where a GGUF ends generation, as llama.cpp reads it: the ids written in the file
    (tokenizer.ggml.eos/eot/eom_token_id, None when absent), every token llama.cpp ends
    generation on (`eog`: those ids plus tokens it knows by their text, such as <|eot_id|>),
    the text of those tokens, and how llama.cpp tokenizes each text it was asked about."""

    path: Path
    eos: int | None
    eot: int | None
    eom: int | None
    eog: tuple[int, ...]
    texts: dict[int, str]
    ids_of: dict[str, list[int]]


def end_of_generation(path, texts=()) -> EndOfGeneration:
    """The GGUF's end-of-generation tokens (EndOfGeneration), read by llama.cpp with the
    vocabulary only (half a second for a 128k vocabulary); `texts` are also tokenized.

    >>> end_of_generation("m-q8_0.gguf", ["<|im_end|>"]).ids_of  # doctest: +SKIP
    {'<|im_end|>': [2]}
    """
    path = check_gguf(path)
    llama_cpp = import_llama_cpp()
    with _vocab_only(path) as llm:
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        eog = tuple(i for i in range(llama_cpp.llama_vocab_n_tokens(vocab))
                    if llama_cpp.llama_vocab_is_eog(vocab, i))

        def key(name):
            value = llm.metadata.get(f"tokenizer.ggml.{name}_token_id")
            return None if value is None else int(value)

        ids = {key("eos"), key("eot"), key("eom"), *eog} - {None}
        return EndOfGeneration(
            path, key("eos"), key("eot"), key("eom"), eog,
            {i: llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8", "replace")
             for i in sorted(ids)},
            {t: llm.tokenize(t.encode("utf-8"), add_bos=False, special=True)
             for t in texts})
