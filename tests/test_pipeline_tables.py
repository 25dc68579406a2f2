"""prepare_data reads a table's sheet, template and answer column from the parameters, and
its keyword arguments still win (no model, no torch)."""

import dataclasses
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
    assert first[0]["content"] == ("Zone B, express: FALSE. Order of scarf (clothing), 0.21 kg, "
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
    assert re.fullmatch(r"Zone [ABCD], express (TRUE|FALSE)\?", data.train[0][0]["content"])
    assert len(data.eval) == 40  # eval_size (40) caps the 127 orders


def test_a_template_column_the_sheet_lacks_is_named():
    with pytest.raises(DataError, match=r"template column \{weight\} is not in .*\[orders\].*"
                                        r"closest is 'weight_kg'"):
        prepare_data(table_params(template="{item}, {weight} kg"))


# ---- the notebooks' steps around the data: upload, sheets, two-adapter parameters ---------


def _said(step, *args):
    """(what a notebook step returns, what it said)."""
    said = []
    return step(*args, progress=said.append), "\n".join(said)


def test_the_sample_workbook_keeps_its_sheets():
    from lorahelpers.notebook import choose_sheets

    params, note = _said(choose_sheets, table_params())
    assert (params.sheet, params.eval_sheet) == ("orders", "held_out")
    assert note == ("Sheets in the workbook: orders, held_out\n"
                    "Rows to learn from: orders. Held-out rows: held_out.")


def test_sheets_the_workbook_lacks_fall_back_and_say_so(tmp_path):
    import pandas as pd

    from lorahelpers.notebook import choose_sheets
    from lorahelpers.pipeline import prepare_data

    book = tmp_path / "mine.xlsx"
    frame = pd.read_csv(ROOT / "data" / "table.csv")
    with pd.ExcelWriter(book) as writer:
        frame.to_excel(writer, sheet_name="Sheet1", index=False)
        frame.head(3).to_excel(writer, sheet_name="notes", index=False)
    params, note = _said(choose_sheets, table_params(data=str(book), eval_data="", eval_size=10))
    assert (params.sheet, params.eval_sheet) == ("Sheet1", None)
    assert note.splitlines() == [
        "Sheets in the workbook: Sheet1, notes",
        "No sheet 'orders' here: using the first sheet, 'Sheet1'.",
        "No held-out sheet 'held_out' here: setting 10 rows aside at random instead.",
        "Rows to learn from: Sheet1. Held-out rows: 10 rows set aside at random."]
    data = prepare_data(params)  # what the notebook's next cells read
    assert len(data.eval) == 10 and data.report.source.endswith("[Sheet1]")


def test_a_csv_has_no_sheets():
    from lorahelpers.notebook import choose_sheets

    params, note = _said(choose_sheets, table_params(data=str(ROOT / "data" / "table.csv")))
    assert (params.sheet, params.eval_sheet) == (None, None)
    assert note == "Rows to learn from: table.csv. Held-out rows: 40 rows set aside at random."


def test_an_upload_replaces_the_sample_and_nothing_uploaded_keeps_it(tmp_path):
    from lorahelpers.notebook import use_upload

    params = table_params(output_dir=str(tmp_path))
    same, note = _said(use_upload, params, {})
    assert same == params and note == f"No file uploaded: using the sample {params.data}"
    csv = (ROOT / "data" / "table.csv").read_bytes()
    mine, note = _said(use_upload, params, ({"name": "orders.csv", "content": memoryview(csv)},))
    assert mine.data == str(tmp_path / "uploads" / "orders.csv") and mine.eval_data is None
    assert note == f"Using your file: {mine.data}"
    assert (tmp_path / "uploads" / "orders.csv").read_bytes() == csv
    assert params.data.endswith("table.xlsx")  # the params passed in are left as they were


def test_two_adapter_defaults_yield_to_the_environment():
    from lorahelpers.two_adapters import namer_params, two_adapter_params

    gpu = dataclasses.replace(CPU, cuda=True, gpu_name="Tesla T4", gpu_memory_gb=15.0,
                              capability=(7, 5))
    cpu = two_adapter_params(CPU, env={})
    assert (cpu.max_steps, cpu.quants, cpu.eval_size) == (24, ("f16",), 20)
    assert cpu.data.endswith("alpaca_train.jsonl") and cpu.output_dir == "outputs/two_adapters"
    assert (two_adapter_params(gpu, env={}).max_steps, two_adapter_params(gpu, env={}).quants) \
        == (60, ("q8_0",))
    env = {"LORAHELPERS_MAX_STEPS": "3", "LORAHELPERS_QUANTS": "q8_0",
           "LORAHELPERS_OUTPUT_DIR": "elsewhere"}
    mine = two_adapter_params(CPU, env=env)
    assert (mine.max_steps, mine.quants, mine.output_dir) == (3, ("q8_0",), "elsewhere")
    namer = namer_params(mine)
    assert namer.data.endswith("extract_train.jsonl") and namer.eval_data.endswith(
        "extract_eval.jsonl")
    assert (namer.max_steps, namer.output_dir) == (3, "elsewhere")


def test_registration_is_skipped_with_the_reason_when_no_server_answers(tmp_path):
    import socket

    from lorahelpers.chat import get_chat_format
    from lorahelpers.pipeline import register_or_skip

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    registration = register_or_skip("m", tmp_path / "m.gguf", get_chat_format("chatml"),
                                    host=f"http://127.0.0.1:{port}")
    assert registration.info is None and not registration.registered
    assert repr(registration).startswith("skipped: no Ollama server answers")
