"""A table's header row, found and checked as a person reads the sheet. Title lines, notes and
blank rows above the table (common in exports) are skipped: the header is the first row of
distinct names (not mostly numbers or dates; names only when rows above it are skipped) as
wide as most of the rows below it; header_row= names it instead. Its names are then checked:
every column with values has one, none twice. Used by lorahelpers.tables for CSV, TSV and
XLSX; no torch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from lorahelpers.cells import render_value
from lorahelpers.errors import DataError

HEADER_SEARCH = 30  # filled rows looked at for the header
SHOWN_ROWS = 5  # rows an error shows when no header is found
BELOW = 5  # rows below a header candidate that it should span


def filled(cell) -> bool:
    """Whether a cell holds anything but blanks."""
    return cell is not None and (not isinstance(cell, str) or bool(cell.strip()))


def find_header(rows: Sequence[list], numbers: Sequence[int], header_row: int | None,
                place: str, *, word: str = "line") -> tuple[int, str | None]:
    """(index in `rows` of the header, a note when filled rows above it were skipped).
    `rows` are a file's first rows, blank ones included; numbers[i] is row i's number as a
    person reads it, a `word` ("line" of a text file, "row" of a sheet).

    >>> index, note = find_header([["Orders 2025"], [], ["item", "cost"], ["mug", 4]],
    ...                           [1, 2, 3, 4], None, "shop.csv")
    >>> index, note[:47]
    (2, 'the header is on line 3; 1 row(s) above it skip')
    """
    if header_row is not None:
        return _given(rows, numbers, header_row, place, word), None
    full = [i for i, row in enumerate(rows) if any(filled(c) for c in row)]
    if len(full) == 1:
        return full[0], None
    for k, i in enumerate(full[:HEADER_SEARCH]):
        below = [rows[j] for j in full[k + 1:k + 1 + BELOW]]
        # skipping rows takes a header of names only: "0,x,y" under ",a,b" (a DataFrame
        # written with its index) is the first data row, not a header below a note
        if k and any(looks_like_value(c) for c in rows[i] if filled(c)):
            continue
        if below and _looks_like_header(rows[i], below):
            return i, _skipped_note(rows, full[:k], numbers[i], word)
    first = full[0]
    if len({render_value(c) for c in rows[first] if filled(c)}) >= 2 \
            and not _mostly_values(rows[first]):
        return first, None  # names repeated, or fewer than the columns: check_header says so
    raise _no_header(rows, full, numbers, place, word)


def _looks_like_header(row: list, below: list[list]) -> bool:
    """Distinct names, not mostly values, spanning the columns of most rows below it (a
    title or a note is narrower than the table; one ragged row does not make a header)."""
    names = [render_value(c) for c in row if filled(c)]
    return len(set(names)) == len(names) and not _mostly_values(row) and \
        sum(_covers(row, other) for other in below) * 2 >= len(below)


def _mostly_values(row: list) -> bool:
    cells = [c for c in row if filled(c)]
    return sum(map(looks_like_value, cells)) * 2 >= len(cells)


def _covers(row: list, below: list) -> bool:
    """Whether `row` spans at least the columns of `below` (a title or a note is narrower)."""
    mine = [j for j, c in enumerate(row) if filled(c)]
    theirs = [j for j, c in enumerate(below) if filled(c)]
    return mine[0] <= theirs[0] and mine[-1] >= theirs[-1]


def looks_like_value(cell) -> bool:
    """Whether a header cell looks like data: a number, a date or a boolean."""
    if not isinstance(cell, str):
        return cell is not None
    try:
        float(cell.replace(",", ""))
        return True
    except ValueError:
        pass
    try:
        dt.date.fromisoformat(cell.strip()[:10])
        return True
    except ValueError:
        return cell.strip().lower() in ("true", "false")


def _skipped_note(rows, above: list[int], number: int, word: str) -> str | None:
    if not above:
        return None
    texts = ", ".join(repr(_row_text(rows[i], 40)) for i in above[:3])
    more = ", ..." if len(above) > 3 else ""
    return (f"the header is on {word} {number}; {len(above)} row(s) above it skipped "
            f"({texts}{more}). Pass header_row= to use another row")


def _row_text(row: list, width: int = 70) -> str:
    cells = [render_value(c) for c in row]
    while cells and not cells[-1]:
        cells.pop()
    text = " | ".join(cells)
    return text if len(text) <= width else text[:width - 3] + "..."


def _no_header(rows, full: list[int], numbers, place: str, word: str) -> DataError:
    shown = "; ".join(f"{word} {numbers[i]}: {_row_text(rows[i])}" for i in full[:SHOWN_ROWS])
    values = [render_value(c) for c in rows[full[0]] if filled(c)]
    why = (f" (the first row should name the columns but holds values: "
           f"{', '.join(map(repr, values[:3]))})" if _mostly_values(rows[full[0]]) else "")
    return DataError(f"{place}: no row looks like a header row of column names{why}. The first "
                     f"rows: {shown}. Fix: add a header row with column names above the data, "
                     f"or pass header_row= the {word} number of the row that names the columns")


def _given(rows, numbers, header_row, place: str, word: str) -> int:
    if isinstance(header_row, bool) or not isinstance(header_row, int) or header_row < 1:
        raise DataError(f"header_row={header_row!r} is not a {word} number. Fix: the {word} "
                        "number of the row that names the columns, counting from 1")
    if header_row not in numbers:
        last = numbers[-1] if len(numbers) else 0
        why = f"the file has {last} {word}s" if header_row > last else \
            f"{word} {header_row} is inside a quoted value that starts on an earlier {word}"
        raise DataError(f"{place}: header_row={header_row}, but {why}. Fix: pass header_row= "
                        f"the {word} number of the row that names the columns")
    index = list(numbers).index(header_row)
    if not any(filled(c) for c in rows[index]):
        raise DataError(f"{place}, {word} {header_row}: header_row names a blank row. Fix: pass "
                        f"header_row= the {word} number of the row that names the columns")
    return index


def check_header(where: str, header: list, has_values: Callable[[int], bool],
                 letters: bool = False) -> tuple[list[int], list[str]]:
    """(indices of the columns kept, their names). A column with neither a name nor a value
    (a stray empty column of a spreadsheet) is left out; a column with values needs a name,
    names are unique and not mostly values. Columns are numbered as the file shows them:
    from 1, or by letter in a sheet (`letters`).

    >>> check_header("t.csv, line 1", ["a", "", "b"], lambda j: False)
    ([0, 2], ['a', 'b'])
    """
    names = [render_value(h) for h in header]
    for j, name in enumerate(names):
        if not name and has_values(j):
            raise DataError(f"{where}, column {column_label(j, letters)}: the column has values "
                            "but no name. Fix: give it a name in the header row")
    keep = [j for j, name in enumerate(names) if name]
    values = [names[j] for j in keep if looks_like_value(header[j])]
    if values and len(values) * 2 >= len(keep):
        raise DataError(f"{where}: the first row should name the columns but holds values "
                        f"({', '.join(map(repr, values[:3]))}). Fix: add a header row with "
                        "column names, or pass header_row= the row that names them")
    kept = [names[j] for j in keep]
    dupes = sorted({n for n in kept if kept.count(n) > 1})
    if dupes:
        raise DataError(f"{where}: column names appear twice: {', '.join(dupes)}. "
                        "Fix: give each column its own name")
    return keep, kept


def column_label(j: int, letters: bool) -> str:
    """Column j (0-based) as the file shows it: '3' in a text file, 'C' in a sheet."""
    if not letters:
        return str(j + 1)
    from openpyxl.utils import get_column_letter

    return get_column_letter(j + 1)
