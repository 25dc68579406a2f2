"""prepare_data reads a table's sheet, template and answer column from the parameters, and
its keyword arguments still win (no model, no torch)."""

import re
from pathlib import Path

import pytest

from lorahelpers.data import DataError
from lorahelpers.params import default_params
from lorahelpers.pipeline import prepare_data
from lorahelpers.runtime import RuntimeReport

ROOT = Path(__file__).resolve().parents[1]
CPU = RuntimeReport(cuda=False, gpu_name=None, gpu_memory_gb=None, bf16=False, unsloth=False,
                    colab=False, cpu_threads=2, torch_version="2.13.0", python_version="3.11")


def table_params(**overrides):
    return default_params("table", runtime=CPU, env={}, **overrides)


def test_table_params_give_training_and_held_out_sheets():
    data = prepare_data(table_params())
    assert (len(data.train), len(data.eval)) == (127, 30)  # 3 orders have no shipping cost
    assert data.report.dropped == {"empty output": 3}
    assert data.report.source.endswith("[orders]")
    assert data.eval_report.source.endswith("[held_out]")
    first = data.train[0]
    assert first[0]["content"] == ("Zone B, express: no. Order of scarf (clothing), 0.21 kg, "
                                   "ordered 2025-06-04. Shipping in EUR?")
    assert first[1] == {"role": "assistant", "content": "6"}
    train_prompts = {c[0]["content"] for c in data.train}
    assert not train_prompts & {c[0]["content"] for c in data.eval}


def test_eval_size_caps_the_held_out_sheet():
    assert len(prepare_data(table_params(eval_size=12)).eval) == 12


def test_without_an_eval_sheet_rows_are_split_off():
    data = prepare_data(table_params(eval_sheet="", eval_size=20))
    assert (len(data.train), len(data.eval)) == (107, 20)
    assert data.eval_report is None


def test_a_csv_file_with_the_same_params():
    data = prepare_data(table_params(data=str(ROOT / "data" / "table.csv"), sheet="",
                                     eval_data=str(ROOT / "data" / "table_eval.csv"),
                                     eval_sheet=""))
    xlsx = prepare_data(table_params())
    assert data.train == xlsx.train and data.eval == xlsx.eval


def test_keyword_arguments_override_the_params():
    data = prepare_data(table_params(), template="Zone {zone}, express {express}?",
                        output_column="shipping_eur", sheet="held_out", eval_sheet="orders")
    assert len(data.train) == 30
    assert re.fullmatch(r"Zone [ABCD], express (yes|no)\?", data.train[0][0]["content"])
    assert len(data.eval) == 40  # eval_size (40) caps the 127 orders


def test_a_template_column_the_sheet_lacks_is_named():
    with pytest.raises(DataError, match=r"template column \{weight\} is not in .*\[orders\].*"
                                        r"closest is 'weight_kg'"):
        prepare_data(table_params(template="{item}, {weight} kg"))
