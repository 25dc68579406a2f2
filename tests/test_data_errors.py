"""Bad input: every error names the file, the place and the fix; bad rows are counted."""

import json
import shutil
from pathlib import Path

import openpyxl
import pytest

from lorahelpers.data import DataError, load_table, split, to_conversations

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, data) -> Path:
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def error(source, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        if {"template", "format", "output_column"} & set(kwargs) or kwargs.pop("convert", False):
            to_conversations(source, **kwargs)
        else:
            load_table(source, **kwargs)
    return str(info.value)


@pytest.mark.parametrize("name, content", [
    ("e.csv", b""), ("e.jsonl", b""), ("e.json", b""), ("e.xlsx", b""),
])
def test_empty_file(tmp_path, name, content):
    path = write(tmp_path / name, content)
    message = error(path)
    assert str(path) in message and "empty" in message and "Fix" in message


def test_blank_lines_only_and_header_only(tmp_path):
    assert "only blank lines" in error(write(tmp_path / "b.csv", "\n \n\n"))
    assert "every cell is empty" in error(write(tmp_path / "c.csv", ",,\n,,\n"))
    message = error(write(tmp_path / "h.csv", "instruction,output\n"))
    assert "h.csv" in message and "no data rows" in message
    assert "no JSON objects" in error(write(tmp_path / "w.jsonl", "\n\n"))


def test_missing_header_csv(tmp_path):
    path = write(tmp_path / "nohead.csv", "1,2024-01-05,yes\n2,2024-01-06,no\n")
    message = error(path)
    assert message.startswith(f"{path}: no row looks like a header row")
    assert "should name the columns but holds values: '1', '2024-01-05', 'yes'" in message
    assert "line 1: 1 | 2024-01-05 | yes; line 2: 2 | 2024-01-06 | no" in message
    assert "add a header row" in message and "header_row=" in message


def test_missing_header_xlsx(tmp_path):
    book = openpyxl.Workbook()
    book.active.append([3, 4.5, "x"])
    book.active.append([5, 6.5, "y"])
    book.save(tmp_path / "nohead.xlsx")
    message = error(tmp_path / "nohead.xlsx")
    assert "nohead.xlsx" in message and "row 1" in message and "header" in message


def test_unnamed_and_duplicate_columns(tmp_path):
    message = error(write(tmp_path / "u.csv", "a,,c\n1,2,3\n"))
    assert "u.csv, line 1, column 2" in message and "no name" in message
    message = error(write(tmp_path / "d.csv", "a,b,a\n1,2,3\n"))
    assert "appear twice: a" in message
    # a stray column with neither name nor values is simply left out
    df, _ = load_table(write(tmp_path / "s.csv", "a,b,\n1,2,\n"))
    assert list(df.columns) == ["a", "b"]


def test_missing_sheet_lists_sheets_and_closest():
    path = ROOT / "data" / "table.xlsx"
    message = error(path, sheet="held out")
    assert "no sheet named 'held out'" in message
    assert "'orders', 'held_out'" in message and "Did you mean 'held_out'?" in message
    message = error(path, sheet=5)
    assert "no sheet at index 5 (0-based)" in message and "orders, held_out" in message


def test_empty_sheet(tmp_path):
    book = openpyxl.Workbook()
    book.active.title = "blank"
    book.save(tmp_path / "blank.xlsx")
    assert "sheet 'blank' is empty" in error(tmp_path / "blank.xlsx")


def test_broken_xlsx(tmp_path):
    garbage = write(tmp_path / "garbage.xlsx", b"PK\x03\x04 this is not a workbook")
    message = error(garbage)
    assert "garbage.xlsx: not a readable .xlsx workbook" in message and "save it again" in message
    real = (ROOT / "data" / "table.xlsx").read_bytes()
    cut = write(tmp_path / "cut.xlsx", real[: len(real) // 2])
    assert "cut.xlsx" in error(cut)
    renamed = shutil.copy(ROOT / "data" / "table.csv", tmp_path / "renamed.xlsx")
    assert "not a readable .xlsx" in error(renamed)
    assert ".xls workbooks are not supported" in error(write(tmp_path / "old.xls", b"\xd0\xcf"))


def test_non_utf8_csv_falls_back_and_says_so(tmp_path):
    path = write(tmp_path / "win.csv", "name,price\nCafé crème,3 €\n".encode("cp1252"))
    df, report = load_table(path)
    assert df.to_dict("records") == [{"name": "Café crème", "price": "3 €"}]
    assert "win.csv is not UTF-8" in report.warnings[0] and "cp1252" in report.warnings[0]
    assert "cp1252" in str(report)
    # 0x81 is undefined in cp1252, so only latin-1 can read this one
    path = write(tmp_path / "latin.csv", b"name\nA\x81\xe9\n")
    df, report = load_table(path)
    assert df["name"][0] == "A\x81é" and "latin-1" in report.warnings[0]


def test_unknown_template_column_lists_columns_and_closest():
    message = error(ROOT / "data" / "table.csv", template="Order of {itme} in zone {zone}",
                    output_column="shipping_eur")
    assert "{itme}" in message and "table.csv" in message
    assert "'order_id', 'order_date', 'item'" in message and "The closest is 'item'" in message
    message = error(ROOT / "data" / "table.csv", template="{item}", output_column="Shipping")
    assert "output column 'Shipping'" in message and "The closest is 'shipping_eur'" in message


def test_template_syntax_errors():
    rows = [{"a": "x", "b": "y"}]
    assert "never closed" in error(rows, template="{a", output_column="b")
    assert "'[[' block is never closed" in error(rows, template="[[{a}", output_column="b")
    assert "cannot be nested" in error(rows, template="[[ [[{a}]] ]]", output_column="b")
    assert "Fix: pass template=" in error(rows, format="table", output_column="b")
    assert "Fix: pass output_column=" in error(rows, template="{a}")


def test_empty_outputs_dropped_and_counted(tmp_path):
    rows = [{"instruction": "a", "output": "x"}, {"instruction": "b", "output": ""},
            {"instruction": "c", "output": None}, {"instruction": "d", "output": "  "},
            {"instruction": "", "output": "y"}]
    convs, report = to_conversations(rows)
    assert len(convs) == 1 and report.rows_read == 5 and report.rows_kept == 1
    assert report.dropped == {"empty output": 3, "empty instruction": 1}
    message = error([{"instruction": "a", "output": ""}], convert=True)
    assert "no usable rows" in message and "empty output" in message


def test_duplicates_are_counted(tmp_path):
    path = write(tmp_path / "dup.jsonl", "\n".join(
        json.dumps({"instruction": i, "output": "o"}) for i in ["a", "b", "a", "a"]))
    convs, report = to_conversations(path)
    assert len(convs) == 4 and report.duplicates == 2
    assert "row 3 (line 3) repeats row 1 (line 1)" in report.warnings[0]


def test_file_not_found_and_unknown_types(tmp_path):
    message = error(tmp_path / "missing.csv")
    assert "missing.csv: file not found" in message
    assert "unknown file type '.pdf'" in error(write(tmp_path / "x.pdf", "data"))
    assert "cannot read rows from a int" in error(42)
    assert "is a folder" in error(tmp_path)


def test_ragged_csv_row_names_the_line(tmp_path):
    path = write(tmp_path / "ragged.csv", "a,b\n1,2\n3,4,5\n")
    message = error(path)
    assert "ragged.csv, line 3: 3 fields where the header on line 1 has 2" in message
    assert "quotes" in message


def test_bad_json_and_jsonl(tmp_path):
    message = error(write(tmp_path / "bad.jsonl", '{"a": 1}\n{"a": 2,}\n'))
    assert "bad.jsonl, line 2, column" in message and "one JSON object per line" in message
    assert "line 1: expected a JSON object" in error(write(tmp_path / "l.jsonl", "[1, 2]\n"))
    assert "bad.json, line 1" in error(write(tmp_path / "bad.json", "[{"))
    assert "row 2: expected an object" in error(write(tmp_path / "r.json", '[{"a": 1}, 3]'))
    assert "got an object with keys" in error(write(tmp_path / "o.json", '{"a": 1}'))


def test_format_problems_name_row_and_column(tmp_path):
    assert "cannot tell the format" in error([{"q": "a", "r": "b"}], convert=True)
    assert "format='csv' is unknown" in error([{"q": 1}], format="csv")
    bad_role = [{"conversations": [{"from": "human", "value": "q"},
                                   {"from": "robot", "value": "a"}]}]
    message = error(bad_role, convert=True)
    assert "row 1, column 'conversations', turn 2: unknown from 'robot'" in message
    late_system = [{"messages": [{"role": "user", "content": "q"},
                                 {"role": "system", "content": "s"}]}]
    assert "turn 2: a system message may only come first" in error(late_system, convert=True)
    assert "expected a list of turns" in error([{"messages": 5}], convert=True)
    message = error([{"instruction": "a", "answer": "b"}], format="alpaca")
    assert "alpaca column 'output' is not in" in message


def test_split_rejects_impossible_sizes():
    items = list(range(10))
    for bad in (0, 10, 1.0, 0.0, -0.5, True, "0.1"):
        with pytest.raises(DataError, match="eval_size"):
            split(items, bad)
    unique = [[{"role": "assistant", "content": str(i)}] for i in range(10)]
    with pytest.raises(DataError, match="nothing to balance"):
        split(unique, 0.2, stratify=True)
