"""Reading .xlsx workbooks as a person reads them: each cell as the sheet shows it (its number
format applied, lorahelpers.cells.shown) or raw, merged ranges filled into every cell they
span, formulas whose values were never saved refused by name, and the sheet to read chosen
(by name or index; without one the first sheet, or the one sheet with a table when the first
is an empty or cover page). Used by lorahelpers.tables; no torch.

Rows and columns in messages are the sheet's own: rows from 1, columns as letters.
"""

from __future__ import annotations

import difflib
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from lorahelpers.cells import render_value, shown
from lorahelpers.errors import DataError

# Rows read from each sheet to tell a table from a cover page.
HEAD_ROWS = 50


@dataclass
class Sheet:
    """One sheet's cells (rows of values; None for an empty cell) and what reading did."""

    name: str
    cells: list[list]
    merged: int = 0
    notes: list[str] = field(default_factory=list)


def open_workbook(path: Path, data_only: bool = True):
    """The workbook opened read-only (openpyxl), or a DataError naming the file."""
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=data_only)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .xlsx workbook ({type(exc).__name__}: {exc}). "
                        "Fix: open it in Excel or LibreOffice and save it again as .xlsx, or "
                        "export it as CSV") from exc


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
    book = open_workbook(path)
    try:
        return list(book.sheetnames)
    finally:
        book.close()


def read_sheet(path: Path, sheet=None, raw_values: bool = False) -> Sheet:
    """A sheet's cells as shown (or raw), merged ranges filled. `sheet` is a name or 0-based
    index; None: the first sheet, unless it holds no table and exactly one other sheet does.

    >>> read_sheet(Path("data/table.xlsx")).cells[1][:3]  # doctest: +SKIP
    ['1001', '2025-06-04', 'scarf']
    """
    book = open_workbook(path)
    try:
        names = book.sheetnames
        name, note = (_named(path, names, sheet), None) if sheet is not None else \
            _first_with_table(path, book)
        cells = _cells(path, book, name, raw_values)
        # openpyxl's read-only sheets know their part of the archive, not their merged cells
        part = book[name]._worksheet_path
    finally:
        book.close()
    merges, formulas = _sheet_markup(path, part)
    if formulas:
        _check_formulas(path, name, cells)
    if not any(_filled(c) for row in cells for c in row):
        raise DataError(f"{path}: sheet {name!r} is empty. Fix: choose another sheet with "
                        f"sheet=..., one of {', '.join(map(repr, names))}")
    for r1, c1, r2, c2 in merges:
        _fill_range(cells, r1, c1, r2, c2)
    return Sheet(name, cells, len(merges), [note] if note else [])


def default_sheet(path) -> tuple[str, str | None]:
    """The sheet read when none is named, and a note when it is not the first.

    >>> default_sheet("data/table.xlsx")  # doctest: +SKIP
    ('orders', None)
    """
    book = open_workbook(Path(path))
    try:
        return _first_with_table(Path(path), book)
    finally:
        book.close()


def _named(path: Path, names: list[str], sheet) -> str:
    if isinstance(sheet, int) and not isinstance(sheet, bool):
        if not -len(names) <= sheet < len(names):
            raise DataError(f"{path}: no sheet at index {sheet} (0-based); the workbook has "
                            f"{len(names)}: {', '.join(names)}. Fix: pass sheet= a name or "
                            f"an index from 0 to {len(names) - 1}")
        return names[sheet]
    if sheet in names:
        return sheet
    close = difflib.get_close_matches(str(sheet), names, n=1, cutoff=0.4)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise DataError(f"{path}: no sheet named {sheet!r}; the sheets are "
                    f"{', '.join(map(repr, names))}.{hint} Fix: pass sheet= one of "
                    "those names or a 0-based index")


def _first_with_table(path: Path, book) -> tuple[str, str | None]:
    """(the first sheet, None), or (the one other sheet with a table, a note) when the first
    holds none (empty, or a cover page: no row with two different values)."""
    names = book.sheetnames
    if len(names) == 1 or _holds_table(_head(path, book, names[0])):
        return names[0], None
    tables = [n for n in names[1:] if _holds_table(_head(path, book, n))]
    if len(tables) == 1:
        return tables[0], (f"sheet {names[0]!r} holds no table (empty or a cover page): read "
                           f"sheet {tables[0]!r}, the only sheet with one. Pass sheet= to "
                           "choose another")
    if len(tables) > 1:
        raise DataError(f"{path}: the first sheet, {names[0]!r}, holds no table, and "
                        f"{len(tables)} sheets do: {', '.join(map(repr, tables))}. Fix: pass "
                        "sheet= the name of the sheet with your rows")
    return names[0], None


def _holds_table(rows: list[list]) -> bool:
    return any(len({render_value(c) for c in row if _filled(c)}) >= 2 for row in rows)


def _head(path: Path, book, name: str) -> list[list]:
    try:
        return [list(r) for r in book[name].iter_rows(max_row=HEAD_ROWS, values_only=True)]
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise _damaged(path, exc) from exc


def _filled(cell) -> bool:
    return cell is not None and (not isinstance(cell, str) or bool(cell.strip()))


def _cells(path: Path, book, name: str, raw_values: bool) -> list[list]:
    try:
        if raw_values:
            return [list(r) for r in book[name].iter_rows(values_only=True)]
        return [[_shown(c) for c in row] for row in book[name].iter_rows()]
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise _damaged(path, exc) from exc


def _shown(cell):
    value = cell.value
    if value is None or isinstance(value, str):
        return value
    return shown(value, cell.number_format)


def _damaged(path: Path, exc: Exception) -> DataError:
    return DataError(f"{path}: the workbook is damaged ({exc}). Fix: save it again as .xlsx "
                     "or export it as CSV")


# ---- merged ranges and formulas, read from the sheet's XML ---------------------------------

_MERGE = re.compile(rb'<(?:\w+:)?mergeCell\s[^>]*?ref="([A-Z]+)(\d+)(?::([A-Z]+)(\d+))?"')
_FORMULA = re.compile(rb"<(?:\w+:)?f[\s>/]")


def _sheet_markup(path: Path, part: str) -> tuple[list[tuple[int, int, int, int]], bool]:
    """The merged ranges of a sheet (0-based first row, column, last row, column) and whether
    it holds any formula, from one pass over its XML (openpyxl's read-only mode reads
    neither)."""
    from openpyxl.utils import column_index_from_string as col

    merges, formulas, tail = set(), False, b""
    with zipfile.ZipFile(path) as archive, archive.open(part) as xml:
        while chunk := xml.read(1 << 22):
            text = tail + chunk
            formulas = formulas or bool(_FORMULA.search(text))
            merges.update(_MERGE.findall(text))
            tail = text[-256:]
    ranges = []
    for c1, r1, c2, r2 in merges:
        c2, r2 = (c2 or c1), (r2 or r1)
        ranges.append((int(r1) - 1, col(c1.decode()) - 1, int(r2) - 1, col(c2.decode()) - 1))
    return sorted(ranges), formulas


def _fill_range(cells: list[list], r1: int, c1: int, r2: int, c2: int) -> None:
    """Every cell of a merged range gets its top-left value, as the sheet shows it; the range
    is cut to the rows the sheet has."""
    if r1 >= len(cells):
        return
    value = cells[r1][c1] if c1 < len(cells[r1]) else None
    for row in cells[r1:min(r2, len(cells) - 1) + 1]:
        if len(row) <= c2:
            row.extend([None] * (c2 + 1 - len(row)))
        row[c1:c2 + 1] = [value] * (c2 + 1 - c1)


def _check_formulas(path: Path, name: str, cells: list[list]) -> None:
    """Refuses cells that hold a formula whose value was never saved. Excel and LibreOffice
    save each formula's value beside it; a program that writes formulas (openpyxl, for one)
    saves none, so until the workbook is opened and saved in a spreadsheet those cells read as
    empty, and the rows would be dropped for a reason the user cannot see."""
    if all(c is not None for row in cells for c in row):
        return
    book = open_workbook(path, data_only=False)
    try:
        formulas = _cells(path, book, name, raw_values=True)
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
