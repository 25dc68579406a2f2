"""`python -m lorahelpers train CONFIG`: the config loader (fast, no model), and the same
training on two CPU processes under torchrun against one process with the same global batch."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorahelpers.cli import main
from lorahelpers.config import ConfigError, convert, load_config, starter_config
from lorahelpers.params import TABLE_TEMPLATE, default_params
from lorahelpers.runtime import RuntimeReport

ROOT = Path(__file__).resolve().parents[1]
CPU = RuntimeReport(cuda=False, gpu_name=None, gpu_memory_gb=None, bf16=False, unsloth=False,
                    colab=False, cpu_threads=2, torch_version=None, python_version="3.11")


def load(path=None, sets=()):
    return load_config(path, sets, env={}, runtime=CPU)


def test_toml_sets_each_field_by_its_type(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('max_steps = 7\nlearning_rate = 3e-4\nload_in_4bit = false\n'
                    'quants = ["q8_0", "q4_k_m"]\nsystem = "Be brief."\nlora_alpha = 32\n')
    params = load(path)
    assert (params.max_steps, params.learning_rate, params.load_in_4bit) == (7, 3e-4, False)
    assert params.quants == ("q8_0", "q4_k_m") and params.system == "Be brief."
    assert params.lora_alpha == 32
    # everything not in the file is this machine's default
    assert params.batch_size == default_params("alpaca", CPU, env={}).batch_size


def test_yaml_reads_the_same_and_takes_2e_4_as_a_number(tmp_path):
    path = tmp_path / "run.yaml"
    # PyYAML reads 2e-4 (no dot) as text; the field's type makes it a float.
    path.write_text("kind: table\nmax_steps: 7\nlearning_rate: 2e-4\nquants: q8_0, f16\n")
    params = load(path)
    assert params.kind == "table" and params.template == TABLE_TEMPLATE
    assert (params.max_steps, params.learning_rate, params.quants) == (7, 2e-4, ("q8_0", "f16"))


def test_set_overrides_the_file_and_repeats(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("max_steps = 7\nbatch_size = 4\n")
    params = load(path, ["max_steps=3", "load_in_4bit=yes", "quants=f16"])
    assert (params.max_steps, params.batch_size, params.load_in_4bit, params.quants) == \
        (3, 4, True, ("f16",))


def test_unknown_key_names_the_file_the_key_and_the_closest_field(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("max_step = 7\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: unknown field 'max_step' (did you mean 'max_steps'?)")
    assert "Fix:" in message
    with pytest.raises(ConfigError, match=r"--set 'lora_rank=4'.*'lora_r'"):
        load(None, ["lora_rank=4"])


@pytest.mark.parametrize("line, field", [('max_steps = "many"', "max_steps"),
                                         ("max_steps = 2.5", "max_steps"),
                                         ("load_in_4bit = 1", "load_in_4bit"),
                                         ("quants = 8", "quants"),
                                         ("learning_rate = true", "learning_rate")])
def test_a_value_of_the_wrong_type_is_named_with_a_fix(tmp_path, line, field):
    path = tmp_path / "run.toml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=rf"^{path}: {field} = .* is not .*Fix: give {field}"):
        load(path)


def test_params_validation_speaks_through_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("batch_size: 0\n")
    with pytest.raises(ConfigError, match=rf"^{path}: batch_size is 0. Fix: set it to 1 or more"):
        load(path)


def test_bad_files_are_named(tmp_path):
    for name, text, message in [("run.toml", "max_steps = = 3", "not valid TOML"),
                                ("run.yaml", "- a\n- b\n", "holds list, not a table of fields"),
                                ("run.json", "{}", "a config file ends in .toml")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=rf"(?s)^{tmp_path / name}: {message}.*Fix:"):
            load(tmp_path / name)


def test_optional_fields_take_none():
    @dataclasses.dataclass
    class WithDeviceDefault:
        max_steps: int | None = None
        optim: str | None = None

    assert convert("max_steps", "none", "--set", WithDeviceDefault) is None
    assert convert("max_steps", None, "f.yaml", WithDeviceDefault) is None
    assert convert("max_steps", "12", "--set", WithDeviceDefault) == 12
    assert convert("optim", "adamw_torch", "--set", WithDeviceDefault) == "adamw_torch"
    with pytest.raises(ConfigError, match="a whole number \\(or none\\)"):
        convert("max_steps", "lots", "--set", WithDeviceDefault)


@pytest.mark.parametrize("kind", ["alpaca", "table"])
def test_the_starter_file_loads_back_to_the_defaults(tmp_path, kind):
    defaults = default_params(kind, CPU, env={})
    text = starter_config(defaults)
    assert "# LoRA rank\nlora_r = 16\n" in text  # each field under its help text
    path = tmp_path / "starter.toml"
    path.write_text(text)
    assert load(path) == defaults


def test_print_config_and_errors_from_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # were validation to let the file through, it would train here
    assert main(["train", "--print-config", "--set", "max_steps=5"]) == 0
    printed = capsys.readouterr().out
    assert "\nmax_steps = 5\n" in printed
    (tmp_path / "run.toml").write_text(printed.replace("max_steps = 5", "max_stepz = 5"))
    assert main(["train", str(tmp_path / "run.toml")]) == 2
    err = capsys.readouterr().err
    assert "unknown field 'max_stepz' (did you mean 'max_steps'?)" in err
    assert "Traceback" not in err


# ---- two processes ------------------------------------------------------------------------

TINY = {"max_steps": 3, "batch_size": 1, "grad_accum": 1, "max_seq_length": 96,
        "eval_size": 2, "learning_rate": 1e-3, "keep_dir": "off"}
# Two processes x batch 1 against one process x batch 2 over 3 steps, on rows whose answers
# have different lengths (the two processes of a step hold different numbers of answer tokens).
# Measured (largest relative loss difference over the steps; distance of the LoRA updates
# B @ A relative to their norm), equal / unequal answer lengths, grad_accum 1:
#   fp32:                    2.6e-5 / 2.7e-5 update, 4e-7 / 3e-7 loss
#   bf16, AMX:               2.9e-2 / 2.4e-2 update, 1.2e-3 / 8e-4 loss
#   bf16, AVX-512 BF16 only: 3.0e-2 / 1.9e-2 update, 9.2e-3 / 1.5e-3 loss
#     (the same CPU with ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16: bf16 rounds differently for
#     batch 1 and batch 2 shapes, and Adam's first steps amplify it)
# Wrong runs these limits reject: the loss averaged per process instead of over the answer
# tokens of all processes (fp32, unequal): 7.2e-2 update, 2.1e-2 loss; one process x batch 1
# (half the data per step): 0.62 update.
TOLERANCE = {"fp32": (1e-4, 1e-3), "bf16": (5e-2, 0.15)}  # (loss, update)


def unequal_answers() -> list[dict]:
    """Alpaca rows whose answers run from 1 to 16 words, the prompt shorter by as much, so the
    length-grouped batches pair answers of different lengths."""
    words = ("the product arrived quickly and works exactly as the seller described it, "
             "sturdy light cheap and quiet").split()
    rows = []
    for i in range(64):
        k = (i * 7) % 16
        rows.append({"instruction": "Tag the review.",
                     "input": f"Review {i}: " + " ".join(words[k:]),
                     "output": " ".join(["POS" if i % 2 == 0 else "NEG"] + words[:k])})
    return rows


def _update_distance(adapter: Path, reference: Path) -> float:
    """|dW - dW_ref| / |dW_ref| over all LoRA updates dW = B @ A (Frobenius norms)."""
    from safetensors.torch import load_file

    a, b = (load_file(p / "adapter_model.safetensors") for p in (adapter, reference))
    assert a.keys() == b.keys()
    diff = norm = 0.0
    for key in (k for k in b if "lora_B" in k):
        other = key.replace("lora_B", "lora_A")
        delta, ref = a[key] @ a[other], b[key] @ b[other]
        diff += float(((delta - ref) ** 2).sum())
        norm += float((ref ** 2).sum())
    assert norm > 0
    return (diff / norm) ** 0.5


@pytest.mark.slow
@pytest.mark.parametrize("precision, grad_accum", [("fp32", 2), ("bf16", 1)])
def test_two_processes_train_the_same_adapter_as_one_with_the_same_global_batch(
        tmp_path, embedded_path, precision, grad_accum):
    from lorahelpers.runner import run_pipeline

    data = tmp_path / "unequal.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in unequal_answers()))
    config = tmp_path / "tiny.toml"
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in
                              (TINY | {"data": str(data), "precision": precision,
                                       "grad_accum": grad_accum}).items()))
    two = tmp_path / "two"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "lorahelpers", "train",
                           str(config), "--set", f"output_dir={two}"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # one process printed the progress and wrote the files, nothing half-written is left
    assert done.stdout.count("[1/5] Reading data") == 1, done.stdout
    assert f"conversations per step (2 processes), {precision}\n" in done.stdout, done.stdout
    assert [p.name for p in two.iterdir() if p.name.startswith(".")] == []
    assert json.loads((two / "summary.json").read_text())["processes"] == 2
    history = json.loads((two / "history.json").read_text())
    assert [r["step"] for r in history if r.get("loss") is not None] == [1, 2, 3]

    one = run_pipeline(load_config(config, [f"output_dir={tmp_path / 'one'}", "batch_size=2"]),
                       export=False, progress=lambda *a: None)
    reference = json.loads((tmp_path / "one" / "history.json").read_text())
    losses = [(r["loss"], s["loss"]) for r, s in zip(history, reference, strict=True)
              if r.get("loss") is not None]
    loss_limit, update_limit = TOLERANCE[precision]
    distance = _update_distance(two / "adapter", one.adapter_dir)
    print(f"{precision}: losses {losses}, update distance {distance:.2e}")
    assert all(abs(a - b) < loss_limit * b for a, b in losses), losses
    assert distance < update_limit, distance


# ---- the learning effect, as the demo reports it ------------------------------------------------


@pytest.mark.slow
def test_train_reports_the_held_out_scores_of_every_stage(tmp_path, monkeypatch):
    """`train --register` on a short run against the Ollama double: the held-out score before
    and after training, of the GGUF and through Ollama, in the output and in summary.json."""
    from lorahelpers.runner import run_pipeline
    from tests.ollama_double import OllamaDouble

    out = tmp_path / "run"
    params = load_config(None, [f"output_dir={out}", "max_steps=3", "batch_size=2",
                                "grad_accum=1", "eval_size=4", "max_seq_length=96",
                                "quants=q8_0", "keep_dir=off", "precision=fp32"])
    said = []
    with OllamaDouble() as double:
        monkeypatch.setenv("OLLAMA_HOST", double.url)
        run_pipeline(params, export=True, register=True, progress=said.append)
    text = "\n".join(said)
    for step in ("[3/8] Scoring the held-out rows before training (exact)",
                 "[5/8] Scoring the held-out rows after training",
                 "[7/8] Scoring the GGUF files with llama.cpp",
                 "[8/8] Registering with Ollama and scoring the held-out rows through it"):
        assert step in text, text
    assert "\n  before: " in text and "\n  after: " in text and "\n  q8_0: " in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["held_out_rows"] == 4 and {"before", "after"} <= set(summary)
    assert set(summary["gguf_scores"]) == {"q8_0"}
    assert summary["ollama_scores"]["check"]["passed"], summary["ollama_scores"]
    columns = summary["comparison"]["columns"]
    assert list(columns) == ["base (before training)", "PyTorch after training",
                             "q8_0 GGUF (llama.cpp)", "Ollama greedy",
                             "Ollama, `ollama run` options"]
    assert columns["PyTorch after training"]["score"] == summary["after"]
    assert "\nheld-out rows: 4\ncolumn " in text  # the comparison table is printed
