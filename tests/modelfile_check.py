"""Ollama's Modelfile grammar, ported line by line from its Go sources, for the tests.

`parse(text)` follows parser/parser.go's ParseFile state machine (commands case-insensitive,
`#` comments only where a command may start, values to end of line unless quoted with `"` or
`\"\"\"`, runes Go does not count as printable dropped outside the value's own whitespace) and
raises ModelfileError with Ollama's wording. `check(text)` also applies what `ollama create`
does before it contacts the server (Modelfile.CreateRequest): parameter names and types
(api.FormatParams), repeated `stop` lines joined into a list, deprecated parameters dropped
with a warning, MESSAGE roles.

    >>> check('FROM ./m.gguf\\nPARAMETER stop "<|im_end|>"\\n').parameters
    {'stop': ['<|im_end|>']}

Each function takes the Ollama `version` whose rules apply (default: the newest known); what
changed between releases was read from parser/parser.go and api/types.go at the release tags:
REQUIRES since 0.14.0, DRAFT since 0.23.1, PARAMETER draft_num_predict since 0.30.0; from
0.34.1 (pull requests 14969 and 18448) `ollama create` refuses ADAPTER ("LoRA adapters are no
longer supported") and typical_p ("typical_p is no longer supported").

The same module holds Ollama's model-name rules (types/model/name.go), used by the test double.
"""

from __future__ import annotations

import math
import os
import re
import struct
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from lorahelpers.modelfile import version_tuple

COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser",
            "parameter", "message", "requires")
NEWEST = "0.34.2"
ERR_ROLE = 'message role must be one of "system", "user", or "assistant"'
# api.Options (and its embedded Runner) at the time of writing: json name -> Go kind.
PARAMETER_KINDS = {
    "num_keep": "int", "seed": "int", "num_predict": "int", "top_k": "int",
    "top_p": "float", "min_p": "float", "typical_p": "float", "repeat_last_n": "int",
    "temperature": "float", "repeat_penalty": "float", "presence_penalty": "float",
    "frequency_penalty": "float", "stop": "list",
    "num_ctx": "int", "num_batch": "int", "num_gpu": "int", "main_gpu": "int",
    "use_mmap": "bool", "num_thread": "int", "draft_num_predict": "int",
}


def _since(version: str, *v: int) -> bool:
    have = version_tuple(version)
    return have == (0, 0, 0) or have >= v


def known_commands(version: str = NEWEST) -> tuple[str, ...]:
    """The Modelfile commands of a release's parser, in the order its error lists them."""
    return tuple(c for c in COMMANDS if not (c == "requires" and not _since(version, 0, 14, 0)
                                             or c == "draft" and not _since(version, 0, 23, 1)))


def err_command(version: str = NEWEST) -> str:
    names = [f'"{c}"' for c in known_commands(version)]
    return f"command must be one of {', '.join(names[:-1])}, or {names[-1]}"


ERR_COMMAND = err_command()


def parameter_kinds(version: str = NEWEST) -> dict:
    kinds = dict(PARAMETER_KINDS)
    if not _since(version, 0, 30, 0):
        del kinds["draft_num_predict"]
    return kinds
DEPRECATED = ("penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock",
              "mirostat", "mirostat_tau", "mirostat_eta")
# Go's unicode.IsSpace, which strings.TrimSpace strips.
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007" \
           "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"

NIL, NAME, VALUE, PARAMETER, MESSAGE, COMMENT = range(6)


class ModelfileError(ValueError):
    """Ollama would refuse this Modelfile; the message is Ollama's own."""


@dataclass
class Modelfile:
    commands: list[tuple[str, str]]
    warnings: list[str] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)

    def values(self, name: str) -> list[str]:
        return [args for cmd, args in self.commands if cmd == name]

    def one(self, name: str) -> str | None:
        found = self.values(name)
        return found[-1] if found else None

    @property
    def messages(self) -> list[dict]:
        out = []
        for args in self.values("message"):
            role, _, content = args.partition(": ")
            out.append({"role": role, "content": content})
        return out


def is_print(ch: str) -> bool:
    """Go's strconv.IsPrint: letters, marks, numbers, punctuation, symbols and ASCII space."""
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


def _is_space(ch):
    return ch in " \t"


def _is_newline(ch):
    return ch in "\r\n"


def _is_alpha(ch):
    return "a" <= ch <= "z" or "A" <= ch <= "Z"


def unquote(s: str) -> tuple[str, bool]:
    if s[:3] == '"""':
        return (s[3:-3], True) if len(s) >= 6 and s[-3:] == '"""' else ("", False)
    if s[:1] == '"':
        return (s[1:-1], True) if len(s) >= 2 and s[-1] == '"' else ("", False)
    return s, True


def _step(ch: str, state: int, version: str = NEWEST):
    """parseRuneForState: (next state, rune to keep or None, error or None)."""
    if state == NIL:
        if ch == "#":
            return COMMENT, None, None
        if _is_space(ch) or _is_newline(ch):
            return NIL, None, None
        return NAME, ch, None
    if state == NAME:
        if _is_alpha(ch):
            return NAME, ch, None
        if _is_space(ch):
            return VALUE, None, None
        return NIL, None, err_command(version)
    if state == VALUE:
        return (NIL, ch, None) if _is_newline(ch) or _is_space(ch) else (VALUE, ch, None)
    if state == PARAMETER:
        if _is_alpha(ch) or ch.isascii() and ch.isdigit() or ch == "_":
            return PARAMETER, ch, None
        return (VALUE, None, None) if _is_space(ch) else (NIL, None, "EOF")
    if state == MESSAGE:
        if _is_alpha(ch):
            return MESSAGE, ch, None
        return (VALUE, None, None) if _is_space(ch) else (NIL, None, "EOF")
    return (NIL, None, None) if _is_newline(ch) else (COMMENT, None, None)


def parse(text: str, version: str = NEWEST) -> Modelfile:
    """The commands of a Modelfile as (name, args) pairs, as Ollama's ParseFile reads them.
    FROM is named "model", MESSAGE args are "role: content", PARAMETER names are kept as
    written (case-sensitive)."""
    text = text.removeprefix("\ufeff")
    commands: list[tuple[str, str]] = []
    state, line, buf, role, name = NIL, 1, [], "", ""
    for ch in text:
        if _is_newline(ch):
            line += 1
        nxt, keep, err = _step(ch, state, version)
        if err == "EOF":
            raise ModelfileError("unexpected EOF: " + "".join(buf))
        if err:
            raise ModelfileError(f"(line {line}): {err}")
        if nxt != state:
            word = "".join(buf)
            if state == NAME:
                if word.lower() not in known_commands(version):
                    raise ModelfileError(f"(line {line}): {err_command(version)}")
                low = word.lower()
                if low == "from":
                    name = "model"
                elif low == "parameter":
                    nxt = PARAMETER
                else:
                    if low == "message":
                        nxt = MESSAGE
                    name = low
            elif state == PARAMETER:
                name = word
            elif state == MESSAGE:
                if word not in ("system", "user", "assistant"):
                    raise ModelfileError(f"(line {line}): {ERR_ROLE}")
                role = word
            elif state == VALUE:
                value, ok = unquote(word.strip(GO_SPACE))
                if not ok or _is_space(keep):
                    buf.append(keep)
                    continue
                if role:
                    value, role = f"{role}: {value}", ""
                commands.append((name, value))
            buf = []
            state = nxt
        if keep is not None and is_print(keep):
            buf.append(keep)

    if state == VALUE:
        value, ok = unquote("".join(buf).strip(GO_SPACE))
        if not ok:
            raise ModelfileError("unexpected EOF")
        commands.append((name, f"{role}: {value}" if role else value))
    elif state not in (NIL, COMMENT):
        raise ModelfileError("unexpected EOF")
    if not any(cmd == "model" for cmd, _ in commands):
        raise ModelfileError("no FROM line")
    return Modelfile(commands)


def check(text: str, version: str = NEWEST) -> Modelfile:
    """parse() plus what `ollama create` checks before sending anything: parameter names and
    types, REQUIRES as semver, and from 0.34.1 no ADAPTER and no typical_p. The result's
    .parameters is what the CLI would send."""
    mf = parse(text, version)
    refuses = _since(version, 0, 34, 1)
    for cmd, args in mf.commands:
        if cmd == "adapter" and refuses:
            raise ModelfileError("LoRA adapters are no longer supported")
        if cmd == "typical_p" and refuses:
            raise ModelfileError("typical_p is no longer supported")
        if cmd in ("model", "draft", "adapter", "template", "system", "license", "renderer",
                   "parser", "message"):
            continue
        if cmd == "requires":
            if not re.fullmatch(r"v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?", args):
                raise ModelfileError("requires must be a valid semver (e.g. 0.14.0)")
            continue
        if cmd in DEPRECATED:
            mf.warnings.append(f"warning: parameter {cmd} is deprecated")
            continue
        value = format_param(cmd, args, version)
        if isinstance(value, list):
            mf.parameters.setdefault(cmd, []).extend(value)
        else:
            mf.parameters[cmd] = value
    return mf


_DIGITS = r"\d(?:_?\d)*"
_HEX = r"[0-9a-fA-F](?:_?[0-9a-fA-F])*"
_GO_FLOAT = re.compile(
    rf"[+-]?(?:(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][+-]?{_DIGITS})?"
    rf"|0[xX]_?(?:{_HEX}(?:\.(?:{_HEX})?)?|\.{_HEX})[pP][+-]?{_DIGITS})")
_GO_SPECIAL = re.compile(r"[+-]?(?:inf|infinity)|nan", re.IGNORECASE)


def go_parse_float32(s: str) -> float:
    """strconv.ParseFloat(s, 32); ValueError where Go returns an error."""
    if _GO_SPECIAL.fullmatch(s):
        return float(s)
    if not _GO_FLOAT.fullmatch(s):
        raise ValueError(s)
    clean = s.replace("_", "")
    body = clean.lstrip("+-")
    value = float.fromhex(clean) if body[:2].lower() == "0x" else float(clean)
    try:
        single = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        single = math.inf
    if math.isinf(single) and not math.isinf(value):
        raise ValueError(s)  # ErrRange: too large for a float32
    return single


def go_parse_int64(s: str) -> int:
    """strconv.ParseInt(s, 10, 64)."""
    if not re.fullmatch(r"[+-]?[0-9]+", s) or not -(2**63) <= int(s) < 2**63:
        raise ValueError(s)
    return int(s)


def format_param(name: str, value: str, version: str = NEWEST):
    """api.FormatParams for one `PARAMETER name value` line."""
    kind = parameter_kinds(version).get(name)
    if kind is None:
        raise ModelfileError(f"unknown parameter '{name}'")
    try:
        if kind == "float":
            return go_parse_float32(value)
        if kind == "int":
            return go_parse_int64(value)
        if kind == "bool":
            return {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
                    "0": False, "f": False, "F": False, "FALSE": False, "false": False,
                    "False": False}[value]
    except (ValueError, KeyError):
        raise ModelfileError(f"invalid {kind} value [{value}]") from None
    return [value]


def request(text: str, modelfile_dir: str | Path, version: str = NEWEST) -> dict:
    """What `ollama create NAME -f Modelfile` sends, before file names become blob digests:
    {"from": name} when FROM is not an existing path, else {"files": [absolute paths]}, plus
    adapters, template, system, parameters, messages, license. Paths resolve like Ollama's
    expandPath: absolute, ~ (home), or relative to the Modelfile's directory."""
    mf = check(text, version)
    out: dict = {}
    for cmd, args in mf.commands:
        if cmd in ("model", "adapter"):
            path = Path(args).expanduser() if args.startswith("~") else Path(modelfile_dir) / args
            path = Path(os.path.abspath(path))  # filepath.Join and Abs also clean the path
            if cmd == "model" and not path.exists():
                out["from"] = args
            elif not path.exists():
                raise ModelfileError(f"stat {path}: no such file or directory")
            else:
                out.setdefault("files" if cmd == "model" else "adapters", []).append(str(path))
        elif cmd in ("template", "system"):
            out[cmd] = args
        elif cmd == "license":
            out.setdefault("license", []).append(args)
    if mf.parameters:
        out["parameters"] = mf.parameters
    if mf.messages:
        out["messages"] = mf.messages
    return out


# ---- model names (types/model/name.go) ----

def _valid_part(kind: str, s: str) -> bool:
    limit = 350 if kind == "host" else 80
    if not 1 <= len(s.encode()) <= limit:
        return False
    raw = s.encode()
    for i, byte in enumerate(raw):
        c = chr(byte)
        alnum = c.isascii() and (c.isalnum() or c == "_")
        if i == 0:
            if not alnum:
                return False
        elif c in "_-":
            continue
        elif c == ".":
            if kind == "namespace":
                return False
        elif c == ":":
            if kind != "host":
                return False
        elif not alnum:
            return False
    return True


def parse_name(s: str) -> dict:
    """ParseName: host/namespace/model:tag with Ollama's defaults filled in."""
    parts = {"host": "", "namespace": "", "model": "", "tag": ""}

    def cut(text, sep):
        i = text.rfind(sep)
        if i < 0:
            return text, "", False
        return text[:i] or "!MISSING!", text[i + 1:] or "!MISSING!", True

    if s.rfind(":") > s.rfind("/"):
        s, parts["tag"], _ = cut(s, ":")
    s, parts["model"], ok = cut(s, "/")
    if not ok:
        parts["model"] = s
    else:
        s, parts["namespace"], ok = cut(s, "/")
        if not ok:
            parts["namespace"] = s
        else:
            scheme, sep, host = s.partition("://")
            parts["host"] = host if sep else scheme
    defaults = {"host": "registry.ollama.ai", "namespace": "library", "tag": "latest"}
    return {k: v or defaults.get(k, "") for k, v in parts.items()}


def name_is_valid(s: str) -> bool:
    return all(_valid_part(kind, part) for kind, part in parse_name(s).items())


def display_shortest(s: str) -> str:
    """Name.DisplayShortest: model:tag, with namespace (and host) when not the defaults."""
    n = parse_name(s)
    if n["host"].lower() != "registry.ollama.ai":
        prefix = f"{n['host']}/{n['namespace']}/"
    elif n["namespace"].lower() != "library":
        prefix = f"{n['namespace']}/"
    else:
        prefix = ""
    return f"{prefix}{n['model']}:{n['tag']}"
