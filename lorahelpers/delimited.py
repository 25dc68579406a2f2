"""CSV, TSV and other delimited text files, read as written: every cell stays the text it is
(no word means "missing", only an empty cell does), the header row is found past title lines
and notes (lorahelpers.header), and each data row is placed at the line it starts on.

A UTF-8 file whose rows all have the header's number of fields goes through pyarrow's CSV
reader: 200,000 rows in a fraction of a second, the cells kept as Arrow strings. Any other file
(another encoding, a ragged row, a blank line inside the table, old Mac line ends) goes
through Python's csv module, which says on which line the problem is. No torch.
"""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from lorahelpers.datareport import DataReport
from lorahelpers.errors import DataError
from lorahelpers.header import check_header, filled, find_header

HEAD_BYTES = 1 << 16  # read with the csv module to find the delimiter and the header
DELIMITERS = ",;\t|"


def read_delimited(path: Path, raw: bytes, delimiter: str | None = None,
                   header_row: int | None = None) -> tuple[pd.DataFrame, DataReport]:
    """The rows of a delimited text file (its bytes `raw`) and a report; `delimiter` None:
    found from the text.

    >>> df, _ = read_delimited(Path("t.csv"), b"Shop export\\nitem,cost\\nmug,4\\n")
    >>> df.to_dict("records")
    [{'item': 'mug', 'cost': '4'}]
    """
    fast = _read_fast(path, raw, delimiter, header_row)
    return fast if fast is not None else _read_careful(path, raw, delimiter, header_row)


def decode(path: Path, raw: bytes, report: DataReport) -> str:
    """The text of a file: UTF-16 by its byte-order mark, else UTF-8, else cp1252 or latin-1
    with a warning in `report`."""
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


def _sniff(text: str, report: DataReport) -> str:
    lines = [line for line in text.split("\n", HEAD_BYTES)[:200] if line.strip()]
    first = next((line for line in lines if any(d in line for d in DELIMITERS)), "")
    try:
        delimiter = csv.Sniffer().sniff(text[:65536], delimiters=DELIMITERS).delimiter
    except csv.Error:
        delimiter = ","
    if delimiter not in first:
        delimiter = next((d for d in DELIMITERS if d in first), ",")
    if delimiter != ",":
        report.warnings.append(f"columns are separated by {delimiter!r}")
    return delimiter


def _records(path: Path, text: str, delimiter: str) -> tuple[list[list[str]], list[int],
                                                           list[int]]:
    """The records of a text, with the lines each starts and ends on (a quoted value can hold
    line breaks); a blank line is an empty record."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records, starts, ends = [], [], []
    try:
        for record in reader:
            records.append(record)
            starts.append(ends[-1] + 1 if ends else 1)
            ends.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(f"{path}, line {reader.line_num}: not readable as CSV ({exc}). Fix: "
                        "save the file again as CSV (UTF-8) from your spreadsheet") from exc
    return records, starts, ends


def _read_careful(path: Path, raw: bytes, delimiter, header_row):
    report = DataReport(str(path))
    text = decode(path, raw, report)
    if not text.strip():
        raise DataError(f"{path}: the file holds only blank lines. Fix: add a header and rows")
    delimiter = delimiter or _sniff(text, report)
    records, starts, ends = _records(path, text, delimiter)
    if not any(filled(c) for record in records for c in record):
        raise DataError(f"{path}: every cell is empty. Fix: add a header and rows")
    h, note = find_header(records, starts, header_row, str(path))
    header = [c.strip() for c in records[h]]
    rows, lines = _data_rows(path, records, (starts, ends), h, delimiter, report)
    keep, names = check_header(f"{path}, line {starts[h]}", header,
                               lambda j: any(r[j].strip() for r in rows))
    if len(keep) < len(header):
        rows = [[r[j] for j in keep] for r in rows]
    report.lines, report.notes = lines, [note] if note else []
    return pd.DataFrame(rows, columns=names, dtype=object), report


def _data_rows(path: Path, records: list, spans: tuple, h: int, delimiter: str,
               report: DataReport) -> tuple[list, list[int]]:
    """The records below the header h with the line each starts on; blank ones dropped and
    counted, one with another number of fields than the header refused by its lines."""
    starts, ends = spans
    rows, lines = [], []
    for i in range(h + 1, len(records)):
        if not any(c.strip() for c in records[i]):
            report.drop("blank row")
        elif len(records[i]) != len(records[h]):
            place = f"line {starts[i]}" if starts[i] == ends[i] else \
                f"lines {starts[i]}-{ends[i]}"
            raise DataError(
                f"{path}, {place}: {len(records[i])} fields where the header on line "
                f"{starts[h]} has {len(records[h])}. Fix: put quotes around values that contain "
                f"{delimiter!r} or line breaks, and give every row the same columns")
        else:
            rows.append(records[i])
            lines.append(starts[i])
    return rows, lines


def _read_fast(path: Path, raw: bytes, delimiter, header_row):
    """pyarrow's reader after the header; None sends the file to the careful reader."""
    start = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    head = raw[start:start + HEAD_BYTES]
    cut = head.rfind(b"\n") + 1
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or not cut \
            or b"\r" in head.replace(b"\r\n", b""):
        return None
    try:
        text = head[:cut].decode("utf-8")
    except UnicodeDecodeError:
        return None
    report = DataReport(str(path))
    delimiter = delimiter or _sniff(text, report)
    records, starts, ends = _records(path, text, delimiter)
    beyond = header_row is not None and header_row > ends[-1] and start + cut < len(raw)
    if beyond or not any(filled(c) for record in records for c in record):
        return None  # the careful reader sees the whole file
    h, note = find_header(records, starts, header_row, str(path))
    offset = start
    for _ in range(ends[h]):
        offset = raw.index(b"\n", offset) + 1
    table, blank_rows = _arrow_rows(raw, offset, delimiter, len(records[h]))
    if table is None:
        return None
    return _arrow_frame(path, table, blank_rows, records[h], (starts[h], ends[h] + 1),
                        (raw, offset, delimiter), report, note)


def _arrow_rows(raw: bytes, offset: int, delimiter: str, width: int):
    """(table of strings, blank lines after the last row), or (None, 0) when a row has another
    number of fields, a blank line sits inside the table, or a byte is not UTF-8."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    end = len(raw)
    while end > offset and raw[end - 1] in b"\r\n":
        end -= 1
    blank_rows = max(raw.count(b"\n", end) - 1, 0)
    names = [str(j) for j in range(width)]
    if end == offset:
        return pa.table({n: pa.array([], pa.large_string()) for n in names}), blank_rows
    try:
        table = pacsv.read_csv(
            pa.py_buffer(memoryview(raw)[offset:end]),
            # one thread: as fast here as two (0.11 s for 200,000 rows) for half the CPU time
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True,
                                             ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.large_string() for n in names}, strings_can_be_null=False,
                quoted_strings_can_be_null=False))
    except pa.ArrowException:
        return None, 0
    return table, blank_rows


def _arrow_frame(path, table, blank_lines: int, header: list[str], lines: tuple[int, int],
                 source: tuple, report: DataReport, note):
    """The DataFrame of an Arrow table of strings: blank rows dropped and counted, the header
    checked, each row's line known (found on demand when quoted values hold line breaks)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    empty = [pc.or_(pc.equal(c, ""), pc.utf8_is_space(c)) for c in table.columns]
    blank = empty[0]
    for mask in empty[1:]:
        blank = pc.and_(blank, mask)
    blanks = pc.sum(blank).as_py() or 0
    if blanks + blank_lines:
        report.drop("blank row", blanks + blank_lines)
    keep, names = check_header(f"{path}, line {lines[0]}", [c.strip() for c in header],
                               lambda j: bool(pc.any(pc.invert(empty[j])).as_py()))
    table = table.select(keep).rename_columns(names)
    positions = np.flatnonzero(~blank.to_numpy(zero_copy_only=False)) if blanks else \
        np.arange(table.num_rows)
    if blanks:
        table = table.filter(pc.invert(blank))
    raw, offset, delimiter = source
    if raw.find(b'"', offset) < 0:  # one line per row
        report.lines = positions + lines[1]
    else:
        report.locate = lambda: _quoted_lines(path, offset, delimiter, lines[1])[positions]
    report.notes = [note] if note else []
    string = pd.StringDtype("pyarrow")
    return table.to_pandas(types_mapper={pa.large_string(): string}.get), report


def _quoted_lines(path, offset: int, delimiter: str, first: int) -> np.ndarray:
    """The line each record after byte `offset` starts on; read again from the file when
    first asked for, so that the report holds no copy of it."""
    _, starts, _ = _records(path, path.read_bytes()[offset:].decode("utf-8"), delimiter)
    return np.asarray(starts) + (first - 1)
