"""How one table cell becomes text: render_value for a typed value (JSON, Parquet, DataFrames,
workbook cells read raw), shown for a workbook cell as the sheet shows it (its number format
applied: percent, currency, thousands separators, fixed decimals, dates in the cell's date
format; booleans TRUE/FALSE). No torch, no pandas import beyond what render_value checks.

Number formats are those Excel writes into a workbook (the same in every language version:
"." decimal point, "," thousands separator); the digits are shown with "." and "," whatever the
reader's regional settings, which the file does not record.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import math
import re

import numpy as np
import pandas as pd


def render_value(value) -> str:
    """A table cell as a person would write it: 3 not "3.0", 0.1 not 0.1000000001, dates as
    ISO, booleans as yes/no, NaN/None/blank as "", whitespace trimmed.

    >>> [render_value(v) for v in (3.0, 0.1, None, True, dt.date(2024, 5, 1), " a ")]
    ['3', '0.1', '', 'yes', '2024-05-01', 'a']
    """
    if value is None or value is pd.NaT or value is pd.NA:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):  # includes pandas.Timestamp
        if (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0) \
                and value.tzinfo is None:
            return value.date().isoformat()
        spec = "minutes" if (value.second, value.microsecond) == (0, 0) else "auto"
        return value.isoformat(sep=" ", timespec=spec)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return "" if value.is_nan() else format(value.normalize(), "f")
    if hasattr(value, "dtype") and hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return _render_number(value)  # numpy scalar: keep its own precision
    if isinstance(value, (int, float)):
        return _render_number(value)
    if isinstance(value, (list, tuple, dict)) or hasattr(value, "tolist"):
        plain = value.tolist() if hasattr(value, "tolist") else value
        return json.dumps(plain, ensure_ascii=False, default=str)
    return str(value).strip()


def _render_number(value) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    as_float = float(value)
    if math.isnan(as_float):
        return ""
    if math.isinf(as_float):
        return "infinity" if as_float > 0 else "-infinity"
    if as_float.is_integer() and abs(as_float) < 1e16:
        return str(int(as_float))
    if 1e-6 <= abs(as_float) < 1e16:
        # shortest text that reads back as the same value at the value's own precision
        return np.format_float_positional(value, unique=True, trim="-")
    return repr(as_float)


# ---- a workbook cell as the sheet shows it -------------------------------------------------

# openpyxl names built-in formats 14 and 22 by these US patterns; Excel shows them in the
# reader's regional short date, which the file does not record, so they read as ISO dates.
REGIONAL = {"mm-dd-yy": "yyyy-mm-dd", "m/d/yy h:mm": "yyyy-mm-dd hh:mm"}


def shown(value, number_format: str = "General") -> str:
    """A workbook cell's value as the sheet shows it (its number format applied): text as
    written, booleans TRUE/FALSE as Excel shows them, numbers and dates formatted.

    >>> shown(0.25, "0%"), shown(1234.5, '#,##0.00 "EUR"'), shown(True), shown(3.0)
    ('25%', '1,234.50 EUR', 'TRUE', '3')
    >>> shown(dt.datetime(2025, 6, 4), "dd.mm.yyyy"), shown(-5, '"$"#,##0_);("$"#,##0)')
    ('04.06.2025', '($5)')
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    number_format = REGIONAL.get(number_format, number_format or "General")
    if isinstance(value, (dt.datetime, dt.date, dt.time, dt.timedelta)):
        return _format_date(value, number_format)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return _format_number(value, number_format).strip()
    return render_value(value)


def _general(x) -> str:
    """Excel's General format with a wide column: up to 15 significant digits."""
    if isinstance(x, int) or (x.is_integer() and abs(x) < 1e15):
        return str(int(x))
    text = f"{x:.15g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}E{int(exponent):+03d}"
    return text


@functools.lru_cache(maxsize=512)
def _sections(number_format: str) -> tuple[str, ...]:
    """The ;-separated sections of a format (positive; negative; zero; text)."""
    parts, current, i = [], [], 0
    while i < len(number_format):
        c = number_format[i]
        if c == '"':
            end = number_format.find('"', i + 1)
            end = len(number_format) if end < 0 else end
            current.append(number_format[i:end + 1])
            i = end + 1
            continue
        if c in "\\_*":
            current.append(number_format[i:i + 2])
            i += 2
            continue
        if c == ";":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    return tuple(parts + ["".join(current)])


def _format_number(x, number_format: str) -> str:
    if number_format.lower() in ("general", "@"):
        return _general(x)
    sections = _sections(number_format)
    sign = ""
    if x < 0 and len(sections) >= 2 and sections[1]:
        section, x = sections[1], -x
    elif x == 0 and len(sections) >= 3:
        section = sections[2]
    else:
        section, sign = sections[0], "-" if x < 0 else ""
        x = abs(x)
    spec = _number_spec(section)
    if spec is None:  # fractions and other patterns not rendered here
        return sign + _general(x)
    number = _digits(decimal.Decimal(repr(x)), spec)
    if sign and not number.strip("0.,"):
        sign = ""  # -0.001 shown as 0.00
    return sign + spec["prefix"] + number + spec["suffix"]


_NUMBER_TOKEN = re.compile(r'"[^"]*"?|\\.|_.|\*.|\[[^\]]*\]|[Ee][+-]0+|.', re.S)


def _literal(token: str) -> str | None:
    """The text a format token shows as it is ("quoted", \\x, _x as the width of a space), or
    None for a token that is not a literal."""
    if token[0] == '"':
        return token.strip('"')
    if token[0] == "\\":
        return token[1:]
    if token[0] == "_":
        return " "
    return None


@functools.lru_cache(maxsize=512)
def _number_spec(section: str) -> dict | None:
    """A number section's parts: literal prefix and suffix, integer and decimal placeholders,
    thousands separator, scaling (% and trailing commas), exponent."""
    tokens = []
    for token in _NUMBER_TOKEN.findall(section):
        if (text := _literal(token)) is not None:
            tokens.append(("lit", text))
        elif token[0] == "[":
            if token.startswith("[$"):  # [$€-407]: a currency symbol and a locale
                tokens.append(("lit", token[2:-1].split("-")[0]))
        elif token[0] in "Ee" and len(token) > 1:
            tokens.append(("exp", token))
        elif token in ("/",):
            return None
        elif token in "0#?.,%":
            tokens.append((token, token))
        elif token not in ("*", "@") and token[0] != "*":
            tokens.append(("lit", token))
    places = [i for i, (kind, _) in enumerate(tokens) if kind in "0#?."]
    if not places:
        return {"prefix": "", "suffix": "".join(t for k, t in tokens if k in ("lit", "%")),
                "int": [], "dec": "", "dot": False, "thousands": False, "scale": 0,
                "percent": 0, "exp": None}
    first, last = places[0], places[-1]
    body = tokens[first:last + 1]
    dot = next((i for i, (k, _) in enumerate(body) if k == "."), None)
    int_part = body if dot is None else body[:dot]
    dec = "".join(t for k, t in (body[dot + 1:] if dot is not None else []) if k in "0#?")
    trailing = 0
    for kind, _ in tokens[last + 1:]:
        if kind != ",":
            break
        trailing += 1
    return {"prefix": "".join(t for k, t in tokens[:first] if k in ("lit", "%")),
            "suffix": "".join(t for k, t in tokens[last + 1:] if k in ("lit", "%", "exp")
                              and k != "exp"),
            "int": [(k, t) for k, t in int_part if k != ","],
            "dec": dec, "dot": dot is not None,
            "thousands": any(k == "," for k, _ in int_part[:-1]),
            "scale": trailing + (1 if int_part and int_part[-1][0] == "," else 0),
            "percent": sum(k == "%" for k, _ in tokens),
            "exp": next((t for k, t in tokens if k == "exp"), None)}


def _digits(value: decimal.Decimal, spec: dict) -> str:
    value = value * 100 ** spec["percent"] / 1000 ** spec["scale"]
    if spec["exp"]:
        return _scientific(value, spec)
    step = decimal.Decimal(1).scaleb(-len(spec["dec"]))
    rounded = value.quantize(step, rounding=decimal.ROUND_HALF_UP)
    whole, _, frac = f"{rounded:f}".partition(".")
    text = _fill_int("" if whole == "0" else whole, spec)
    if spec["dot"]:
        text += "." + _fill_dec(frac, spec["dec"])
    return text


def _fill_int(digits: str, spec: dict) -> str:
    places = [t for k, t in spec["int"] if k in "0#?"]
    if spec["thousands"]:
        digits = digits.rjust(places.count("0"), "0")
        return f"{int(digits):,}" if digits else ""
    out, rest = [], digits
    for kind, text in reversed(spec["int"]):
        if kind == "lit":
            out.append(text)
            continue
        out.append(rest[-1:] or {"0": "0", "#": "", "?": " "}[kind])
        rest = rest[:-1]
    return rest + "".join(reversed(out))


def _fill_dec(frac: str, places: str) -> str:
    out = list(frac)
    for i in range(len(places) - 1, -1, -1):
        if out[i] != "0" or places[i] == "0":
            break
        out[i] = "" if places[i] == "#" else " "
    return "".join(out)


def _scientific(value: decimal.Decimal, spec: dict) -> str:
    decimals = len(spec["dec"])
    mantissa, exponent = f"{value:.{decimals}E}".split("E")
    sign = "-" if int(exponent) < 0 else ("+" if spec["exp"][1] == "+" else "")
    return f"{mantissa}E{sign}{abs(int(exponent)):0{len(spec['exp']) - 2}d}"


# ---- dates and times -----------------------------------------------------------------------

_MONTHS = ("January February March April May June July August September October November "
           "December").split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_DATE_TOKEN = re.compile(r'"[^"]*"?|\\.|_.|\*.|\[[^\]]*\]|am/pm|a/p|yyyy|yy|m{1,5}|d{1,4}|'
                         r'h{1,2}|s{1,2}|\.0+|.', re.I | re.S)


@functools.lru_cache(maxsize=256)
def _date_tokens(section: str) -> tuple[tuple[str, str], ...]:
    """(kind, text) tokens of a date section, with m/mm resolved to minutes where Excel reads
    them so (after an hour, or before seconds)."""
    tokens = []
    for token in _DATE_TOKEN.findall(section):
        low = token.lower()
        if (text := _literal(token)) is not None:
            tokens.append(("lit", text))
        elif token[0] == "*":
            continue
        elif token[0] == "[":
            if low[1:-1] in ("h", "hh", "m", "mm", "s", "ss"):
                tokens.append(("elapsed", low[1:-1]))
        elif low[0] in "ymdhs" and low.strip(low[0]) == "" or low in ("am/pm", "a/p") \
                or low.startswith(".0"):
            tokens.append((low, token))
        else:
            tokens.append(("lit", token))
    parts = [i for i, (k, _) in enumerate(tokens) if k != "lit"]
    for n, i in enumerate(parts):
        if tokens[i][0] in ("m", "mm"):
            before = tokens[parts[n - 1]][0] if n else ""
            after = tokens[parts[n + 1]][0] if n + 1 < len(parts) else ""
            if before in ("h", "hh", "elapsed") or after in ("s", "ss"):
                tokens[i] = ("min" + tokens[i][0], tokens[i][1])
    return tuple(tokens)


def _format_date(value, number_format: str) -> str:
    parts, twelve = _date_formatter(_sections(number_format)[0])
    if parts is None:
        return render_value(value)
    if isinstance(value, dt.timedelta):
        moment, elapsed = dt.datetime(1899, 12, 30) + value, value
    elif isinstance(value, dt.datetime):
        moment, elapsed = value, None
    elif isinstance(value, dt.date):
        moment, elapsed = dt.datetime(value.year, value.month, value.day), None
    else:
        moment, elapsed = dt.datetime.combine(dt.date(1899, 12, 30), value), None
    hour = (moment.hour % 12 or 12) if twelve else moment.hour
    return "".join(p if isinstance(p, str) else p(moment, hour, elapsed) for p in parts)


def _seconds(m: dt.datetime, elapsed) -> int:
    """Seconds of an elapsed time ([h]:mm), or since the moment's midnight."""
    if elapsed is not None:
        return int(elapsed.total_seconds())
    return m.hour * 3600 + m.minute * 60 + m.second


_DATE_PARTS = {
    "yyyy": lambda m, h, e: f"{m.year:04d}",
    "yy": lambda m, h, e: f"{m.year % 100:02d}", "m": lambda m, h, e: str(m.month),
    "mm": lambda m, h, e: f"{m.month:02d}", "mmm": lambda m, h, e: _MONTHS[m.month - 1][:3],
    "mmmm": lambda m, h, e: _MONTHS[m.month - 1],
    "mmmmm": lambda m, h, e: _MONTHS[m.month - 1][0],
    "d": lambda m, h, e: str(m.day), "dd": lambda m, h, e: f"{m.day:02d}",
    "ddd": lambda m, h, e: _DAYS[m.weekday()][:3], "dddd": lambda m, h, e: _DAYS[m.weekday()],
    "h": lambda m, h, e: str(h), "hh": lambda m, h, e: f"{h:02d}",
    "minm": lambda m, h, e: str(m.minute), "minmm": lambda m, h, e: f"{m.minute:02d}",
    "s": lambda m, h, e: str(m.second), "ss": lambda m, h, e: f"{m.second:02d}",
}


@functools.lru_cache(maxsize=256)
def _date_formatter(section: str) -> tuple[tuple | None, bool]:
    """(texts and functions (moment, hour, elapsed) -> text, 12-hour clock) of a date
    section; (None, False) when it shows no part of a date."""
    tokens = _date_tokens(section)
    if section.lower() == "general" or all(kind == "lit" for kind, _ in tokens):
        return None, False
    return tuple(_date_piece(kind, text) for kind, text in tokens), \
        any(kind in ("am/pm", "a/p") for kind, _ in tokens)


def _date_piece(kind: str, text: str):
    if kind == "lit":
        return text
    if kind in _DATE_PARTS:
        return _DATE_PARTS[kind]
    if kind in ("am/pm", "a/p"):
        am, pm = ("AM", "PM") if kind == "am/pm" else ("A", "P")
        if not text[0].isupper():
            am, pm = am.lower(), pm.lower()
        return lambda m, h, e: am if m.hour < 12 else pm
    if kind == "elapsed":
        unit = {"h": 3600, "m": 60, "s": 1}[text[0]]
        return lambda m, h, e: f"{_seconds(m, e) // unit:0{len(text)}d}"
    if kind.startswith(".0"):
        return lambda m, h, e: "." + f"{m.microsecond / 1e6:.{len(kind) - 1}f}"[2:]
    return _DATE_PARTS["yyyy"] if kind.startswith("y") else text
