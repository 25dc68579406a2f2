"""Reading tables for the data layer: files (JSON, JSONL, CSV, TSV, XLSX workbooks and their
sheets, Parquet), pandas DataFrames, `datasets.Dataset`s and Hub dataset names, with errors that
name the file, the row and the fix, and a report of what was read; and saving a file uploaded
into a notebook. Use it through lorahelpers.data. No torch here.

The rules, as a person reads a sheet:
- Text is kept as written. Only an empty cell is missing: no word ("None", "null", "NA", "N/A",
  "-", "nan", ...) means missing in any format; a NaN in a numeric column is blank.
  `empty_markers=` names words to read as empty cells, and the report counts them.
- The header is the first row of distinct column names as wide as the data below it: title
  lines, notes and blank rows above the table are skipped with a note; `header_row=` (the line
  of a text file, the row of a sheet, from 1) names it.
- Workbook cells read as the sheet shows them (number formats applied; booleans TRUE/FALSE),
  or as stored with `raw_values=True`; merged ranges fill every cell they span; CSV cells stay
  the text they are (lorahelpers.delimited, lorahelpers.workbook, lorahelpers.cells).

Row numbers count data rows from 1 (the header is not a data row); messages also give the
line of a text file or the row of a sheet, where the row really is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lorahelpers.atomic import write_atomic
from lorahelpers.datareport import DataReport
from lorahelpers.delimited import decode, read_delimited
from lorahelpers.errors import DataError
from lorahelpers.header import check_header, filled, find_header
from lorahelpers.workbook import read_sheet

__all__ = ["DataError", "DataReport", "SUFFIXES", "empty_words", "load_table", "save_upload"]

SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".txt", ".xlsx", ".parquet")


def load_table(source, sheet: str | int | None = None, split: str = "train",
               header_row: int | None = None, *, empty_markers=None, raw_values: bool = False):
    """Read rows into a DataFrame plus a DataReport. `source` is a file path (.json, .jsonl,
    .csv, .tsv, .xlsx with `sheet` as name or 0-based index, .parquet), a DataFrame, a list of
    dicts, a `datasets.Dataset`, or a Hub dataset name (loaded with `split`). `header_row`:
    the line (text files) or sheet row (workbooks) that names the columns, from 1; None: found.
    `empty_markers`: words read as empty cells (a list, or one text "N/A,-"). `raw_values`:
    workbook cells as stored, not as the sheet shows them.

    >>> df, report = load_table([{"answer": "None"}, {"answer": "N/A"}], empty_markers="N/A")
    >>> df["answer"].tolist(), report.emptied
    (['None', ''], {'N/A': 1})
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
        df, report = _read_path(source, sheet, split, header_row, raw_values)
    else:
        raise DataError(f"cannot read rows from a {type(source).__name__}. Fix: pass a file "
                        "path, a DataFrame, a list of dicts or a datasets.Dataset")
    df.columns = [str(c).strip() for c in df.columns]
    report.rows_read = report.rows_kept = len(df)
    if len(df) == 0:
        raise DataError(f"{report.source}: no data rows. Fix: add rows below the header")
    return _read_as_empty(df, empty_words(empty_markers), report), report


def _read_path(source, sheet, split: str, header_row, raw_values: bool):
    path = Path(source).expanduser()
    if path.is_file():
        return _read_file(path, sheet, header_row, raw_values)
    if path.is_dir():
        raise DataError(f"{source} is a folder. Fix: give the path of a file inside it "
                        f"({', '.join(SUFFIXES)})")
    if path.suffix.lower() in SUFFIXES + (".xls",) or "\\" in str(source) \
            or str(source).startswith((".", "/", "~")):
        raise DataError(f"{source}: file not found (looked in {Path.cwd()}). Fix: check the "
                        "path, or upload the file next to the notebook")
    return _load_hub(str(source), split)


def empty_words(markers) -> tuple[str, ...]:
    """The words to read as empty cells, from a list or one comma-separated text.

    >>> empty_words("N/A, -"), empty_words(None)
    (('N/A', '-'), ())
    """
    if markers is None:
        return ()
    words = markers.split(",") if isinstance(markers, str) else [str(m) for m in markers]
    return tuple(dict.fromkeys(w.strip() for w in words if w.strip()))


def _read_as_empty(df: pd.DataFrame, markers: tuple[str, ...], report: DataReport):
    """Cells whose text is one of `markers` become empty; the report counts them by word."""
    report.empty_markers = markers
    if not markers:
        return df
    for column in df.columns:
        values = df[column]
        texts = values.map(lambda v: v.strip() if isinstance(v, str) else None,
                           na_action="ignore")
        hits = texts.isin(markers).fillna(False).astype(bool)
        if hits.any():
            for word, count in texts[hits].value_counts().items():
                report.emptied[word] = report.emptied.get(word, 0) + int(count)
            df[column] = values.where(~hits, "")
    return df


def _load_hub(name: str, split: str):
    import datasets  # slow to import and only needed here (Colab)

    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise DataError(f"{name}: could not load this Hub dataset ({exc}). Fix: check the name "
                        "and your network, or give a local file path") from exc
    return data.to_pandas(), DataReport(f"hub:{name}[{split}]")


def _read_file(path: Path, sheet, header_row, raw_values: bool):
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise DataError(f"{path}: old .xls workbooks are not supported. Fix: save it as .xlsx "
                        "or CSV")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty. Fix: check that it was saved or uploaded "
                        "completely")
    if suffix in (".csv", ".tsv", ".txt"):
        return read_delimited(path, path.read_bytes(), "\t" if suffix == ".tsv" else None,
                              header_row)
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".xlsx":
        return _read_xlsx(path, sheet, header_row, raw_values)
    if suffix == ".parquet":
        try:
            return pd.read_parquet(path), DataReport(str(path))
        except Exception as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc}). Fix: write it again "
                            "with pandas.DataFrame.to_parquet") from exc
    raise DataError(f"{path}: unknown file type {suffix!r}. Fix: use one of "
                    f"{', '.join(SUFFIXES)}")


def _read_xlsx(path: Path, sheet, header_row, raw_values: bool):
    read = read_sheet(path, sheet, raw_values)
    cells, place = read.cells, f"{path}, sheet {read.name!r}"
    report = DataReport(f"{path} [{read.name}]", line_word="sheet row", merged=read.merged,
                        notes=list(read.notes))
    h, note = find_header(cells, range(1, len(cells) + 1), header_row, place, word="row")
    report.notes += [note] if note else []
    body = [i for i in range(h + 1, len(cells)) if any(filled(c) for c in cells[i])]
    if body and body[-1] - h > len(body):
        report.drop("blank row", body[-1] - h - len(body))

    def has_values(j: int) -> bool:
        return any(j < len(cells[i]) and filled(cells[i][j]) for i in body)

    keep, names = check_header(f"{place} row {h + 1}", cells[h], has_values, letters=True)
    rows = [[cells[i][j] if j < len(cells[i]) else None for j in keep] for i in body]
    report.lines = [i + 1 for i in body]
    return pd.DataFrame(rows, columns=names, dtype=object), report


def _read_jsonl(path: Path):
    report = DataReport(str(path))
    text = decode(path, path.read_bytes(), report)
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
    text = decode(path, path.read_bytes(), report)
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
