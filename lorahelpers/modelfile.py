"""Modelfile text for Ollama, written so that Ollama's parser reads back exactly what was meant.

Ollama's Modelfile grammar has sharp edges: values run to the end of the line unless quoted,
a quoted value ends at the first line that ends in its quote, `#` is a comment only where a
command starts, and characters Go does not count as printable are silently dropped. Everything
here is pure; lorahelpers.ollama does the I/O.

    >>> from lorahelpers.chat import get_chat_format
    >>> print(render_modelfile("out/m.gguf", get_chat_format("chatml")).splitlines()[0])
    FROM ./m.gguf
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from lorahelpers.atomic import write_atomic
from lorahelpers.errors import SettingsError

# Parameters that every Ollama since 0.5.5 parses, with their Go types.
PARAMETER_TYPES = {
    "num_ctx": int, "num_batch": int, "num_gpu": int, "main_gpu": int, "num_thread": int,
    "num_keep": int, "seed": int, "num_predict": int, "top_k": int, "repeat_last_n": int,
    "top_p": float, "min_p": float, "typical_p": float, "temperature": float,
    "repeat_penalty": float, "presence_penalty": float, "frequency_penalty": float,
    "use_mmap": bool, "stop": list,
}
DEPRECATED = ("mirostat", "mirostat_tau", "mirostat_eta", "penalize_newline", "low_vram",
              "f16_kv", "logits_all", "vocab_only", "use_mlock")
# Without a training length, the context Ollama gave a model before 0.15.5 (OLLAMA_CONTEXT_LENGTH's
# default, envconfig/config.go); later releases pick 4k to 256k by GPU memory.
DEFAULT_NUM_CTX = 4096
# Ollama 0.34.1 (pull requests 14969 and 18448) answers 400 "LoRA adapters are no longer
# supported" to a create with adapters and "typical_p is no longer supported" to typical_p, and
# quantizes GGUF imports no more.
REFUSES_ADAPTERS_FROM = (0, 34, 1)
# strings.TrimSpace's set (Go's unicode.IsSpace).
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007" \
            "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def version_tuple(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of an Ollama version string; (0, 0, 0) when it has none.

    >>> version_tuple("0.34.2-rc0")
    (0, 34, 2)
    """
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version or "")
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


@dataclass(frozen=True)
class OllamaRules:
    """What one Ollama release accepts when a model is created; version None accepts what
    any release does."""

    version: str | None
    adapters: bool  # ADAPTER lines / the adapters field
    typical_p: bool  # PARAMETER typical_p
    quantize_gguf: bool  # create-time quantization of a GGUF import


def ollama_rules(version: str | None) -> OllamaRules:
    """The create-time rules of Ollama `version` ("0.0.0", a source build, is taken as the
    newest).

    >>> ollama_rules("0.34.2").adapters, ollama_rules("0.33.0").adapters
    (False, True)
    """
    if version is None:
        return OllamaRules(None, True, True, True)
    v = version_tuple(version)
    old = v != (0, 0, 0) and v < REFUSES_ADAPTERS_FROM
    return OllamaRules(version, old, old, old)


# The sampling options a chat gets where neither the Modelfile nor the request sets them
# (api/types.go DefaultOptions, read at every release tag from 0.5.5 to 0.33.0-rc2 and on main
# of 2026-08-21): temperature 0.8, top_k 40, top_p 0.9, typical_p 1.0, repeat_last_n 64,
# presence and frequency penalty 0, seed -1 (a random one each request), num_predict -1 (until
# a stop or the context is full); min_p is not set (0). Only repeat_penalty has changed:
# 1.1, except 1.0 in 0.17.5-0.17.7 (pull request 14537, reverted in 0.18.0) and from 0.32.10
# on ("api: stop applying repeat_penalty 1.1 to models that don't set one"). 0.34's source was
# not available: taken as 0.33's. llama.cpp applies the penalty to the prompt's tokens too
# (last repeat_last_n tokens) and even at temperature 0; Ollama's own Go engine (used before
# 0.30 for gemma3, qwen3, mistral3, ...) ignores it.
OLLAMA_DEFAULT_OPTIONS = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0,
                          "typical_p": 1.0, "repeat_last_n": 64, "repeat_penalty": 1.1,
                          "presence_penalty": 0.0, "frequency_penalty": 0.0, "seed": -1,
                          "num_predict": -1}
_NO_REPEAT_PENALTY = (((0, 17, 5), (0, 18, 0)), ((0, 32, 10), (999, 0, 0)))
# Every Modelfile and REST create sets PARAMETER repeat_penalty 1 (no penalty), as the model was
# scored in PyTorch and llama.cpp and as Ollama itself defaults to from 0.32.10: measured with the
# Ollama double on the table notebook's model (30 held-out orders, 10 seeds of `ollama run`'s
# options), Ollama 0.12.6's default 1.1 got 97.7 % right on average (down to 90 % for a seed),
# 1.0 got 99.7 % (greedy: 100 %); on the demo's review tags (50 rows, 5 seeds) both 99.6 %.
# Temperature 0.8 and the other defaults cost less than a row on average and are left to the
# user (parameters={"temperature": 0} for repeatable answers).
REPEAT_PENALTY = 1.0


def ollama_default_options(version: str | None) -> dict:
    """The sampling options Ollama `version` uses where the Modelfile and the request set none
    (OLLAMA_DEFAULT_OPTIONS, with that release's repeat_penalty); None or "0.0.0" (a source
    build) is taken as the newest.

    >>> [ollama_default_options(v)["repeat_penalty"] for v in ("0.12.6", "0.32.10", "0.34.2")]
    [1.1, 1.0, 1.0]
    """
    v = version_tuple(version or "")
    newest = v == (0, 0, 0)
    penalty = 1.0 if newest or any(lo <= v < hi for lo, hi in _NO_REPEAT_PENALTY) else 1.1
    return OLLAMA_DEFAULT_OPTIONS | {"repeat_penalty": penalty}


def run_options(version: str | None, parameters: dict | None = None) -> dict:
    """What `ollama run` samples with: the model's PARAMETERs (stop and num_ctx left out) over
    Ollama `version`'s defaults; the CLI sends no options of its own.

    >>> run_options("0.34.2", {"temperature": 0.2, "stop": ["<|im_end|>"]})["temperature"]
    0.2
    """
    own = {k: v for k, v in (parameters or {}).items() if k not in ("stop", "num_ctx")}
    return ollama_default_options(version) | own


def num_ctx_for(max_seq_length: int | None) -> int:
    """PARAMETER num_ctx for a model trained on max_seq_length tokens: the next power of two,
    at least 2048 so that a system prompt, some history and the reply fit; DEFAULT_NUM_CTX
    when the training length is not known.

    >>> num_ctx_for(512), num_ctx_for(3000), num_ctx_for(None)
    (2048, 4096, 4096)
    """
    if max_seq_length is None:
        return DEFAULT_NUM_CTX
    if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) \
            or max_seq_length < 1:
        raise SettingsError(f"max_seq_length must be a positive int, got {max_seq_length!r}. "
                         "Fix: pass the max_seq_length the model was trained with.")
    return max(2048, 1 << (max_seq_length - 1).bit_length())


def _go_printable(ch: str) -> bool:
    # Ollama's parser keeps only these (strconv.IsPrint) plus the whitespace inside a value.
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


def _quote(value: str, what: str, bare: bool = False) -> str:
    """value as one Modelfile argument that Ollama's parser reads back unchanged, else
    ValueError. The parser ends a quoted value at the first line break where the text so far
    is a closed quote, so triple quotes hold anything but a line that ends in three quotes
    (single quotes would fail there too)."""
    for i, ch in enumerate(value):
        if not (_go_printable(ch) or ch in "\t\n\r"):
            name = unicodedata.name(ch, "a control character")
            raise SettingsError(f"{what} has U+{ord(ch):04X} ({name}) at character {i}: "
                                "Ollama's Modelfile parser silently drops it. Fix: remove it "
                                "(register() sends text through the API, which keeps it).")
    if bare and value and value.strip(_GO_SPACE) == value and not value.startswith('"') \
            and "\n" not in value and "\r" not in value:
        return value
    lines = re.split(r"[\r\n]", value)
    for n, line in enumerate(lines[:-1], 1):
        if line.rstrip(_GO_SPACE).endswith('"""'):
            raise SettingsError(f"{what} cannot be written to a Modelfile: its line {n} ends "
                                f"with three quotes, which would end Ollama's quoting early: "
                                f"{line!r}. Fix: rephrase that line.")
    return '"""' + value + '"""'


def _go_actions(template: str) -> list[tuple[bool, str]]:
    """Split a Go template into (is_action, text) pieces, skipping over strings, raw strings
    and comments inside actions."""
    pieces, i = [], 0
    while (j := template.find("{{", i)) >= 0:
        pieces.append((False, template[i:j]))
        k = j + 2
        pattern = re.compile(r'}}|"(?:\\.|[^"\\])*"|`[^`]*`|\'(?:\\.|[^\'\\])*\'|/\*.*?\*/',
                             re.DOTALL)
        while (m := pattern.search(template, k)) and m.group() != "}}":
            k = m.end()
        if m is None:
            raise SettingsError(f"TEMPLATE has an unclosed action at character {j}. Fix: close "
                                "it with }}")
        pieces.append((True, template[j:m.end()]))
        i = m.end()
    pieces.append((False, template[i:]))
    return pieces


def _go_escape_text(text: str) -> str:
    """Template text with runs of 3+ quotes and unprintable runes moved into string actions
    ({{ "\\"\\"\\"" }}), which render the same characters."""
    out = re.sub(r'"{3,}', lambda m: '{{ "' + '\\"' * len(m.group()) + '" }}', text)
    return "".join(ch if _go_printable(ch) or ch in "\t\n\r" else
                   '{{ "%s" }}' % (f"\\u{ord(ch):04x}" if ord(ch) < 0x10000
                                   else f"\\U{ord(ch):08x}") for ch in out)


def _template_value(template: str) -> str:
    try:
        return _quote(template, "TEMPLATE")
    except ValueError:
        rewritten = "".join(p if action else _go_escape_text(p)
                            for action, p in _go_actions(template))
        return _quote(rewritten, "TEMPLATE")


def check_parameters(parameters: dict | None, stop: tuple[str, ...] = (),
                     version: str | None = None) -> dict:
    """Validated Ollama parameters, with `stop` = the format's stops then any extra ones;
    with `version`, also refused where that Ollama release refuses them (typical_p from 0.34.1).

    >>> check_parameters({"temperature": 0.7}, ("<|im_end|>",))
    {'stop': ['<|im_end|>'], 'temperature': 0.7}
    """
    params = dict(parameters or {})
    extra = params.pop("stop", [])
    stops = list(dict.fromkeys([*stop, *([extra] if isinstance(extra, str) else extra)]))
    out: dict = {"stop": stops} if stops else {}
    for name, value in params.items():
        kind = PARAMETER_TYPES.get(name)
        if name in DEPRECATED:
            raise SettingsError(f"parameter {name!r} is deprecated: Ollama ignores it. Fix: "
                                "remove it")
        if kind is None:
            raise SettingsError(f"unknown Ollama parameter {name!r}. Fix: use one of "
                                f"{', '.join(sorted(PARAMETER_TYPES))}")
        ok = isinstance(value, bool) if kind is bool else (
            isinstance(value, (int, float)) and not isinstance(value, bool)
            and (kind is float or isinstance(value, int)))
        if not ok or kind is float and not abs(value) < 3.4e38:
            raise SettingsError(f"parameter {name!r} needs a finite {kind.__name__}, got "
                                f"{value!r}. Fix: pass a number of that type")
        if name == "typical_p" and not ollama_rules(version).typical_p:
            raise SettingsError(f"parameter 'typical_p' is refused by Ollama {version} (0.34.1 "
                                "and later answer 'typical_p is no longer supported'). Fix: "
                                "remove it (top_p and min_p are the nearest samplers that remain).")
        out[name] = float(value) if kind is float else value
    for s in stops:
        if not isinstance(s, str) or not s:
            raise SettingsError(f"stop string {s!r} is empty or not a string. Fix: give "
                                "non-empty strings")
    return out


def _relative(path: Path, base: Path) -> str:
    try:
        rel = Path(os.path.relpath(path.absolute(), base.absolute())).as_posix()
    except ValueError:  # another drive on Windows
        return path.absolute().as_posix()
    # "./" keeps a name such as "~x.gguf" from being read as a home directory.
    return rel if rel.startswith("../") else "./" + rel


def model_parameters(parameters: dict | None, stop: tuple[str, ...] = (),
                     max_seq_length: int | None = None, version: str | None = None) -> dict:
    """check_parameters(...) plus num_ctx (num_ctx_for(max_seq_length)) and repeat_penalty
    (REPEAT_PENALTY) unless parameters set them: what every Modelfile and REST create from
    lorahelpers carries, so that Ollama neither truncates a chat at a small default context nor
    reserves a huge one, and samples without the repetition penalty older releases default to.

    >>> model_parameters({"temperature": 0.7}, ("<|im_end|>",), max_seq_length=512)
    {'stop': ['<|im_end|>'], 'temperature': 0.7, 'num_ctx': 2048, 'repeat_penalty': 1.0}
    """
    params = check_parameters(parameters, stop, version)
    params.setdefault("num_ctx", num_ctx_for(max_seq_length))
    params.setdefault("repeat_penalty", REPEAT_PENALTY)
    return params


def render_modelfile(gguf, chat_format, *, system=None, parameters=None, adapter=None,
                     modelfile_dir=None, max_seq_length=None, version=None) -> str:
    """The Modelfile text registering `gguf` with chat_format's TEMPLATE and stop strings,
    PARAMETER num_ctx from the training max_seq_length and repeat_penalty 1 (model_parameters).

    Paths are written relative to modelfile_dir (default: the GGUF's folder). With `adapter`,
    `gguf` is the base model and the adapter GGUF goes on an ADAPTER line. With `version`,
    what that Ollama release refuses (ADAPTER and typical_p from 0.34.1) is a ValueError
    rather than a Modelfile its `ollama create` rejects. TEMPLATE and SYSTEM
    are quoted with triple quotes; a TEMPLATE whose text Ollama's quoting cannot hold (a line
    ending in three quotes, an unprintable character) is rewritten with equivalent Go string
    actions. A SYSTEM text that cannot be held (a line ending in three quotes and another in one
    quote, or a character the parser drops) is rejected with ValueError, never altered.

    >>> from lorahelpers.chat import get_chat_format
    >>> lines = render_modelfile("out/m.gguf", get_chat_format("chatml")).splitlines()
    >>> lines[0], lines[-4:]
    ('FROM ./m.gguf', ['PARAMETER stop <|im_end|>', 'PARAMETER stop <|im_start|>',
                       'PARAMETER num_ctx 4096', 'PARAMETER repeat_penalty 1.0'])
    """
    rules = ollama_rules(version)
    if adapter is not None and not rules.adapters:
        raise SettingsError(f"Ollama {version} refuses ADAPTER (0.34.1 and later answer 'LoRA "
                            "adapters are no longer supported'). Fix: merge the adapter into its "
                            "base (lorahelpers.pipeline.export_and_verify) and write the merged "
                            "GGUF's Modelfile, or use an Ollama older than 0.34.1.")
    gguf = Path(gguf)
    base = Path(modelfile_dir) if modelfile_dir is not None else gguf.parent
    lines = [f"FROM {_quote(_relative(gguf, base), 'FROM path', bare=True)}"]
    if adapter is not None:
        lines.append(f"ADAPTER {_quote(_relative(Path(adapter), base), 'ADAPTER path', True)}")
    lines.append(f"TEMPLATE {_template_value(chat_format.go_template)}")
    if system:
        lines.append(f"SYSTEM {_quote(system, 'SYSTEM')}")
    params = model_parameters(parameters, tuple(chat_format.stop), max_seq_length, version)
    for name, value in params.items():
        values = value if name == "stop" else [value]
        for v in values:
            text = ("true" if v else "false") if isinstance(v, bool) else str(v)
            lines.append(f"PARAMETER {name} {_quote(text, f'PARAMETER {name}', bare=True)}")
    return "\n".join(lines) + "\n"


def write_modelfile(gguf, chat_format, *, system=None, parameters=None, adapter=None,
                    path=None, max_seq_length=None, version=None) -> Path:
    """Write render_modelfile(...) atomically to `path` (default: Modelfile next to the GGUF).

    >>> from lorahelpers.chat import get_chat_format
    >>> write_modelfile("out/m.gguf", get_chat_format("chatml")).as_posix()
    'out/Modelfile'
    """
    path = Path(path) if path is not None else Path(gguf).parent / "Modelfile"
    text = render_modelfile(gguf, chat_format, system=system, parameters=parameters,
                            adapter=adapter, modelfile_dir=path.parent,
                            max_seq_length=max_seq_length, version=version)
    return write_atomic(path, text)
