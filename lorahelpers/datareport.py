"""DataReport: what the data layer did to the rows (read, kept, dropped and why, duplicates,
merged ranges filled, cells read as empty, notes and warnings), and where each data row is in
its file. Shows as a table in notebooks and as plain text in a terminal. No dependencies."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class DataReport:
    """What happened to the rows: read, kept, dropped by reason, duplicates, warnings.
    Shows as a table in notebooks and as plain text in a terminal.

    >>> report = DataReport("orders.csv", rows_read=3, rows_kept=2, lines=[2, 3, 5])
    >>> report.drop("empty output"); report.where(2)
    'row 3 (line 5)'
    """

    source: str = "<rows>"
    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    warnings: list[str] = field(default_factory=list)
    format: str = ""
    lines: Sequence[int] | None = field(default=None, repr=False)  # where each data row is
    line_word: str = "line"
    merged: int = 0  # merged ranges of a sheet filled into every cell they span
    notes: list[str] = field(default_factory=list)
    empty_markers: tuple[str, ...] = ()  # words read as empty cells (load_table's option)
    emptied: dict[str, int] = field(default_factory=dict)  # cells read as empty, per word
    # finds `lines` when first needed (a CSV file with quoted line breaks needs a pass)
    locate: Callable[[], Sequence[int]] | None = field(default=None, repr=False)

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    def where(self, index: int) -> str:
        """'row 5 (line 6)' for the data row at 0-based `index`."""
        if self.lines is None and self.locate is not None:
            self.lines, self.locate = self.locate(), None
        place = f"row {index + 1}"
        if self.lines is not None and index < len(self.lines):
            place += f" ({self.line_word} {self.lines[index]})"
        return place

    def _rows(self) -> list[tuple[str, str]]:
        dropped = "; ".join(f"{k}: {v}" for k, v in sorted(self.dropped.items())) or "0"
        rows = [("source", self.source), ("format", self.format or "-"),
                ("rows read", str(self.rows_read)), ("rows kept", str(self.rows_kept)),
                ("dropped", dropped), ("duplicates", str(self.duplicates))]
        if self.merged:
            rows.append(("merged cells", f"{self.merged} merged range(s) filled into every "
                                         "cell they span"))
        if self.empty_markers:
            counts = ", ".join(f"{w!r}: {self.emptied.get(w, 0)}" for w in self.empty_markers)
            rows.append(("read as empty", f"{sum(self.emptied.values())} cell(s) ({counts})"))
        rows += [("note", n) for n in self.notes]
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
