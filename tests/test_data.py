"""Data layer: loading each source, value rendering, column merging, formats, split."""

import datetime as dt
import decimal
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorahelpers.data import (
    DataReport,
    extend_conversations,
    load_table,
    merge_columns,
    preview,
    render_value,
    split,
    to_conversations,
)

ROOT = Path(__file__).resolve().parents[1]
ROWS = [{"instruction": "Say hi", "input": "", "output": "hi"},
        {"instruction": "Add", "input": "2 and 3", "output": 5}]


def test_importing_the_data_layer_does_not_import_torch(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,x\n", encoding="utf-8")
    code = (
        "import sys\n"
        "import lorahelpers.chat, lorahelpers.data as d\n"
        f"d.to_conversations({str(tmp_path / 't.csv')!r}, template='{{a}}', output_column='b')\n"
        f"d.load_table({str(ROOT / 'data' / 'table.xlsx')!r})\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("value, text", [
    (3, "3"), (3.0, "3"), (np.float64(3.0), "3"), (np.int64(-7), "-7"), (2.5, "2.5"),
    (0.1 + 0.2, "0.30000000000000004"), (np.float32(0.1), "0.1"), (1e20, "1e+20"),
    (1234567.0, "1234567"), (float("nan"), ""), (None, ""), (pd.NA, ""), (pd.NaT, ""),
    (np.nan, ""), (True, "yes"), (np.bool_(False), "no"), ("  padded \n", "padded"),
    (dt.date(2024, 2, 29), "2024-02-29"), (dt.datetime(2024, 2, 29), "2024-02-29"),
    (pd.Timestamp("2024-02-29 13:05"), "2024-02-29 13:05"),
    (dt.datetime(2024, 1, 1, 8, 30, 15), "2024-01-01 08:30:15"), (dt.time(7, 45), "07:45:00"),
    (decimal.Decimal("1.50"), "1.5"), ([1, "a"], '[1, "a"]'), ({"k": "é"}, '{"k": "é"}'),
    (float("inf"), "infinity"),
])
def test_render_value(value, text):
    assert render_value(value) == text


def test_float_noise_from_pandas_is_removed():
    # an integer column with a gap becomes float64 in pandas: it must not print "3.0"
    df = pd.DataFrame({"n": [3, None, 12]})
    assert df["n"].dtype == np.float64
    assert [render_value(v) for v in df["n"]] == ["3", "", "12"]


def test_merge_columns_blocks_and_literal_braces():
    row = {"name": "Ada", "age": 36.0, "city": None, "note": " "}
    template = "{name}[[, aged {age}]][[ from {city}]][[ ({note})]] {{literal}}"
    assert merge_columns(template, row) == "Ada, aged 36 {literal}"
    assert merge_columns("[[{name} in {city}]]!", row) == "!"  # any empty column drops it
    assert merge_columns("Line1\n[[Your input is:\n{name}]]", row) == \
        "Line1\nYour input is:\nAda"


def test_merge_columns_takes_a_pandas_row_and_odd_column_names():
    df = pd.DataFrame({"Product name": ["Lamp"], "price €": [19.9]})
    assert merge_columns("{Product name} costs {price €}", df.iloc[0]) == "Lamp costs 19.9"


def test_alpaca_rows(tmp_path):
    convs, report = to_conversations(ROWS)
    assert report.format == "alpaca"
    assert convs == [
        [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}],
        [{"role": "user", "content": "Add\n\n### Input:\n2 and 3"},
         {"role": "assistant", "content": "5"}]]
    assert (report.rows_read, report.rows_kept) == (2, 2)


def test_alpaca_with_system_column_and_system_argument():
    rows = [{"instruction": "a", "output": "b", "system": "row system"}]
    convs, _ = to_conversations(rows)
    assert convs[0][0] == {"role": "system", "content": "row system"}
    convs, _ = to_conversations(rows, system="Be brief.")
    assert convs[0][0] == {"role": "system", "content": "Be brief."}
    assert [m["role"] for m in convs[0]] == ["system", "user", "assistant"]


def test_sharegpt_rows(tmp_path):
    path = tmp_path / "chat.jsonl"
    row = {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                             {"from": "gpt", "value": "A"}, {"from": "human", "value": "Q2"},
                             {"from": "gpt", "value": "A2"}]}
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    convs, report = to_conversations(path)
    assert report.format == "sharegpt"
    assert [(m["role"], m["content"]) for m in convs[0]] == [
        ("system", "S"), ("user", "Q"), ("assistant", "A"), ("user", "Q2"), ("assistant", "A2")]


def test_messages_rows_from_parquet(tmp_path):
    msgs = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
            [{"role": "user", "content": "only a question"}]]
    path = tmp_path / "m.parquet"
    pd.DataFrame({"messages": msgs}).to_parquet(path)
    convs, report = to_conversations(path)
    assert report.format == "messages"
    assert convs == [msgs[0]]
    assert report.dropped == {"no assistant reply at the end": 1}


def test_table_rows_from_csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("city;temp;rain\nOslo;3.0;yes\nRome;;no\nLima;18;\n", encoding="utf-8")
    convs, report = to_conversations(path, template="{city}[[ at {temp} C]]",
                                     output_column="rain")
    assert [c[0]["content"] for c in convs] == ["Oslo at 3.0 C", "Rome"]
    assert [c[1]["content"] for c in convs] == ["yes", "no"]
    assert report.dropped == {"empty output": 1}
    assert "';'" in " ".join(report.warnings)


def test_csv_as_written_utf8_bom_quotes_and_marker_words(tmp_path):
    path = tmp_path / "t.csv"
    text = 'name,qty,note\n"Smith, J.",007,"two\nlines"\nLee,1,N/A\n'
    path.write_bytes("\ufeff".encode() + text.encode("utf-8"))
    df, report = load_table(path)
    assert list(df.columns) == ["name", "qty", "note"]
    assert df["name"].tolist() == ["Smith, J.", "Lee"]
    assert df["qty"].tolist() == ["007", "1"]  # CSV cells are kept as written
    assert render_value(df["note"][1]) == "N/A"  # a word, not a missing value
    assert report.where(0) == "row 1 (line 2)" and report.where(1) == "row 2 (line 4)"


def test_tsv_and_json_and_jsonl_with_blank_lines(tmp_path):
    (tmp_path / "t.tsv").write_text("a\tb\n1\tx, y\n", encoding="utf-8")
    df, _ = load_table(tmp_path / "t.tsv")
    assert df.to_dict("records") == [{"a": "1", "b": "x, y"}]
    (tmp_path / "t.json").write_text(json.dumps({"data": ROWS}), encoding="utf-8")
    df, report = load_table(tmp_path / "t.json")
    assert len(df) == 2 and "data" in report.warnings[0]
    (tmp_path / "t.jsonl").write_text("\n" + json.dumps(ROWS[0]) + "\n\n" +
                                      json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    df, report = load_table(tmp_path / "t.jsonl")
    assert report.where(1) == "row 2 (line 4)"
    (tmp_path / "lines.json").write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]))
    df, report = load_table(tmp_path / "lines.json")
    assert len(df) == 2 and "JSON Lines" in report.warnings[0]


def test_xlsx_sheets_by_name_and_index_with_typed_cells():
    path = ROOT / "data" / "table.xlsx"
    orders, report = load_table(path)
    held, _ = load_table(path, sheet=1)
    named, _ = load_table(path, sheet="held_out")
    assert report.source.endswith("[orders]") and len(orders) == 130
    assert held.equals(named) and len(held) == 30
    assert orders["order_date"][0] == "2025-06-04"  # as its yyyy-mm-dd format shows it
    raw, _ = load_table(path, raw_values=True)
    assert isinstance(raw["order_date"][0], dt.datetime) and raw["express"][0] is False
    assert orders["express"].isin(["TRUE", "FALSE"]).all()  # boolean cells as Excel shows them
    assert report.where(0) == "row 1 (sheet row 2)"


def test_dataframe_and_datasets_sources():
    datasets = pytest.importorskip("datasets")
    rows = [{**r, "output": str(r["output"])} for r in ROWS]
    ds = datasets.Dataset.from_list(rows)
    convs, report = to_conversations(ds)
    assert len(convs) == 2 and "datasets.Dataset" in report.source
    convs2, _ = to_conversations(pd.DataFrame(rows))
    assert convs2 == convs


def test_duplicates_counted_and_optionally_dropped():
    rows = ROWS + [ROWS[0], ROWS[0]]
    convs, report = to_conversations(rows)
    assert len(convs) == 4 and report.duplicates == 2
    assert "row 3 repeats row 1" in report.warnings[0]
    convs, report = to_conversations(rows, drop_duplicates=True)
    assert len(convs) == 2 and report.dropped == {"duplicate": 2}


def test_report_renders_as_text_and_html():
    _, report = to_conversations(ROWS + [{"instruction": "x", "output": ""}])
    text = str(report)
    assert "rows read   3" in text and "rows kept   2" in text and "empty output: 1" in text
    html = report._repr_html_()
    assert html.startswith("<table>") and "<td style='text-align:left'>2</td>" in html
    report.warnings.append("<b>")
    assert "&lt;b&gt;" in report._repr_html_()
    assert isinstance(report, DataReport)


def test_conversation_extension_is_seeded_and_keeps_first_system():
    convs = [[{"role": "system", "content": "S"}, {"role": "user", "content": f"q{i}"},
              {"role": "assistant", "content": f"a{i}"}] for i in range(6)]
    a = extend_conversations(convs, 3, seed=1)
    assert a == extend_conversations(convs, 3, seed=1)
    assert a != extend_conversations(convs, 3, seed=2)
    for i, conv in enumerate(a):
        assert conv[:3] == convs[i]
        assert [m["role"] for m in conv] == ["system"] + ["user", "assistant"] * 3
        assert len({m["content"] for m in conv if m["role"] == "user"}) == 3
    via, report = to_conversations([{"instruction": f"q{i}", "output": f"a{i}"}
                                    for i in range(5)], conversation_extension=2)
    assert len(via) == 5 and all(len(c) == 4 for c in via)


def test_split_by_fraction_and_count_is_seeded_and_disjoint():
    items = [[{"role": "assistant", "content": str(i)}] for i in range(100)]
    train, held = split(items, 0.1, seed=7)
    assert (len(train), len(held)) == (90, 10)
    assert split(items, 0.1, seed=7) == (train, held)
    assert split(items, 0.1, seed=8)[1] != held
    assert sorted(map(str, train + held)) == sorted(map(str, items))
    assert len(split(items, 25)[1]) == 25


def test_split_stratified_keeps_label_shares():
    items = [[{"role": "user", "content": str(i)},
              {"role": "assistant", "content": "POS" if i % 4 else "NEG"}] for i in range(200)]
    train, held = split(items, 0.2, stratify=True)
    count = Counter(c[-1]["content"] for c in held)
    assert count == {"POS": 30, "NEG": 10}
    assert len(train) == 160


def test_preview_uses_chat_format_when_given():
    from lorahelpers.chat import get_chat_format

    convs, _ = to_conversations(ROWS)
    assert preview(convs, 1, get_chat_format("chatml")) == get_chat_format("chatml").render(convs[0])
    assert preview(convs, 5).count("user:") == 2


@settings(max_examples=150, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_rendered_floats_read_back_exactly_and_never_end_in_dot_zero(x):
    text = render_value(x)
    assert float(text) == x
    assert not text.endswith(".0")


@settings(max_examples=150, deadline=None)
@given(st.text(), st.text(alphabet="{}()ab \n", max_size=12))
def test_values_are_inserted_literally(value, literal):
    escaped = literal.replace("{", "{{").replace("}", "}}")
    out = merge_columns(escaped + "{col}" + escaped, {"col": value})
    assert out == literal + value.strip() + literal
