"""Workbook sheets and notebook uploads (lorahelpers.tables, used through lorahelpers.data)."""

from pathlib import Path

import openpyxl
import pytest

from lorahelpers.data import DataError, load_table, save_upload, sheet_names, to_conversations

ROOT = Path(__file__).resolve().parents[1]
CSV = b"item,zone,shipping_eur\nscarf,B,6\nlamp,D,12\n"


def test_sheet_names_in_workbook_order(tmp_path):
    assert sheet_names(ROOT / "data" / "table.xlsx") == ["orders", "held_out"]
    assert sheet_names(str(ROOT / "data" / "table.xlsx")) == ["orders", "held_out"]
    book = openpyxl.Workbook()
    book.active.title = "Z last made first"
    book.create_sheet("A")
    book.save(tmp_path / "two.xlsx")
    assert sheet_names(tmp_path / "two.xlsx") == ["Z last made first", "A"]


def test_files_without_sheets_have_none():
    assert sheet_names(ROOT / "data" / "table.csv") == []
    assert sheet_names([{"a": 1}]) == []


def test_sheet_names_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.xlsx: file not found.*Fix"):
        sheet_names(tmp_path / "nowhere.xlsx")
    (tmp_path / "bad.xlsx").write_bytes(b"PK\x03\x04 not a workbook")
    with pytest.raises(DataError, match=r"bad\.xlsx: not a readable \.xlsx workbook.*save it"):
        sheet_names(tmp_path / "bad.xlsx")


@pytest.mark.parametrize("uploaded", [
    {"orders.csv": CSV},                                              # google.colab.files
    ({"name": "orders.csv", "type": "text/csv", "size": len(CSV),     # ipywidgets 8
      "content": memoryview(CSV), "last_modified": 0},),
    {"orders.csv": {"metadata": {"size": len(CSV)}, "content": CSV}},  # ipywidgets 7
], ids=["colab", "ipywidgets8", "ipywidgets7"])
def test_upload_is_saved_and_readable(tmp_path, uploaded):
    path = save_upload(uploaded, tmp_path / "uploads")
    assert path == tmp_path / "uploads" / "orders.csv"
    assert path.read_bytes() == CSV
    df, _ = load_table(path)
    assert list(df["shipping_eur"]) == ["6", "12"]
    assert [p.name for p in path.parent.iterdir()] == ["orders.csv"]  # no temporary left


def test_upload_of_a_workbook_keeps_its_sheets(tmp_path):
    content = (ROOT / "data" / "table.xlsx").read_bytes()
    path = save_upload({"shop.xlsx": content}, tmp_path)
    assert sheet_names(path) == ["orders", "held_out"]


def test_nothing_uploaded_is_none(tmp_path):
    assert save_upload({}, tmp_path) is None
    assert save_upload((), tmp_path) is None
    assert save_upload(None, tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_upload_stays_in_its_folder(tmp_path):
    path = save_upload({"../../etc/orders.csv": CSV}, tmp_path / "in")
    assert path == tmp_path / "in" / "orders.csv"
    path = save_upload({"C:\\Users\\me\\shop.csv": CSV}, tmp_path / "in")
    assert path == tmp_path / "in" / "shop.csv"


def test_first_of_several_files_is_kept(tmp_path):
    path = save_upload({"a.csv": CSV, "b.csv": b"x\n1\n"}, tmp_path)
    assert path.name == "a.csv" and not (tmp_path / "b.csv").exists()


@pytest.mark.parametrize("uploaded, message", [
    ({"old.xls": b"\xd0\xcf"}, r"old\.xls: unknown file type '\.xls'.*save Excel files as \.xlsx"),
    ({"notes": b"x"}, r"notes: unknown file type '\(none\)'"),
    ({"empty.csv": b""}, r"empty\.csv: the upload is empty.*upload the file again"),
])
def test_bad_uploads_are_named_and_nothing_is_written(tmp_path, uploaded, message):
    with pytest.raises(DataError, match=message):
        save_upload(uploaded, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import os

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        save_upload({"orders.csv": CSV}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_formulas_without_saved_values_are_named(tmp_path):
    # openpyxl writes formulas but never their values; Excel would compute and save them.
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "orders"
    sheet.append(["item", "price", "answer"])
    for row in range(2, 7):
        sheet.append([f"item {row}", row, f"=B{row}*2"])
    book.save(tmp_path / "computed.xlsx")
    with pytest.raises(DataError) as info:
        to_conversations(tmp_path / "computed.xlsx", template="{item}", output_column="answer")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'computed.xlsx'}: sheet 'orders': 5 cell(s) hold "
                              "formulas whose values were never saved")
    assert "column 'answer' (C): C2, C3, C4 and 2 more" in message
    assert "no usable rows" not in message
    assert message.endswith("Fix: open it in Excel or LibreOffice and save it (that stores the "
                            "values), or write the values instead of formulas")


def test_empty_cells_are_not_mistaken_for_formulas(tmp_path):
    book = openpyxl.Workbook()
    book.active.append(["item", "note", "answer"])
    book.active.append(["lamp", None, "12"])
    book.active.append(["scarf", "=\"gift\"", None])  # a formula in a column that has no value
    book.save(tmp_path / "mixed.xlsx")
    with pytest.raises(DataError, match=r"1 cell\(s\) hold formulas.*column 'note' \(B\): B3\."):
        load_table(tmp_path / "mixed.xlsx")
    book.active["B3"] = None
    book.save(tmp_path / "mixed.xlsx")
    df, _ = load_table(tmp_path / "mixed.xlsx")
    assert df.values.tolist() == [["lamp", None, "12"], ["scarf", None, None]]
