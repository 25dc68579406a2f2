"""Several processes (RANK / WORLD_SIZE as `torchrun` sets them), without training: only the
main process writes the run's loss curve and summary, and every process keeps enough rows for
the global batch of all of them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from lorahelpers.history import History
from lorahelpers.params import default_params
from lorahelpers.runtime import RuntimeReport

CPU = RuntimeReport(cuda=False, gpu_name=None, gpu_memory_gb=None, bf16=False, unsloth=False,
                    colab=False, cpu_threads=2, torch_version="2.13.0", python_version="3.12")


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    """run_pipeline with its data, model and trainer replaced by stand-ins that write nothing;
    returns the output folder."""
    import lorahelpers.models
    import lorahelpers.pipeline
    import lorahelpers.runtime
    import lorahelpers.training

    out = tmp_path / "out"
    out.mkdir()
    history = History()
    for step, loss in enumerate([2.0, 1.5, 1.2], start=1):
        history.add_train(step=step, loss=loss, learning_rate=1e-4)
    result = SimpleNamespace(adapter_dir=out / "adapter", steps=3, final_loss=1.2,
                             interrupted=False, elapsed_s=1.0, history=history)
    data = SimpleNamespace(train=[], eval=[], report="3 rows")
    monkeypatch.setattr(lorahelpers.runtime, "runtime_report", lambda: CPU)
    monkeypatch.setattr(lorahelpers.pipeline, "prepare_data", lambda params: data)
    monkeypatch.setattr(lorahelpers.pipeline, "load", lambda params: ("model", "tok", "fmt"))
    monkeypatch.setattr(lorahelpers.models, "add_lora", lambda model, settings: model)
    monkeypatch.setattr(lorahelpers.training, "train", lambda *args, **kwargs: result)
    return out


def _params(out):
    return default_params("alpaca", runtime=CPU, env={}, output_dir=str(out), keep_dir="off")


def test_only_the_main_process_writes_the_loss_curve_and_summary(fake_run, monkeypatch):
    from lorahelpers.runner import run_pipeline

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    said = []
    run = run_pipeline(_params(fake_run), export=False, progress=said.append)
    assert sorted(p.name for p in fake_run.iterdir()) == []
    assert run.adapter_dir is None and run.processes == 2 and said == []

    monkeypatch.setenv("RANK", "0")
    run = run_pipeline(_params(fake_run), export=False, progress=said.append)
    assert sorted(p.name for p in fake_run.iterdir()) == ["loss.png", "summary.json"]
    assert (fake_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((fake_run / "summary.json").read_text())
    assert (summary["processes"], summary["steps"], summary["final_loss"]) == (2, 3, 1.2)
    assert run.adapter_dir == fake_run / "adapter" and said


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_the_rows_kept_cover_the_global_batch_of_every_process(monkeypatch, processes):
    from lorahelpers.training import ROWS_MARGIN, TrainSettings, rows_for_run

    monkeypatch.setenv("WORLD_SIZE", str(processes))
    rows = list(range(10_000))
    s = TrainSettings(max_steps=10, batch_size=2, grad_accum=4, seed=3407)
    kept = rows_for_run(rows, s)
    assert len(kept) == int(10 * 2 * 4 * processes * ROWS_MARGIN)
    for rank in range(processes):  # every process reads the same rows
        monkeypatch.setenv("RANK", str(rank))
        assert rows_for_run(rows, s) == kept
