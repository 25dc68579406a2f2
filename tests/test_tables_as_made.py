"""Spreadsheets as people make them (issue 19): marker words kept as text, merged cells,
title lines above the header, cells as the sheet shows them, cover sheets, and errors that
name the place a person looks at. Every fixture is made here."""

import json
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from lorahelpers.data import DataError, load_table, to_conversations
from lorahelpers.delimited import read_delimited

WORDS = ["None", "null", "NULL", "NA", "N/A", "n/a", "-", "nan", "NaN", "#N/A", "none"]


def workbook(path: Path, rows: list, title: str = "orders", formats: dict | None = None,
             merges: tuple = ()) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = title
    for row in rows:
        sheet.append(row)
    for ref, number_format in (formats or {}).items():
        sheet[ref].number_format = number_format
    for ref in merges:
        sheet.merge_cells(ref)
    book.save(path)
    return path


def answers(source, **kwargs) -> list[str]:
    convs, _ = to_conversations(source, template="Q: {question}", output_column="answer",
                                **kwargs)
    return [c[-1]["content"] for c in convs]


# ---- 1. text is kept as written --------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".xlsx", ".json", ".jsonl"])
def test_marker_words_are_answers_like_any_other_text(tmp_path, suffix):
    rows = [{"question": f"q{i}", "answer": word} for i, word in enumerate(WORDS)]
    path = tmp_path / f"words{suffix}"
    if suffix in (".csv", ".tsv"):
        sep = "," if suffix == ".csv" else "\t"
        path.write_text("question" + sep + "answer\n" +
                        "".join(f"{r['question']}{sep}{r['answer']}\n" for r in rows))
    elif suffix == ".xlsx":
        workbook(path, [["question", "answer"]] + [[r["question"], r["answer"]] for r in rows])
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert answers(path) == WORDS


def test_a_nan_in_a_numeric_column_is_blank(tmp_path):
    frame = pd.DataFrame({"question": ["a", "b", "c"], "answer": [1.5, float("nan"), 3.0]})
    frame.to_parquet(tmp_path / "n.parquet")
    assert answers(frame) == answers(tmp_path / "n.parquet") == ["1.5", "3"]
    assert answers([{"question": "a", "answer": None}, {"question": "b", "answer": 0}]) == ["0"]


def test_empty_markers_are_read_as_empty_and_counted(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("question,answer,note\na,N/A,x\nb,-,N/A\nc,None, \nd,yes,-\n")
    convs, report = to_conversations(path, template="{question}[[ ({note})]]",
                                     output_column="answer", empty_markers=["N/A", "-"])
    assert [c[-1]["content"] for c in convs] == ["None", "yes"]
    assert [c[0]["content"] for c in convs] == ["c", "d"]  # "-" in the note left the block out
    assert report.dropped == {"empty output": 2}
    assert report.emptied == {"N/A": 2, "-": 2}
    assert "read as empty  4 cell(s) ('N/A': 2, '-': 2)" in str(report)
    # the same option as one text, and on a workbook
    book = workbook(tmp_path / "m.xlsx", [["question", "answer"], ["a", "N/A"], ["b", "ok"]])
    assert answers(book, empty_markers="N/A, -") == ["ok"]
    assert answers(book) == ["N/A", "ok"]


# ---- 2. merged cells -------------------------------------------------------------------


def test_merged_cells_fill_every_row_and_column_they_span(tmp_path):
    path = workbook(tmp_path / "merged.xlsx", [
        ["category", "item", "size", "answer"],
        ["kitchen", "mug", "small", "4"],
        [None, "kettle", "large", "9"],
        [None, "pan", "medium", "6"],
        ["garden", "hose", "12", None],  # C5:D5 holds one merged value
    ], merges=("A2:A4", "C5:D5"))
    convs, report = to_conversations(path, template="{item} in {category}, {size}",
                                     output_column="answer")
    assert [(c[0]["content"], c[1]["content"]) for c in convs] == [
        ("mug in kitchen, small", "4"), ("kettle in kitchen, large", "9"),
        ("pan in kitchen, medium", "6"), ("hose in garden, 12", "12")]
    assert report.merged == 2 and "2 merged range(s) filled" in str(report)


def test_a_merged_title_above_the_table_is_not_the_header(tmp_path):
    path = workbook(tmp_path / "title.xlsx", [
        ["Orders 2025", None, None], ["question", "answer", "note"], ["q", "a", "n"]],
        merges=("A1:C1",))
    df, report = load_table(path)
    assert list(df.columns) == ["question", "answer", "note"]
    assert report.where(0) == "row 1 (sheet row 3)"


# ---- 3. the header row is found --------------------------------------------------------


def test_title_lines_and_notes_above_a_csv_header_are_skipped(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("Sales report\nGenerated 2025-06-04 by ERP,\n\nquestion,answer\n"
                    "q1,a1\nq2,a2\n")
    df, report = load_table(path)
    assert df.to_dict("records") == [{"question": "q1", "answer": "a1"},
                                     {"question": "q2", "answer": "a2"}]
    assert report.notes == ["the header is on line 4; 2 row(s) above it skipped ('Sales "
                            "report', 'Generated 2025-06-04 by ERP'). Pass header_row= to use "
                            "another row"]
    assert report.where(1) == "row 2 (line 6)"
    assert "note" in str(report) and "line 4" in str(report)


def test_title_and_notes_above_a_sheet_header_are_skipped(tmp_path):
    path = workbook(tmp_path / "report.xlsx", [
        ["Shipping costs"], ["Source: ERP", "exported 2025-06-04"], [],
        ["question", "answer", "zone"], ["q1", "a1", "B"], ["q2", "a2", "C"]])
    df, report = load_table(path)
    assert list(df.columns) == ["question", "answer", "zone"] and len(df) == 2
    assert report.notes[0].startswith("the header is on row 4; 2 row(s) above it skipped")
    assert report.where(0) == "row 1 (sheet row 5)"


def test_header_row_names_the_header(tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("group,group\nquestion,answer\nq,a\n")  # two header rows: the second names
    df, _ = load_table(path, header_row=2)
    assert df.to_dict("records") == [{"question": "q", "answer": "a"}]
    df, report = load_table(path)  # found: "group,group" repeats a name
    assert list(df.columns) == ["question", "answer"] and report.notes
    book = workbook(tmp_path / "h.xlsx", [["a", "b"], ["question", "answer"], ["q", "x"]])
    assert list(load_table(book, header_row=2)[0].columns) == ["question", "answer"]
    assert list(load_table(book)[0].columns) == ["a", "b"]


def test_header_row_errors_name_the_row(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("question,answer\n\nq,a\n")
    with pytest.raises(DataError, match=r"h\.csv, line 2: header_row names a blank row.*Fix"):
        load_table(path, header_row=2)
    with pytest.raises(DataError, match=r"h\.csv: header_row=9, but the file has 3 lines.*Fix"):
        load_table(path, header_row=9)
    with pytest.raises(DataError, match=r"header_row=0 is not a line number.*Fix"):
        load_table(path, header_row=0)


def test_no_header_shows_the_first_rows_and_the_option(tmp_path):
    path = workbook(tmp_path / "values.xlsx", [[1, 2.5, "x"], [2, 3.5, "y"], [3, 4.5, "z"]])
    with pytest.raises(DataError) as info:
        load_table(path)
    message = str(info.value)
    assert message.startswith(f"{path}, sheet 'orders': no row looks like a header row")
    assert "row 1: 1 | 2.5 | x; row 2: 2 | 3.5 | y; row 3: 3 | 4.5 | z" in message
    assert message.endswith("Fix: add a header row with column names above the data, or pass "
                            "header_row= the row number of the row that names the columns")


# ---- 4. cells as the sheet shows them --------------------------------------------------


def test_xlsx_cells_read_as_the_sheet_shows_them(tmp_path):
    import datetime as dt

    path = workbook(tmp_path / "shown.xlsx", [
        ["question", "share", "price", "total", "due", "paid", "code", "loss"],
        ["q", 0.25, 1234.5, 1234567, dt.datetime(2025, 6, 4), True, "007", -5],
    ], formats={"B2": "0%", "C2": '#,##0.00 "EUR"', "D2": "#,##0", "E2": "dd.mm.yyyy",
                "H2": '"$"#,##0_);("$"#,##0)'})
    template = "{share}|{price}|{total}|{due}|{paid}|{code}|{loss}"
    convs, _ = to_conversations(path, template=template, output_column="question")
    assert convs[0][0]["content"] == "25%|1,234.50 EUR|1,234,567|04.06.2025|TRUE|007|($5)"
    convs, _ = to_conversations(path, template=template, output_column="question",
                                raw_values=True)
    assert convs[0][0]["content"] == \
        "0.25|1234.5|1234567|2025-06-04|yes|007|-5"


def test_csv_cells_stay_the_text_they_are(tmp_path):
    path = tmp_path / "shown.csv"
    path.write_text('question,share,price\nq,25 %,"1,234.50 EUR"\n')
    df, _ = load_table(path)
    assert df.to_dict("records") == [{"question": "q", "share": "25 %", "price": "1,234.50 EUR"}]


# ---- 5. a cover sheet ------------------------------------------------------------------


def cover_book(path: Path, tables: int, cover=()) -> Path:
    book = openpyxl.Workbook()
    book.active.title = "Cover"
    for row in cover:
        book.active.append(row)
    for n in range(tables):
        sheet = book.create_sheet(f"data{n + 1}")
        sheet.append(["question", "answer"])
        sheet.append([f"q{n}", f"a{n}"])
    book.save(path)
    return path


@pytest.mark.parametrize("cover", [(), (["Quarterly report"], [], ["Prepared by the shop"])],
                         ids=["empty", "title page"])
def test_a_cover_sheet_before_the_one_table_is_passed_over(tmp_path, cover):
    path = cover_book(tmp_path / "cover.xlsx", 1, cover)
    df, report = load_table(path)
    assert report.source.endswith("[data1]") and df.to_dict("records") == [
        {"question": "q0", "answer": "a0"}]
    assert report.notes == ["sheet 'Cover' holds no table (empty or a cover page): read sheet "
                            "'data1', the only sheet with one. Pass sheet= to choose another"]


def test_a_cover_sheet_before_several_tables_lists_them(tmp_path):
    path = cover_book(tmp_path / "cover.xlsx", 2)
    with pytest.raises(DataError, match=r"the first sheet, 'Cover', holds no table, and 2 "
                                        r"sheets do: 'data1', 'data2'\. Fix: pass sheet="):
        load_table(path)
    assert load_table(path, sheet="data2")[0]["answer"].tolist() == ["a1"]


def test_the_notebook_chooses_the_table_sheet_past_a_cover(tmp_path):
    from lorahelpers.notebook import choose_sheets
    from lorahelpers.params import Params

    path = cover_book(tmp_path / "cover.xlsx", 1)
    said = []
    params = choose_sheets(Params(kind="table", data=str(path), sheet="orders"),
                           progress=said.append)
    note = "\n".join(said)
    assert params.sheet == "data1"
    assert "No sheet 'orders' here: using 'data1'." in note
    assert "Sheet 'Cover' holds no table" in note


# ---- 8. errors name the place a person looks at ----------------------------------------


def test_a_nameless_column_is_counted_with_the_empty_ones_before_it(tmp_path):
    path = tmp_path / "gap.csv"
    path.write_text("a,,,c\n1,,2,3\n")
    with pytest.raises(DataError, match=r"gap\.csv, line 1, column 3: the column has values "
                                        r"but no name\. Fix"):
        load_table(path)
    book = workbook(tmp_path / "gap.xlsx", [["a", None, None, "c"], [1, None, 2, 3]])
    with pytest.raises(DataError, match=r"sheet 'orders' row 1, column C: the column has "
                                        r"values but no name"):
        load_table(book)


def test_a_quoted_record_is_named_by_the_line_it_starts_on(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text('question,answer\n"two\nlines",a,extra\nq,a\n')
    with pytest.raises(DataError, match=r"ragged\.csv, lines 2-3: 3 fields where the header on "
                                        r"line 1 has 2"):
        load_table(path)
    path.write_text('question,answer\n"two\nlines",a\nq,a\n"two\nlines",a\n')
    convs, report = to_conversations(path, template="{question}", output_column="answer")
    assert "row 3 (line 5) repeats row 1 (line 2)" in report.warnings[0]


# ---- the fast reader and the careful one agree ------------------------------------------


def test_fast_and_careful_readers_agree(tmp_path):
    text = ('Shop export\n\nquestion,answer,note\nq1,"a, b",\n,,\nq2,"two\nlines"," x "\n'
            'q3,None,-\n\n\n')
    path = tmp_path / "t.csv"
    path.write_text(text)  # the fast reader finds lines on demand, from the file
    fast = read_delimited(path, text.encode("utf-8"))
    careful = read_delimited(path, text.replace("export", "export\xe9").encode("cp1252"))
    assert fast[0].to_dict("records") == careful[0].to_dict("records") == [
        {"question": "q1", "answer": "a, b", "note": ""},
        {"question": "q2", "answer": "two\nlines", "note": " x "},
        {"question": "q3", "answer": "None", "note": "-"}]
    for _, report in (fast, careful):
        assert [report.where(i) for i in range(3)] == [
            "row 1 (line 4)", "row 2 (line 6)", "row 3 (line 8)"]
        assert report.notes and report.dropped["blank row"] >= 3
    assert fast[1].dropped == {"blank row": 3}  # ",,", and the two blank lines at the end
    assert isinstance(fast[0]["answer"].dtype, pd.StringDtype)  # pyarrow's strings


def test_the_notebook_parameters_reach_the_reader(tmp_path):
    from lorahelpers.params import Params, from_env
    from lorahelpers.pipeline import prepare_data

    path = tmp_path / "rows.csv"
    path.write_text("question,answer\nq0,N/A\n" + "".join(f"q{i},a{i}\n" for i in range(1, 6)))
    params = Params(kind="table", data=str(path), template="{question}", output_column="answer",
                    eval_size=1, **from_env({"LORAHELPERS_EMPTY_MARKERS": "N/A,-",
                                             "LORAHELPERS_HEADER_ROW": "1"}))
    data = prepare_data(params)
    assert data.report.dropped == {"empty output": 1} and data.report.emptied == {"N/A": 1}
    assert len(data.train) + len(data.eval) == 5
    params.header_row = 2  # "q0,N/A" names the columns now
    assert list(prepare_data(params, template="{q0}", output_column="N/A").report.emptied) == []


def test_a_dataframe_index_column_is_named_not_taken_for_a_title(tmp_path):
    path = tmp_path / "index.csv"
    pd.DataFrame({"question": ["q1", "q2"], "answer": ["a1", "a2"]}).to_csv(path)  # ",question,answer"
    with pytest.raises(DataError, match=r"index\.csv, line 1, column 1: the column has values "
                                        r"but no name"):
        load_table(path)
