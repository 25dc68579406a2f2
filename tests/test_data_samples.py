"""The sample data in data/: clean, balanced, held-out parts disjoint, files in agreement."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from lorahelpers.chat import get_chat_format
from lorahelpers.data import load_table, render_value, to_conversations

DATA = Path(__file__).resolve().parents[1] / "data"
TEMPLATE = ("Order of {item} ({category})[[, {weight_kg} kg]][[, gift note: {gift_note}]]. "
            "Zone {zone}, express: {express}, ordered {order_date}. Shipping in EUR?")


def rows(name):
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]


def test_alpaca_samples_are_balanced_disjoint_and_short():
    train, held = rows("alpaca_train.jsonl"), rows("alpaca_eval.jsonl")
    assert 200 <= len(train) <= 300 and 40 <= len(held) <= 60
    assert Counter(r["output"] for r in train) == {"POS": len(train) // 2, "NEG": len(train) // 2}
    assert Counter(r["output"] for r in held) == {"POS": len(held) // 2, "NEG": len(held) // 2}
    assert not {r["input"] for r in train} & {r["input"] for r in held}
    assert len({r["input"] for r in train}) == len(train)
    assert all(len(r["input"].split()) <= 25 for r in train + held)
    convs, report = to_conversations(DATA / "alpaca_train.jsonl")
    assert report.rows_kept == len(train) and report.duplicates == 0 and not report.dropped


def test_alpaca_eval_has_unseen_wording():
    train_words = {w for r in rows("alpaca_train.jsonl") for w in r["input"].lower().split()}
    unseen = [r for r in rows("alpaca_eval.jsonl")
              if set(r["input"].lower().split()) - train_words]
    assert len(unseen) >= 5


def test_table_csv_and_xlsx_hold_the_same_orders():
    for csv_name, sheet in (("table.csv", "orders"), ("table_eval.csv", "held_out")):
        from_csv, csv_report = to_conversations(DATA / csv_name, template=TEMPLATE,
                                                output_column="shipping_eur")
        from_xlsx, xlsx_report = to_conversations(DATA / "table.xlsx", sheet=sheet,
                                                  template=TEMPLATE, output_column="shipping_eur")
        assert from_csv == from_xlsx
        assert csv_report.dropped == xlsx_report.dropped
    assert csv_report.dropped == {}
    df, _ = load_table(DATA / "table.xlsx")
    assert 100 <= len(df) + len(load_table(DATA / "table_eval.csv")[0]) <= 200
    assert df["gift_note"].map(render_value).eq("").sum() > 0  # some empty cells
    assert df["weight_kg"].map(render_value).eq("").sum() > 0


def test_table_output_follows_the_documented_rule():
    fee = {"A": 4, "B": 6, "C": 9, "D": 12}
    for name in ("table.csv", "table_eval.csv"):
        df, _ = load_table(DATA / name)
        for row in df.to_dict("records"):
            if render_value(row["shipping_eur"]):
                expected = fee[row["zone"]] + (5 if row["express"] == "TRUE" else 0)
                assert render_value(row["shipping_eur"]) == str(expected)


def test_training_text_from_samples_has_spans_on_the_labels():
    convs, _ = to_conversations(DATA / "alpaca_eval.jsonl")
    fmt = get_chat_format("chatml")
    text, spans = fmt.render_with_spans(convs[0])
    assert text[spans[0][0]:spans[0][1]] in ("POS<|im_end|>", "NEG<|im_end|>")


def test_make_samples_reproduces_the_committed_files(tmp_path):
    script = (DATA / "make_samples.py").read_text(encoding="utf-8")
    copy = tmp_path / "make_samples.py"
    copy.write_text(script, encoding="utf-8")
    subprocess.run([sys.executable, str(copy)], check=True, cwd=tmp_path)
    for name in ("alpaca_train.jsonl", "alpaca_eval.jsonl", "table.csv", "table_eval.csv"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
    for sheet in ("orders", "held_out"):
        assert load_table(tmp_path / "table.xlsx", sheet=sheet)[0].equals(
            load_table(DATA / "table.xlsx", sheet=sheet)[0])
