"""Notebook parameters: defaults per runtime, environment overrides, validation."""

from __future__ import annotations

import pytest

from lorahelpers.params import TABLE_TEMPLATE, Params, default_params
from lorahelpers.runtime import RuntimeReport


def runtime(cuda: bool) -> RuntimeReport:
    return RuntimeReport(cuda=cuda, gpu_name="T4" if cuda else None,
                         gpu_memory_gb=15.0 if cuda else None, bf16=not cuda, unsloth=cuda,
                         colab=cuda, cpu_threads=2, torch_version="2.13.0", python_version="3.12")


def test_cpu_defaults_use_embedded_model_and_local_data():
    p = default_params("alpaca", runtime=runtime(False), env={})
    assert p.model == "embedded" and p.chat_format == "chatml" and not p.load_in_4bit
    assert p.data.endswith("data/alpaca_train.jsonl") and p.eval_data.endswith("alpaca_eval.jsonl")


def test_gpu_defaults_use_unsloth_llama_and_hub_data():
    p = default_params("alpaca", runtime=runtime(True), env={})
    assert p.model.startswith("unsloth/Llama-3") and p.model.endswith("bnb-4bit")
    assert p.chat_format == "llama3" and p.load_in_4bit
    assert p.data == "yahma/alpaca-cleaned"
    t = default_params("table", runtime=runtime(True), env={})
    assert t.data.endswith("data/table.xlsx")


def test_environment_overrides_every_type():
    env = {"LORAHELPERS_MAX_STEPS": "7", "LORAHELPERS_LEARNING_RATE": "5e-4",
           "LORAHELPERS_LOAD_IN_4BIT": "no", "LORAHELPERS_QUANTS": "q8_0, Q4_K_M",
           "LORAHELPERS_OLLAMA_NAME": "mine"}
    p = default_params("alpaca", runtime=runtime(True), env=env)
    assert (p.max_steps, p.learning_rate, p.load_in_4bit) == (7, 5e-4, False)
    assert p.quants == ("q8_0", "q4_k_m") and p.ollama_name == "mine"


def test_explicit_overrides_beat_the_environment():
    p = default_params("alpaca", runtime=runtime(False), env={"LORAHELPERS_MAX_STEPS": "7"},
                       max_steps=3)
    assert p.max_steps == 3


@pytest.mark.parametrize("env, message", [
    ({"LORAHELPERS_MAX_STEPS": "ten"}, "LORAHELPERS_MAX_STEPS='ten' is not a valid int"),
    ({"LORAHELPERS_LOAD_IN_4BIT": "maybe"}, "not a valid bool"),
    ({"LORAHELPERS_QUANTS": "q3_x"}, "unknown GGUF type"),
    ({"LORAHELPERS_MAX_STEPS": "0"}, "max_steps is 0. Fix: set it to 1 or more"),
])
def test_bad_values_are_named(env, message):
    with pytest.raises(ValueError, match=message):
        default_params("alpaca", runtime=runtime(False), env=env)


def test_unknown_kind():
    with pytest.raises(ValueError, match="'alpaca' or 'table'"):
        Params(kind="csv")


@pytest.mark.parametrize("cuda", [False, True], ids=["cpu-defaults", "cuda-defaults"])
def test_table_defaults_read_the_sample_workbook(cuda):
    p = default_params("table", runtime=runtime(cuda), env={})
    assert p.data.endswith("data/table.xlsx") and p.eval_data is None
    assert (p.sheet, p.eval_sheet, p.output_column) == ("orders", "held_out", "shipping_eur")
    assert p.template == TABLE_TEMPLATE and "{zone}" in p.template and "[[" in p.template
    if not cuda:  # the measured CPU calibration for the sample orders
        assert (p.max_steps, p.learning_rate) == (80, 1e-3)
    a = default_params("alpaca", runtime=runtime(cuda), env={})
    assert (a.sheet, a.eval_sheet, a.template, a.output_column) == (None, None, None, None)


def test_table_fields_from_the_environment():
    env = {"LORAHELPERS_SHEET": "Sheet1", "LORAHELPERS_EVAL_SHEET": "",
           "LORAHELPERS_TEMPLATE": "{product} in {colour}?", "LORAHELPERS_OUTPUT_COLUMN": "price"}
    p = default_params("table", runtime=runtime(False), env=env)
    assert (p.sheet, p.eval_sheet) == ("Sheet1", None)
    assert (p.template, p.output_column) == ("{product} in {colour}?", "price")


@pytest.mark.parametrize("fields", [{"template": "{a}"}, {"output_column": "b"}])
def test_template_and_output_column_go_together(fields):
    with pytest.raises(ValueError, match="template and output_column go together"):
        Params(kind="table", **fields)


def test_every_default_scorer_exists():
    from lorahelpers.inference import _scorer, token_f1

    for cuda in (False, True):
        for kind in ("alpaca", "table"):
            _scorer(default_params(kind, runtime=runtime(cuda), env={}).scorer)
    assert token_f1("the cat sat", "the cat sat") == 1.0
    assert token_f1("the cat sat", "a dog ran") == 0.0
    assert 0.5 < token_f1("the cat sat", "a cat sat down") < 0.6


# ---- one source of defaults ---------------------------------------------------------------


def report(cuda: bool, capability=None, bf16=False) -> RuntimeReport:
    return RuntimeReport(cuda=cuda, gpu_name="GPU" if cuda else None,
                         gpu_memory_gb=15.0 if cuda else None, bf16=bf16, unsloth=False,
                         colab=False, cpu_threads=2, torch_version="2.13.0",
                         python_version="3.12", capability=capability)


DEVICES = {"cpu": report(False), "t4": report(True, (7, 5)), "a100": report(True, (8, 0), True)}


def test_a_bare_params_leaves_every_device_default_to_be_decided():
    from lorahelpers.params import DEVICE_FIELDS

    bare = Params()
    assert all(getattr(bare, name) is None for name in DEVICE_FIELDS)
    assert bare.examples_per_step is None


@pytest.mark.parametrize("device", DEVICES)
def test_params_notebook_defaults_and_train_settings_resolve_alike(device):
    from lorahelpers.params import DEVICE_FIELDS, device_defaults
    from lorahelpers.training import TrainSettings

    runtime = DEVICES[device]
    table = device_defaults(runtime)
    resolved = Params(lora_r=4).resolved(runtime)
    notebook = default_params("alpaca", runtime=runtime, env={})
    trained = TrainSettings().resolved(runtime)
    for name in ("batch_size", "grad_accum", "learning_rate", "max_steps"):
        assert getattr(resolved, name) == getattr(notebook, name) == getattr(trained, name) \
            == table[name], name
    assert all(getattr(resolved, name) is not None for name in DEVICE_FIELDS)
    assert resolved.lora_r == 4 and resolved.source("lora_r") == "set"
    gpu = device != "cpu"
    assert (resolved.load_in_4bit, resolved.examples_per_step) == (gpu, 8)
    assert resolved.model == ("unsloth/Llama-3.2-3B-Instruct-bnb-4bit" if gpu else "embedded")
    assert resolved.source("batch_size") == ("GPU default" if gpu else "CPU default")


def test_resolving_keeps_what_was_given():
    p = Params(max_steps=7, quants="f16", chat_format="gemma").resolved(DEVICES["t4"])
    assert (p.max_steps, p.quants, p.chat_format) == (7, ("f16",), "gemma")
    assert p.batch_size == 2 and p.source("max_steps") == "set"


def test_the_table_says_where_each_value_came_from():
    env = {"LORAHELPERS_MAX_STEPS": "7", "LORAHELPERS_EVAL_DATA": ""}
    p = default_params("alpaca", runtime=DEVICES["t4"], env=env, lora_r=8)
    sources = {name: source for name, _, source in p.table()}
    assert sources["max_steps"] == "env LORAHELPERS_MAX_STEPS"
    assert sources["eval_data"] == "env LORAHELPERS_EVAL_DATA" and p.eval_data is None
    assert sources["lora_r"] == "set" and sources["seed"] == "default"
    assert sources["batch_size"] == sources["data"] == "GPU default"  # differs from CPU
    assert sources["ollama_name"] == "alpaca default"
    p.batch_size = 4  # changed in the parameters cell
    assert p.source("batch_size") == "set" and "4 x 4 = 16" in p._repr_html_()
    assert "<td>GPU default</td>" in p._repr_html_()


@pytest.mark.parametrize("name", ["data", "eval_data", "sheet", "eval_sheet", "system",
                                  "keep_dir", "hub_repo"])
def test_empty_text_means_none_however_it_is_given(name):
    assert getattr(Params(**{name: ""}), name) is None
    assert getattr(Params(**{name: "  "}), name) is None
    p = Params()
    setattr(p, name, "")
    assert getattr(p, name) is None
    from_environment = default_params("alpaca", runtime=DEVICES["cpu"],
                                      env={f"LORAHELPERS_{name.upper()}": ""})
    assert getattr(from_environment, name) is None
    assert getattr(Params(**{name: "x"}), name) == "x"


def test_an_empty_environment_variable_leaves_the_device_default():
    p = default_params("alpaca", runtime=DEVICES["cpu"], env={"LORAHELPERS_MAX_STEPS": ""})
    assert p.max_steps == 40 and p.source("max_steps") == "CPU default"
    assert Params(template="", output_column="").template is None  # both empty: no table


def test_empty_quants_are_the_device_default():
    assert Params(quants="").quants is None
    assert Params(quants="").resolved(DEVICES["cpu"]).quants == ("q8_0",)


def test_a_changed_params_keeps_where_the_other_values_came_from(tmp_path):
    from lorahelpers.notebook import choose_sheets, use_upload
    from lorahelpers.two_adapters import namer_params

    params = default_params("table", runtime(False), env={}, output_dir=str(tmp_path))
    assert params.source("batch_size") == "CPU default"
    upload = {"orders.csv": {"content": b"zone,express\nA,yes\n"}}
    quiet = {"progress": lambda line: None}
    for changed in (params.replace(seed=1), use_upload(params, upload, **quiet),
                    choose_sheets(params, **quiet), namer_params(params)):
        assert changed.source("batch_size") == "CPU default"
        assert changed.source("template") == "table default"
    assert use_upload(params, upload, **quiet).source("data") == "set"
