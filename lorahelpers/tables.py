"""Reading tables for the data layer: files (JSON, JSONL, CSV, TSV, XLSX workbooks and their
sheets, Parquet), pandas DataFrames, `datasets.Dataset`s and Hub dataset names, with errors that
name the file, the row and the fix, and a report of what was read; and saving a file uploaded
into a notebook. Use it through lorahelpers.data. No torch here.

Row numbers count data rows from 1 (the header is not a data row); messages also give the
line of a text file or the row of a sheet, where the row really is.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import difflib
import html
import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lorahelpers.atomic import write_atomic
from lorahelpers.errors import DataError

SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".txt", ".xlsx", ".parquet")
# Cells that mean "no value" in CSV files; "NA" is left alone (it is also a real word).
_NA_MARKERS = {"nan", "NaN", "None", "NULL", "null", "#N/A", "N/A", "n/a"}


@dataclass
class DataReport:
    """What happened to the rows: read, kept, dropped by reason, duplicates, warnings.
    Shows as a table in notebooks and as plain text in a terminal."""

    source: str = "<rows>"
    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    warnings: list[str] = field(default_factory=list)
    format: str = ""
    lines: list[int] | None = field(default=None, repr=False)  # where each data row is
    line_word: str = "line"

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    def where(self, index: int) -> str:
        """'row 5 (line 6)' for the data row at 0-based `index`."""
        place = f"row {index + 1}"
        if self.lines is not None and index < len(self.lines):
            place += f" ({self.line_word} {self.lines[index]})"
        return place

    def _rows(self) -> list[tuple[str, str]]:
        dropped = "; ".join(f"{k}: {v}" for k, v in sorted(self.dropped.items())) or "0"
        rows = [("source", self.source), ("format", self.format or "-"),
                ("rows read", str(self.rows_read)), ("rows kept", str(self.rows_kept)),
                ("dropped", dropped), ("duplicates", str(self.duplicates))]
        rows += [("warning", w) for w in self.warnings]
        return rows

    def __str__(self) -> str:
        rows = self._rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)

    def _repr_html_(self) -> str:
        cells = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                        f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
                        for k, v in self._rows())
        return f"<table>{cells}</table>"


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


def load_table(source, sheet: str | int | None = None, split: str = "train"):
    """Read rows into a DataFrame plus a DataReport. `source` is a file path (.json, .jsonl,
    .csv, .tsv, .xlsx with `sheet` as name or 0-based index, .parquet), a DataFrame, a list of
    dicts, a `datasets.Dataset`, or a Hub dataset name (loaded with `split`).

    >>> df, report = load_table("data/table.csv")  # doctest: +SKIP
    """
    if isinstance(source, pd.DataFrame):
        df, report = source.reset_index(drop=True).copy(), DataReport("<DataFrame>")
    elif isinstance(source, list):
        df, report = pd.DataFrame.from_records(source), DataReport("<list of rows>")
    elif type(source).__module__.startswith("datasets"):
        if not hasattr(source, "to_pandas"):
            raise DataError(f"{type(source).__name__} holds several splits "
                            f"({', '.join(source)}). Fix: pass one, e.g. data['train']")
        df, report = source.to_pandas(), DataReport(f"<datasets.Dataset {len(source)} rows>")
    elif isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if path.is_file():
            df, report = _read_file(path, sheet)
        elif path.is_dir():
            raise DataError(f"{source} is a folder. Fix: give the path of a file inside it "
                            f"({', '.join(SUFFIXES)})")
        elif path.suffix.lower() in SUFFIXES + (".xls",) or "\\" in str(source) \
                or str(source).startswith((".", "/", "~")):
            raise DataError(f"{source}: file not found (looked in {Path.cwd()}). Fix: check the "
                            "path, or upload the file next to the notebook")
        else:
            df, report = _load_hub(str(source), split)
    else:
        raise DataError(f"cannot read rows from a {type(source).__name__}. Fix: pass a file "
                        "path, a DataFrame, a list of dicts or a datasets.Dataset")
    df.columns = [str(c).strip() for c in df.columns]
    report.rows_read = report.rows_kept = len(df)
    if len(df) == 0:
        raise DataError(f"{report.source}: no data rows. Fix: add rows below the header")
    return df, report


def _load_hub(name: str, split: str):
    import datasets  # slow to import and only needed here (Colab)

    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise DataError(f"{name}: could not load this Hub dataset ({exc}). Fix: check the name "
                        "and your network, or give a local file path") from exc
    return data.to_pandas(), DataReport(f"hub:{name}[{split}]")


def _read_file(path: Path, sheet):
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise DataError(f"{path}: old .xls workbooks are not supported. Fix: save it as .xlsx "
                        "or CSV")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty. Fix: check that it was saved or uploaded "
                        "completely")
    if suffix in (".csv", ".tsv", ".txt"):
        return _read_csv(path, "\t" if suffix == ".tsv" else None)
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".xlsx":
        return _read_xlsx(path, sheet)
    if suffix == ".parquet":
        try:
            return pd.read_parquet(path), DataReport(str(path))
        except Exception as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc}). Fix: write it again "
                            "with pandas.DataFrame.to_parquet") from exc
    raise DataError(f"{path}: unknown file type {suffix!r}. Fix: use one of "
                    f"{', '.join(SUFFIXES)}")


def _decode(path: Path, report: DataReport) -> str:
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = f"byte 0x{raw[exc.start]:02x} at offset {exc.start}"
    for encoding, label in (("cp1252", "cp1252 (Windows-1252)"), ("latin-1", "latin-1")):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        report.warnings.append(f"{path.name} is not UTF-8 ({bad}); read it as {label}. Save it "
                               "as UTF-8 to be sure every character is right")
        return text
    raise AssertionError("latin-1 decodes any bytes")


def _read_csv(path: Path, delimiter: str | None):
    report = DataReport(str(path))
    text = _decode(path, report)
    if not text.strip():
        raise DataError(f"{path}: the file holds only blank lines. Fix: add a header and rows")
    if delimiter is None:
        first = text.lstrip().split("\n", 1)[0]
        try:
            delimiter = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
        if delimiter not in first:
            delimiter = next((d for d in ",;\t|" if d in first), ",")
        if delimiter != ",":
            report.warnings.append(f"columns are separated by {delimiter!r}")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header, rows, lines = None, [], []
    for record in reader:
        if not any(cell.strip() for cell in record):
            if header is not None:
                report.drop("blank row")
            continue
        if header is None:
            header, header_line = [c.strip() for c in record], reader.line_num
            continue
        if len(record) != len(header):
            raise DataError(
                f"{path}, line {reader.line_num}: {len(record)} fields where the header on line "
                f"{header_line} has {len(header)}. Fix: put quotes around values that contain "
                f"{delimiter!r} or line breaks, and give every row the same columns")
        rows.append([None if c.strip() in _NA_MARKERS else c.strip() for c in record])
        lines.append(reader.line_num)
    if header is None:
        raise DataError(f"{path}: every cell is empty. Fix: add a header and rows")
    header, rows = _check_header(path, header, rows, f"line {header_line}")
    report.lines = lines
    return pd.DataFrame(rows, columns=header, dtype=object), report


def _looks_like_value(cell) -> bool:
    if not isinstance(cell, str):
        return cell is not None
    try:
        float(cell.replace(",", ""))
        return True
    except ValueError:
        pass
    try:
        dt.date.fromisoformat(cell[:10])
        return True
    except ValueError:
        return cell.lower() in ("true", "false")


def _check_header(path, header, rows, where):
    """Checks the header row: names present, unique, and not data. Columns with neither a
    name nor any value (stray empty columns in spreadsheets) are dropped."""
    keep = [i for i, name in enumerate(header)
            if render_value(name) or any(i < len(r) and render_value(r[i]) for r in rows)]
    header = [header[i] for i in keep]
    rows = [[r[i] if i < len(r) else None for i in keep] for r in rows]
    values = [h for h in header if _looks_like_value(h)]
    if values and len(values) * 2 >= len(header):
        raise DataError(f"{path}, {where}: the first row should name the columns but holds "
                        f"values ({', '.join(repr(render_value(v)) for v in values[:3])}). "
                        "Fix: add a header row with column names")
    names = [render_value(h) for h in header]
    for i, name in enumerate(names):
        if not name:
            raise DataError(f"{path}, {where}, column {i + 1}: the column has values but no "
                            "name. Fix: give it a name in the header row")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{path}, {where}: column names appear twice: {', '.join(dupes)}. "
                        "Fix: give each column its own name")
    return names, rows


def _read_jsonl(path: Path):
    report = DataReport(str(path))
    text = _decode(path, report)
    records, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {number}, column {exc.colno}: not valid JSON "
                            f"({exc.msg}). Fix: one JSON object per line, e.g. "
                            '{"instruction": "...", "output": "..."}') from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object {{...}}, got "
                            f"{type(record).__name__}. Fix: one object per line")
        records.append(record)
        lines.append(number)
    if not records:
        raise DataError(f"{path}: no JSON objects in the file. Fix: one object per line")
    report.lines = lines
    return pd.DataFrame.from_records(records), report


def _read_json(path: Path):
    report = DataReport(str(path))
    text = _decode(path, report)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON Lines saved with a .json name
            df, jsonl_report = _read_jsonl(path)
            jsonl_report.warnings.append(f"{path.name} holds JSON Lines; read it as .jsonl")
            return df, jsonl_report
        raise DataError(f"{path}, line {exc.lineno}, column {exc.colno}: not valid JSON "
                        f"({exc.msg}). Fix: a list of objects [{{...}}, {{...}}]") from exc
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a list of objects, got an object with keys "
                            f"{', '.join(list(data)[:5])}. Fix: a list [{{...}}, {{...}}]")
        report.warnings.append(f"rows read from the key {lists[0]!r}")
        data = data[lists[0]]
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty list of objects. Fix: a list "
                        "[{...}, {...}]")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"{path}, row {i + 1}: expected an object {{...}}, got "
                            f"{type(row).__name__}. Fix: every list item is an object")
    return pd.DataFrame.from_records(data), report


def sheet_names(source) -> list[str]:
    """The sheet names of an .xlsx workbook, in workbook order; [] for any other source (a
    CSV or JSON file has no sheets).

    >>> sheet_names("data/table.xlsx")  # doctest: +SKIP
    ['orders', 'held_out']
    """
    if not isinstance(source, (str, Path)) or Path(source).suffix.lower() != ".xlsx":
        return []
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"{source}: file not found (looked in {Path.cwd()}). Fix: check the "
                        "path, or upload the file next to the notebook")
    book = _open_workbook(path)
    try:
        return list(book.sheetnames)
    finally:
        book.close()


def save_upload(uploaded, directory) -> Path | None:
    """Write an uploaded file into `directory` and return its path; None when nothing was
    uploaded. `uploaded` is what google.colab.files.upload() returns ({name: bytes}) or an
    ipywidgets FileUpload's value (a tuple of {"name", "content"} dicts in ipywidgets 8, a
    {name: {"content": ...}} dict in 7). With several files the first is kept.

    >>> save_upload({"orders.csv": b"a,b\\n1,2\\n"}, "uploads").as_posix()
    'uploads/orders.csv'
    """
    if not uploaded:
        return None
    if isinstance(uploaded, dict):
        name, content = next(iter(uploaded.items()))
        if isinstance(content, dict):
            content = content.get("content", b"")
    else:
        first = next(iter(uploaded))
        name, content = first["name"], first["content"]
    name = Path(str(name).replace("\\", "/")).name
    if Path(name).suffix.lower() not in SUFFIXES:
        raise DataError(f"{name}: unknown file type {Path(name).suffix or '(none)'!r}. Fix: "
                        f"upload one of {', '.join(SUFFIXES)} (save Excel files as .xlsx)")
    data = bytes(content)
    if not data:
        raise DataError(f"{name}: the upload is empty. Fix: upload the file again")
    return write_atomic(Path(directory) / name, data)


def _open_workbook(path: Path, data_only: bool = True):
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=data_only)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .xlsx workbook ({type(exc).__name__}: {exc}). "
                        "Fix: open it in Excel or LibreOffice and save it again as .xlsx, or "
                        "export it as CSV") from exc


def _read_xlsx(path: Path, sheet) -> tuple:
    book = _open_workbook(path)
    try:
        names = book.sheetnames
        if sheet is None:
            name = names[0]
        elif isinstance(sheet, int) and not isinstance(sheet, bool):
            if not -len(names) <= sheet < len(names):
                raise DataError(f"{path}: no sheet at index {sheet} (0-based); the workbook has "
                                f"{len(names)}: {', '.join(names)}. Fix: pass sheet= a name or "
                                f"an index from 0 to {len(names) - 1}")
            name = names[sheet]
        elif sheet in names:
            name = sheet
        else:
            close = difflib.get_close_matches(str(sheet), names, n=1, cutoff=0.4)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise DataError(f"{path}: no sheet named {sheet!r}; the sheets are "
                            f"{', '.join(map(repr, names))}.{hint} Fix: pass sheet= one of "
                            "those names or a 0-based index")
        cells = _sheet_cells(path, book, name)
    finally:
        book.close()
    _check_formulas(path, name, cells)
    report = DataReport(f"{path} [{name}]")
    report.line_word = "sheet row"
    filled = [i for i, r in enumerate(cells) if any(render_value(c) for c in r)]
    if not filled:
        raise DataError(f"{path}: sheet {name!r} is empty. Fix: choose another sheet with "
                        f"sheet=..., one of {', '.join(map(repr, names))}")
    top = filled[0]
    body = [i for i in filled if i > top]
    if filled[-1] - top > len(body):
        report.drop("blank row", filled[-1] - top - len(body))
    header, rows = _check_header(path, cells[top], [cells[i] for i in body],
                                 f"sheet {name!r} row {top + 1}")
    report.lines = [i + 1 for i in body]
    return pd.DataFrame(rows, columns=header, dtype=object), report


def _sheet_cells(path: Path, book, name: str) -> list[list]:
    try:
        return [list(r) for r in book[name].iter_rows(values_only=True)]
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise DataError(f"{path}: the workbook is damaged ({exc}). Fix: save it again as .xlsx "
                        "or export it as CSV") from exc


def _check_formulas(path: Path, name: str, cells: list[list]) -> None:
    """Refuses cells that hold a formula whose value was never saved. Excel and LibreOffice
    save each formula's value beside it; a program that writes formulas (openpyxl, for one)
    saves none, so until the workbook is opened and saved in a spreadsheet those cells read as
    empty, and the rows would be dropped for a reason the user cannot see."""
    if all(c is not None for row in cells for c in row):
        return
    book = _open_workbook(path, data_only=False)
    try:
        formulas = _sheet_cells(path, book, name)
    finally:
        book.close()
    unsaved = [(i, j) for i, row in enumerate(formulas) for j, f in enumerate(row)
               if f is not None and (i >= len(cells) or j >= len(cells[i]) or cells[i][j] is None)]
    if unsaved:
        raise DataError(f"{path}: sheet {name!r}: {len(unsaved)} cell(s) hold formulas whose "
                        f"values were never saved, so they read as empty: "
                        f"{_cell_list(cells, unsaved)}. The workbook was written by a program and "
                        "not opened in a spreadsheet since. Fix: open it in Excel or LibreOffice "
                        "and save it (that stores the values), or write the values instead of "
                        "formulas")


def _cell_list(cells: list[list], places: list[tuple[int, int]]) -> str:
    """'column 'answer' (C): C2, C3, C4 and 37 more' for each column among `places`."""
    from openpyxl.utils import get_column_letter

    header = next((row for row in cells if any(render_value(c) for c in row)), [])
    by_column: dict[int, list[str]] = {}
    for i, j in places:
        by_column.setdefault(j, []).append(f"{get_column_letter(j + 1)}{i + 1}")
    parts = []
    for j, refs in sorted(by_column.items()):
        title = render_value(header[j]) if j < len(header) else ""
        label = f"column {title!r} ({get_column_letter(j + 1)})" if title else \
            f"column {get_column_letter(j + 1)}"
        more = f" and {len(refs) - 3} more" if len(refs) > 3 else ""
        parts.append(f"{label}: {', '.join(refs[:3])}{more}")
    return "; ".join(parts)
