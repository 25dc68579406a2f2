"""The GPU path's decisions, tested on CPU: import order (Unsloth first), precision per
device, the one source of device defaults, how many rows a run tokenizes, and how GGUF files
are scored on a GPU runtime. Nothing here claims anything about a real GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorahelpers.heldout import GGUF_ROWS_WITHOUT_OFFLOAD, gguf_scoring_plan
from lorahelpers.params import default_params, device_defaults
from lorahelpers.pipeline import train_settings
from lorahelpers.runtime import RuntimeReport, choose_precision

ROOT = Path(__file__).resolve().parent.parent


def runtime(cuda: bool, capability=None, bf16=False, **changes) -> RuntimeReport:
    fields = dict(cuda=cuda, gpu_name="Tesla T4" if cuda else None,
                  gpu_memory_gb=15.0 if cuda else None, bf16=bf16, unsloth=cuda, colab=cuda,
                  cpu_threads=2, torch_version="2.9.0", python_version="3.12.12",
                  capability=capability)
    return RuntimeReport(**(fields | changes))


# ---- Unsloth first: importing lorahelpers loads none of the libraries Unsloth patches ------


PATCHED = ("trl", "transformers", "peft", "unsloth")


@pytest.mark.parametrize("module", ["lorahelpers.training", "lorahelpers.pipeline",
                                    "lorahelpers.params", "lorahelpers.models",
                                    "lorahelpers.cli", "lorahelpers.verify",
                                    "lorahelpers.inference", "lorahelpers.export",
                                    "lorahelpers.demo", "lorahelpers.compare",
                                    "lorahelpers.history", "lorahelpers.llamacpp"])
def test_importing_a_stage_leaves_trl_transformers_peft_unimported(module):
    code = (f"import sys, {module}; "
            f"print([m for m in {PATCHED!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "[]", f"import {module} loaded {out.strip()}"


def test_the_trainer_classes_are_built_on_first_use():
    code = ("import sys; from lorahelpers import training; "
            "assert 'trl' not in sys.modules; meter, progress, trainer = training._classes(); "
            "import trl; assert issubclass(trainer, trl.SFTTrainer); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.stdout.strip() == "ok", out.stderr


def test_a_failed_unsloth_import_is_reported_with_its_reason():
    report = runtime(True, (7, 5), unsloth=False,
                     unsloth_error="ImportError: Unsloth: Please install xformers")
    summary = report.summary()
    assert "Unsloth: no (import failed: ImportError: Unsloth: Please install xformers)" in summary
    assert report.backend == "transformers"


# ---- precision ----------------------------------------------------------------------------


@pytest.mark.parametrize("cuda, capability, cpu_bf16, bf16, reason", [
    (True, (7, 5), False, False, "compute capability 7.5 has no native bf16: fp16"),   # T4
    (True, (7, 0), False, False, "compute capability 7.0 has no native bf16"),         # V100
    (True, (8, 0), False, True, "compute capability 8.0 has native bf16"),             # A100
    (True, (8, 9), False, True, "8.9 has native bf16"),                                 # L4
    (True, (9, 0), False, True, "9.0 has native bf16"),                                 # H100
    (False, None, True, True, "AVX-512 BF16/AMX: bf16 autocast"),
    (False, None, False, False, "float32"),
])
def test_precision_follows_compute_capability(cuda, capability, cpu_bf16, bf16, reason):
    chosen, why = choose_precision(cuda, capability, cpu_bf16)
    assert chosen is bf16 and reason in why


def test_t4_trains_in_fp16_and_the_summary_says_why():
    bf16, reason = choose_precision(True, (7, 5), False)
    report = runtime(True, (7, 5), bf16=bf16, precision_reason=reason)
    assert report.precision == "fp16"
    assert "precision: fp16 (compute capability 7.5 has no native bf16" in report.summary()
    from lorahelpers.training import TrainSettings, precision_flags

    s = TrainSettings(output_dir="unused").resolved(report)
    assert precision_flags(report.cuda, s.precision) == {"bf16": False, "fp16": True, "use_cpu": False}
    a100 = runtime(True, (8, 0), bf16=True)
    s = TrainSettings(output_dir="unused").resolved(a100)
    assert precision_flags(a100.cuda, s.precision) == {"bf16": True, "fp16": False, "use_cpu": False}
    cpu = runtime(False, bf16=False)
    s = TrainSettings(output_dir="unused").resolved(cpu)
    assert precision_flags(cpu.cuda, s.precision) == {"bf16": False, "fp16": False, "use_cpu": True}
    # asked for, a precision overrides the device's choice; fp16 needs CUDA
    forced = TrainSettings(output_dir="unused", precision="fp32").resolved(a100)
    assert precision_flags(a100.cuda, forced.precision)["bf16"] is False
    assert TrainSettings(output_dir="unused", precision="bf16").resolved(cpu).precision == "bf16"
    with pytest.raises(ValueError, match="'fp16', which trains on a CUDA GPU only. Fix:"):
        TrainSettings(output_dir="unused", precision="fp16").resolved(cpu)
    with pytest.raises(ValueError, match="precision is 'fp64'. Fix: use one of auto, fp32"):
        TrainSettings(output_dir="unused", precision="fp64")


# ---- one source of device defaults ----------------------------------------------------------


@pytest.mark.parametrize("cuda", [True, False])
def test_params_and_train_settings_take_the_same_device_defaults(cuda):
    report = runtime(cuda, (7, 5) if cuda else None)
    defaults = device_defaults(report)
    params = default_params("alpaca", runtime=report, env={})
    from lorahelpers.training import TrainSettings

    resolved = train_settings(params).resolved(report)
    unset = TrainSettings().resolved(report)
    for s in (resolved, unset):
        assert (s.batch_size, s.grad_accum, s.learning_rate) == (
            defaults["batch_size"], defaults["grad_accum"], defaults["learning_rate"])
    assert params.max_steps == defaults["max_steps"]


def test_gpu_defaults_are_those_of_unsloths_notebooks_and_are_shown():
    params = default_params("alpaca", runtime=runtime(True, (7, 5)), env={})
    assert (params.batch_size, params.grad_accum, params.examples_per_step) == (2, 4, 8)
    assert (params.max_steps, params.learning_rate) == (60, 2e-4)
    assert ("examples per step", "2 x 4 = 8", "") in params.table()
    assert "2 x 4 = 8" in params._repr_html_()


def test_only_the_rows_a_run_can_use_are_kept():
    from lorahelpers.training import ROWS_MARGIN, TrainSettings, rows_for_run

    rows = [[{"role": "user", "content": str(i)}] for i in range(51_760)]
    s = TrainSettings(max_steps=60, batch_size=2, grad_accum=4, seed=3407)
    kept = rows_for_run(rows, s)
    assert len(kept) == int(60 * 8 * ROWS_MARGIN)
    assert kept == rows_for_run(rows, s)  # seeded
    assert kept != rows[: len(kept)]  # a sample of the whole file, not its head
    assert len({r[0]["content"] for r in kept}) == len(kept)
    few = rows[:100]
    assert rows_for_run(few, s) == few
    epochs = TrainSettings(max_steps=0, num_epochs=1.0, batch_size=2, grad_accum=4)
    assert len(rows_for_run(rows, epochs)) == len(rows)


# ---- scoring GGUF files on a GPU runtime ----------------------------------------------------


def test_gguf_scoring_plan():
    on_gpu = gguf_scoring_plan(cuda=True, offload=True, n_rows=40)
    assert (on_gpu.rows, on_gpu.n_gpu_layers) == (40, -1)
    cpu_build = gguf_scoring_plan(cuda=True, offload=False, n_rows=40)
    assert (cpu_build.rows, cpu_build.n_gpu_layers) == (GGUF_ROWS_WITHOUT_OFFLOAD, 0)
    assert "CUDA wheel" in cpu_build.note
    cpu = gguf_scoring_plan(cuda=False, offload=False, n_rows=40)
    assert (cpu.rows, cpu.n_gpu_layers) == (40, 0)


def test_free_torch_memory_on_cpu_says_so():
    from lorahelpers.runtime import free_torch_memory

    assert "CPU runtime" in free_torch_memory()


def test_missing_bitsandbytes_is_a_clear_error(monkeypatch, embedded_path):
    import importlib.util

    import torch

    from lorahelpers import models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(models.ModelError, match="needs the bitsandbytes package.*Fix: pip "
                                                "install bitsandbytes"):
        models.load_model(embedded_path, load_in_4bit=True, backend="transformers")


def test_gpu_check_imports_unsloth_before_the_rest():
    script = (ROOT / "scripts" / "gpu_check.py").read_text()
    body = script[script.index("def run("):script.index("def export_checks(")]
    first_unsloth = body.index("import unsloth")
    for name in ("from lorahelpers.data", "from lorahelpers.models", "import trl"):
        if name in body:
            assert body.index(name) > first_unsloth, f"{name} comes before import unsloth"


@pytest.mark.slow
def test_gpu_check_dry_run_goes_through_every_check(tmp_path):
    """The script a lent GPU runs, on CPU with tiny settings: training, q8_0 export verified,
    the direct comparison and GGUF scoring all report figures."""
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(proc.stdout.split("RESULTS ", 1)[1])
    first = rows[0]
    assert first["backend"] == "transformers" and first["steps"] == 2
    assert first["q8_0_vs_reference"]["status"] == "verified"
    assert first["gap_4bit_vs_merged"] is None  # full-precision model on CPU: no 4-bit gap
    assert first["gguf_seconds_per_row"]["cpu"] > 0


# ---- disk and memory preflight before merge and export --------------------------------------

LLAMA_3B = (3_212_749_824, 128_256 * 3072)   # Llama-3.2-3B: parameters, embedding elements
LLAMA_8B = (8_030_261_248, 128_256 * 4096)   # Llama-3.1-8B


def test_export_needs_add_up():
    from lorahelpers.export import export_needs

    needs = export_needs(LLAMA_3B[0], ("q4_k_m", "q8_0"), LLAMA_3B[1], download_base=True)
    assert needs.merged_bytes == 2 * LLAMA_3B[0] == needs.intermediate_bytes
    assert needs.download_bytes == needs.merged_bytes
    assert needs.gguf_bytes["q8_0"] == int(LLAMA_3B[0] * 8.5 / 8)
    assert needs.disk_bytes == (needs.merged_bytes * 3 + sum(needs.gguf_bytes.values()))
    # a 16-bit type among the quants serves the k-quants too: no extra intermediate
    assert export_needs(LLAMA_3B[0], ("f16", "q4_k_m"), LLAMA_3B[1]).intermediate_bytes == 0
    assert export_needs(LLAMA_3B[0], ("q8_0",), LLAMA_3B[1]).intermediate_bytes == 0


def test_preflight_refuses_too_little_disk_or_memory(tmp_path):
    from lorahelpers.export import ExportError, export_needs, preflight_export

    needs = export_needs(LLAMA_8B[0], ("q4_k_m",), LLAMA_8B[1])
    with pytest.raises(ExportError, match=r"GB free, but merging and exporting a 8\.0B-parameter "
                                          r"model to q4_k_m needs about 37\.0 GB(?s:.*)Fix: free"):
        preflight_export(needs, tmp_path / "out", free_disk=20 * 10**9, free_ram=64 * 10**9)
    with pytest.raises(ExportError, match="(?s)memory is available.*Fix: free memory first"):
        preflight_export(needs, tmp_path, free_disk=10**12, free_ram=10**9)
    assert preflight_export(needs, tmp_path, free_disk=10**12, free_ram=64 * 10**9) is needs


def test_parameter_count_of_the_embedded_model(embedded_path):
    import torch
    from transformers import AutoModelForCausalLM

    from lorahelpers.export import base_parameter_count

    model = AutoModelForCausalLM.from_pretrained(embedded_path, dtype=torch.float32)
    total, largest = base_parameter_count(model)
    assert total == sum(p.numel() for p in model.parameters())  # tied head counted once
    assert largest == 49152 * 576


@pytest.mark.parametrize("size, counts", [("3B", LLAMA_3B), ("8B", LLAMA_8B)])
def test_readme_disk_table_is_the_functions(size, counts):
    from lorahelpers.export import export_needs

    readme = (ROOT / "README.md").read_text()
    needs = export_needs(counts[0], ("q4_k_m", "q8_0"), counts[1], download_base=True)
    row = next(line for line in readme.splitlines() if line.startswith(f"| Llama {size}"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == [f"{n / 1e9:.1f} GB" for n in (
        needs.download_bytes, needs.merged_bytes, needs.gguf_bytes["q4_k_m"],
        needs.gguf_bytes["q8_0"], needs.intermediate_bytes, needs.disk_bytes,
        needs.peak_ram_bytes)]
