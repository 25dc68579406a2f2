"""Files people bring from spreadsheets: .xlsx workbooks (their sheets, reading one) and
files uploaded into a notebook. Use them through lorahelpers.data. No torch here."""

from __future__ import annotations

import difflib
import zipfile
from pathlib import Path

import pandas as pd

from lorahelpers.atomic import write_atomic
from lorahelpers.tables import SUFFIXES, DataError, DataReport, _check_header, render_value


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

    >>> save_upload({"orders.csv": b"a,b\\n1,2\\n"}, "uploads")  # doctest: +SKIP
    PosixPath('uploads/orders.csv')
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


def _open_workbook(path: Path):
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .xlsx workbook ({type(exc).__name__}: {exc}). "
                        "Fix: open it in Excel or LibreOffice and save it again as .xlsx, or "
                        "export it as CSV") from exc


def read_xlsx(path: Path, sheet) -> tuple:
    """One sheet of a workbook as (DataFrame, DataReport); load_table calls it."""
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
        cells = [list(r) for r in book[name].iter_rows(values_only=True)]
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise DataError(f"{path}: the workbook is damaged ({exc}). Fix: save it again as .xlsx "
                        "or export it as CSV") from exc
    finally:
        book.close()
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
