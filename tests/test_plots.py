"""History records, their files, the loss plot and the progress displays (no model needed)."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest

from lorahelpers.history import History
from lorahelpers.plots import (
    NotebookProgress,
    TerminalProgress,
    make_progress,
    plot_history,
    smooth,
)


def sample(steps: int = 10, eval_every: int = 5) -> History:
    h = History()
    for step in range(1, steps + 1):
        h.add_train(step, epoch=step / steps, loss=3.0 / step, learning_rate=1e-4 * step,
                    grad_norm=1.0, tokens=100, tokens_per_s=500.0, elapsed_s=0.2 * step)
        if step % eval_every == 0:
            h.add_eval(step, 2.0 / step)
    return h


def test_eval_loss_joins_the_record_of_its_step():
    h = sample()
    assert len(h) == 10
    assert [r["step"] for r in h.records if r["eval_loss"] is not None] == [5, 10]
    assert h.records[4]["loss"] == pytest.approx(0.6) and h.records[4]["eval_loss"] == 0.4
    with pytest.raises(ValueError, match="unknown fields"):
        h.add_train(11, los=1.0)


def test_history_files_are_written_atomically_and_read_back(tmp_path):
    h = sample()
    json_path, csv_path = h.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv", "history.json"]
    assert History.load(tmp_path).records == h.records
    assert json.loads(json_path.read_text()) == h.records
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    assert [float(r["loss"]) for r in rows] == pytest.approx(h.column("loss"))
    assert rows[0]["eval_loss"] == "" and float(rows[4]["eval_loss"]) == pytest.approx(0.4)
    assert h.to_frame()["loss"].tolist() == pytest.approx(h.column("loss"))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    sample(3).save(tmp_path)
    before = (tmp_path / "history.json").read_text()
    monkeypatch.setattr("lorahelpers.atomic.os.replace",
                        lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        sample(5).save(tmp_path)
    assert (tmp_path / "history.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv", "history.json"]


def test_truncate_keeps_the_steps_a_resumed_run_starts_from():
    assert [r["step"] for r in sample().truncate(4).records] == [1, 2, 3, 4]


def test_bad_history_files_are_named(tmp_path):
    (tmp_path / "history.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="history.json"):
        History.load(tmp_path)


def test_smoothing_is_a_bias_corrected_moving_average():
    assert smooth([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])
    out = smooth([0.0, 10.0], 0.5)
    assert out[0] == 0.0 and out[1] == pytest.approx(5 / 0.75)


def test_plot_has_train_smoothed_eval_and_learning_rate_lines(tmp_path):
    fig = plot_history(sample())
    main, lr_axis = fig.axes
    assert [line.get_label() for line in main.get_lines()] == \
        ["train loss", "train loss (smoothed)", "eval loss"]
    assert [line.get_label() for line in lr_axis.get_lines()] == ["learning rate"]
    train, smoothed, evals = main.get_lines()
    assert list(train.get_xdata()) == list(range(1, 11))
    assert list(evals.get_xdata()) == [5, 10]
    rates = list(lr_axis.get_lines()[0].get_ydata())
    assert rates == pytest.approx([1e-4 * s for s in range(1, 11)])
    legend = [t.get_text() for t in main.get_legend().get_texts()]
    assert legend == ["train loss", "train loss (smoothed)", "eval loss", "learning rate"]
    assert fig._repr_png_().startswith(b"\x89PNG")
    # From a saved file, and with nothing recorded yet.
    sample().save(tmp_path)
    assert len(plot_history(tmp_path / "history.json").axes[0].get_lines()) == 3
    assert plot_history(History()).axes[0].get_lines() == []


def test_plotting_does_not_touch_pyplot():
    plot_history(sample())
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == []


def test_terminal_progress_prints_a_line_with_loss_and_eta():
    out = io.StringIO()
    progress = TerminalProgress(stream=out, every_s=0)
    h = History()
    progress.start(total_steps=4, initial_step=0, history=h)
    for step in (1, 2):
        h.add_train(step, loss=1.5, learning_rate=2e-4, tokens_per_s=321.0)
        progress.update(h)
    progress.close(h)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("step 1/4  loss 1.5000  tok/s 321  lr 2.00e-04  eta ")
    assert lines[-1].startswith("step 2/4")


def test_notebook_progress_counts_steps_and_redraws(monkeypatch):
    shown = []

    class Handle:
        def update(self, fig):
            shown.append(fig)

    monkeypatch.setattr("IPython.display.display", lambda obj, display_id=None: Handle())
    progress = NotebookProgress(plot_every_s=0)
    h = History()
    progress.start(total_steps=3, initial_step=0, history=h)
    for step in (1, 2, 3):
        h.add_train(step, loss=1.0 / step, learning_rate=1e-4)
        progress.update(h)
    assert progress.bar.n == 3
    progress.close(h)
    assert len(shown) == 4  # every update, then the final one
    assert len(shown[-1].axes[0].get_lines()) == 2


def test_make_progress_picks_by_name():
    assert isinstance(make_progress("terminal"), TerminalProgress)
    assert isinstance(make_progress("notebook"), NotebookProgress)
    assert make_progress("none") is None
    assert isinstance(make_progress("auto"), TerminalProgress)  # pytest is not a kernel
    with pytest.raises(ValueError, match="progress"):
        make_progress("fancy")
