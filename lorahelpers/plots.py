"""The plot of a training history (lorahelpers.history) and the live progress displays.

No torch or transformers here: a saved history can be plotted anywhere matplotlib runs.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
from pathlib import Path

from lorahelpers.atomic import atomic_path
from lorahelpers.errors import SettingsError
from lorahelpers.history import FIELDS, History


def _as_history(history) -> History:
    if isinstance(history, History):
        return history
    if isinstance(history, (str, os.PathLike)):
        return History.load(history)
    if hasattr(history, "history") and isinstance(history.history, History):
        return history.history  # a TrainResult
    return History([dict.fromkeys(FIELDS) | dict(r) for r in history])


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing).

    >>> smooth([1.0, 1.0, 1.0])
    [1.0, 1.0, 1.0]
    """
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i))
    return out


def plot_history(history, smoothing: float | None = None, title: str | None = None):
    """A matplotlib Figure of a training history: train loss, smoothed train loss, eval loss
    and (on a second axis) the learning rate. `history` is a History, a TrainResult, a list of
    records or the path of a history.json.

    >>> fig = plot_history(result.history)  # doctest: +SKIP
    """
    from matplotlib.figure import Figure

    h = _as_history(history)
    train = [r for r in h.records if r.get("loss") is not None]
    evals = [r for r in h.records if r.get("eval_loss") is not None]
    fig = Figure(figsize=(8, 4.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if train:
        steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
        if smoothing is None:  # light smoothing for short runs, more for long ones
            smoothing = min(0.95, max(0.5, 1 - 8 / len(losses)))
        ax.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=1, label="train loss")
        ax.plot(steps, smooth(losses, smoothing), color="tab:blue", linewidth=2,
                label="train loss (smoothed)")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], color="tab:orange",
                marker="o", linewidth=2, label="eval loss")
    handles, labels = ax.get_legend_handles_labels()
    lr = [r for r in train if r.get("learning_rate") is not None]
    if lr:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in lr], [r["learning_rate"] for r in lr], color="tab:gray",
                 linestyle="--", linewidth=1, label="learning rate")
        ax2.set_ylabel("learning rate")
        ax2.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, loc="upper right", fontsize="small")
    if not train and not evals:
        ax.text(0.5, 0.5, "no steps yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title or (f"training: {train[-1]['step']} steps" if train else "training"))
    fig.tight_layout()
    # A bare Figure (no pyplot) shows in Jupyter even before any inline backend is active.
    fig._repr_png_ = lambda: figure_png(fig)
    return fig


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save_figure(fig, path) -> Path:
    """Write `fig` as a PNG to `path`, atomically; returns the path.

    >>> save_figure(plot_history(result.history), "outputs/loss.png")  # doctest: +SKIP
    PosixPath('outputs/loss.png')
    """
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path


def stepper(progress, total: int):
    """A function that announces numbered steps through `progress`: "[1/3] Reading data".

    >>> step = stepper(print, 3)
    >>> step("Reading data")
    <BLANKLINE>
    [1/3] Reading data
    """
    count = iter(range(1, total + 1))

    def step(message: str) -> None:
        progress(f"\n[{next(count)}/{total}] {message}")
    return step


# ---- live progress -------------------------------------------------------------------------


def in_notebook() -> bool:
    """True inside a Jupyter/Colab kernel (where a live plot can be shown)."""
    if "google.colab" in sys.modules:
        return True
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython and hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def make_progress(kind: str = "auto"):
    """A progress display for train(): "notebook" (bar + live plot), "terminal" (one line),
    "none", or "auto" (notebook inside Jupyter, else terminal)."""
    if kind == "auto":
        kind = "notebook" if in_notebook() else "terminal"
    if kind == "notebook":
        return NotebookProgress()
    if kind == "terminal":
        return TerminalProgress()
    if kind == "none":
        return None
    raise SettingsError(f"progress is {kind!r}. Fix: use 'auto', 'notebook', 'terminal' or "
                        "'none'")


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _summary(record: dict) -> dict:
    out = {}
    if record.get("loss") is not None:
        out["loss"] = f"{record['loss']:.4f}"
    if record.get("eval_loss") is not None:
        out["eval"] = f"{record['eval_loss']:.4f}"
    if record.get("tokens_per_s"):
        out["tok/s"] = f"{record['tokens_per_s']:.0f}"
    return out


class NotebookProgress:
    """A tqdm progress bar with ETA and a loss plot that redraws in place (IPython display
    handle) at most every `plot_every_s` seconds."""

    def __init__(self, plot_every_s: float = 3.0):
        self.plot_every_s = plot_every_s
        self.bar = self.handle = None
        self._last_plot = 0.0

    def start(self, total_steps: int, initial_step: int, history: History) -> None:
        from IPython.display import display
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, initial=initial_step, desc="training", unit="step")
        self.handle = display(plot_history(history), display_id=True)
        self._step = initial_step

    def update(self, history: History) -> None:
        if self.bar is None or not history.records:
            return
        record = history.records[-1]
        self.bar.update(max(0, record["step"] - self._step))
        self._step = max(self._step, record["step"])
        self.bar.set_postfix(_summary(record), refresh=False)
        if time.monotonic() - self._last_plot >= self.plot_every_s:
            self._redraw(history)

    def _redraw(self, history: History) -> None:
        if self.handle is not None:
            self.handle.update(plot_history(history))
        self._last_plot = time.monotonic()

    def close(self, history: History) -> None:
        if self.bar is not None:
            self._redraw(history)
            self.bar.close()
            self.bar = None


class TerminalProgress:
    """One progress line, rewritten in place on a terminal; on a pipe (CI logs) a line every
    `every_s` seconds instead."""

    def __init__(self, stream=None, every_s: float = 10.0):
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0
        self._open = False
        self._written = None  # the last line written, so close() does not repeat it

    def start(self, total_steps: int, initial_step: int, history: History) -> None:
        self.total, self.initial = total_steps, initial_step
        self.t0 = time.monotonic()
        self._open = True

    def line(self, history: History) -> str:
        record = history.records[-1]
        done = record["step"] - self.initial
        rate = done / max(1e-9, time.monotonic() - self.t0)
        eta = (self.total - record["step"]) / rate if rate > 0 else float("inf")
        parts = [f"step {record['step']}/{self.total}"]
        parts += [f"{k} {v}" for k, v in _summary(record).items()]
        if record.get("learning_rate") is not None:
            parts.append(f"lr {record['learning_rate']:.2e}")
        parts.append(f"eta {_fmt_eta(eta)}")
        return "  ".join(parts)

    def update(self, history: History) -> None:
        if not self._open or not history.records:
            return
        now = time.monotonic()
        if self.tty:
            self._written = self.line(history)
            self.stream.write("\r\033[K" + self._written)
        elif now - self._last >= self.every_s:
            self._written = self.line(history)
            self.stream.write(self._written + "\n")
            self._last = now
        self.stream.flush()

    def close(self, history: History) -> None:
        if self._open and history.records:
            line = self.line(history)
            if self.tty:
                self.stream.write("\r\033[K" + line + "\n")
            elif line != self._written:
                self.stream.write(line + "\n")
            self.stream.flush()
        self._open = False
