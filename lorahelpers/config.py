"""Config files for `python -m lorahelpers train`: TOML or YAML holding the fields of
lorahelpers.params.Params, converted by each field's type, plus `--set field=value` overrides
and a commented starter file. No torch import."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path

from lorahelpers.errors import SettingsError
from lorahelpers.params import Params, default_params

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConfigError(SettingsError):
    """A config file or --set value that cannot be used; the message names the place and ends
    with a fix."""


def _fields(cls=Params) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _parts(kind) -> tuple[type | None, bool]:
    """(base type, None allowed) of a field type: int | None -> (int, True)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return (args[0] if len(args) == 1 else None), True
    return kind, False


def _type_name(kind) -> str:
    base, optional = _parts(kind)
    name = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(
        base, "a list of text" if typing.get_origin(base) is tuple else str(base))
    return name + (" (or none)" if optional else "")


def convert(name: str, value, where: str, cls=Params):
    """`value` (from a file, or the text of --set) as the type of field `name` of the
    dataclass `cls`; a field typed `X | None` also takes None (or the text none/null).

    >>> convert("max_steps", "20", "--set")
    20
    """
    field, kind = _fields(cls)[name]
    base, optional = _parts(kind)
    text = value.strip() if isinstance(value, str) else None
    if value is None or (optional and text is not None and text.lower() in ("none", "null")):
        if optional:
            return None
    else:
        try:
            return _as(base, value, text)
        except (TypeError, ValueError):
            pass
    example = field.default if field.default is not dataclasses.MISSING else None
    raise ConfigError(f"{where}: {name} = {value!r} is not {_type_name(kind)}. "
                      f"Fix: give {name} {_type_name(kind)}, e.g. {_render(example)}.")


def _as(base, value, text):
    if base is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in TRUE + FALSE:
            return text.lower() in TRUE
    elif base is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if text is not None:
            return int(text)
    elif base is float and not isinstance(value, bool):
        if isinstance(value, (int, float)):
            return float(value)
        if text is not None:  # YAML reads 2e-4 (no dot) as text
            return float(text)
    elif base is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif typing.get_origin(base) is tuple:
        if text is not None:
            return tuple(q.strip() for q in text.split(",") if q.strip())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    raise TypeError(value)


def read_file(path) -> dict:
    """The top-level table of a TOML (.toml) or YAML (.yaml, .yml) file.

    >>> read_file("train.toml")["max_steps"]  # doctest: +SKIP
    20
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"{path}: a config file ends in .toml, .yaml or .yml. "
                          "Fix: rename it, or write one with `python -m lorahelpers train "
                          "--print-config > train.toml`.")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror or err}). "
                          "Fix: check the path.") from None
    if suffix == ".toml":
        data = _parse_toml(path, text)
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}. Fix: correct the line shown.") \
                from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: holds {type(data).__name__}, not a table of fields. "
                          "Fix: write one `field: value` per line.")
    return data


def _parse_toml(path: Path, text: str) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError(f"{path}: reading TOML needs Python 3.11 or later. Fix: use a "
                              "YAML file, or `pip install tomli`.") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}. Fix: correct the line shown.") \
            from None


def _unknown(key: str, where: str) -> ConfigError:
    names = list(_fields())
    closest = difflib.get_close_matches(key, names, n=1, cutoff=0.0)
    hint = f" (did you mean {closest[0]!r}?)" if closest else ""
    return ConfigError(f"{where}: unknown field {key!r}{hint}. Fix: use one of the fields "
                       "that `python -m lorahelpers train --print-config` lists.")


def parse_sets(sets) -> dict:
    """`--set field=value` strings as {field: value}, converted by the field's type.

    >>> parse_sets(["max_steps=20", "quants=q8_0,q4_k_m"])
    {'max_steps': 20, 'quants': ('q8_0', 'q4_k_m')}
    """
    out = {}
    for item in sets or ():
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"--set {item!r}: expected field=value. "
                              "Fix: write it as e.g. --set max_steps=20.")
        if key not in _fields():
            raise _unknown(key, f"--set {item!r}")
        out[key] = convert(key, value, f"--set {item!r}")
    return out


def load_config(path=None, sets=(), env=None, runtime=None) -> Params:
    """Params from this machine's defaults, then LORAHELPERS_* variables, then the file, then
    `--set` overrides; validated as Params validates them.

    >>> load_config("train.toml", ["max_steps=20"]).max_steps  # doctest: +SKIP
    20
    """
    values = {}
    if path is not None:
        fields = _fields()
        for key, value in read_file(path).items():
            if key not in fields:
                raise _unknown(key, str(path))
            values[key] = convert(key, value, str(path))
    values |= parse_sets(sets)
    where = str(path) if path is not None else "--set"
    try:
        return default_params(values.pop("kind", "alpaca"), runtime=runtime, env=env, **values)
    except ConfigError:
        raise
    except ValueError as err:
        if "Fix:" in str(err):
            raise ConfigError(f"{where}: {err}") from None
        raise ConfigError(f"{where}: {str(err).rstrip('.')}.",
                          fix=f"change it in {where}.") from None


def _render(value) -> str:
    """A value as TOML (also valid YAML, which the loader reads back the same)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def starter_config(params: Params | None = None) -> str:
    """A commented config file holding every field of `params` (default: this machine's
    defaults), which loads back to the same Params.

    >>> "max_steps = " in starter_config()
    True
    """
    params = params or default_params("alpaca")
    lines = ["# lorahelpers training config: `python -m lorahelpers train THIS_FILE`.",
             "# TOML (a .yaml copy with `key: value` lines works the same). Relative paths are",
             "# taken from the folder the command runs in. Any field can be overridden with",
             "# --set field=value; a field left out gets this machine's default.", ""]
    for f in dataclasses.fields(Params):
        value = getattr(params, f.name)
        lines.append(f"# {f.metadata.get('help', f.name)}")
        if value is None:  # TOML has no null: leaving the field out means "the default"
            lines.append(f"# {f.name} =   (unset: the device default)")
        else:
            lines.append(f"{f.name} = {_render(value)}")
    return "\n".join(lines) + "\n"
