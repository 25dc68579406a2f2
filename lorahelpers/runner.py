"""The whole pipeline in one call: the notebook steps of lorahelpers.pipeline one after the
other, on one process or several (`accelerate launch` / `torchrun`). `python -m lorahelpers
demo` runs it on the embedded defaults (lorahelpers.demo) and `python -m lorahelpers train
CONFIG` on a config file (lorahelpers.train_command).

Every process reads the same data (seeded, so each sees the same rows) and loads the model;
the Trainer shards the batches and averages the gradients; only the main process scores the
held-out rows (before and after training, of the GGUF files, through Ollama), prints progress
and writes the adapter, history, plot, summary and exports."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from lorahelpers.distributed import is_main, world_size
from lorahelpers.params import Params


@dataclass
class PipelineRun:
    """What run_pipeline did (in the main process; other processes get adapter_dir=None):
    the training run, the held-out scores of every stage, the export and the registration.
    Prints as a summary table; as_dict() is what summary.json holds."""

    params: Params
    adapter_dir: Path | None
    steps: int
    final_loss: float | None
    interrupted: bool
    processes: int
    train_seconds: float
    before: object | None = None  # inference.EvalReport of the held-out rows, before training
    after: object | None = None
    export: object | None = None  # pipeline.ExportBundle
    gguf_reports: dict = field(default_factory=dict)  # {quant: EvalReport}
    ollama: str | None = None  # how the registration went
    ollama_scores: object | None = None  # heldout.OllamaScores
    loss_plot: Path | None = None
    total_seconds: float | None = None

    @property
    def modelfile(self) -> Path | None:
        return None if self.export is None else self.export.modelfile

    def comparison(self):
        """The held-out comparison table (heldout.Comparison) of every stage scored."""
        from lorahelpers.heldout import compare

        return compare(self.before, self.after, self.gguf_reports, self.ollama_scores)

    def rows(self) -> list[tuple[str, str]]:
        from lorahelpers.heldout import ollama_rows

        rows = [(f"held-out score {when} training", f"{report.score:.1f}%")
                for when, report in (("before", self.before), ("after", self.after))
                if report is not None]
        rows += [(f"held-out score of the {q} GGUF (llama.cpp)", f"{r.score:.1f}%")
                 for q, r in self.gguf_reports.items()]
        rows += ollama_rows(self.ollama_scores)
        if self.export is not None:
            rows += [(f"export {q}", r.status()) for q, r in self.export.reports.items()]
            rows.append(("Modelfile", str(self.modelfile)))
        rows += [("Ollama", self.ollama)] if self.ollama else []
        rows.append(("adapter", str(self.adapter_dir)))
        rows += [("loss curve", str(self.loss_plot))] if self.loss_plot else []
        total = f", all {self.total_seconds:.0f} s" if self.total_seconds is not None else ""
        rows.append(("time", f"training {self.train_seconds:.0f} s{total}"))
        return rows

    def __str__(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self.rows())

    def as_dict(self) -> dict:
        out = {"adapter": str(self.adapter_dir), "steps": self.steps,
               "max_steps": self.params.max_steps, "final_loss": self.final_loss,
               "interrupted": self.interrupted, "processes": self.processes,
               "train_seconds": self.train_seconds, "total_seconds": self.total_seconds,
               "loss_plot": None if self.loss_plot is None else str(self.loss_plot)}
        if self.before is not None or self.after is not None:
            out |= {"before": getattr(self.before, "score", None),
                    "after": getattr(self.after, "score", None),
                    "held_out_rows": getattr(self.after or self.before, "n", None)}
        if self.export is not None:
            reports = self.export.reports
            out |= {"ggufs": {q: str(p) for q, p in self.export.ggufs.items()},
                    "verified": {q: r.passed for q, r in reports.items()},
                    "verification": {q: {"top1": r.top1, "mean_kl": r.mean_kl, "nmse": r.nmse,
                                         "greedy_match": r.greedy_match, "status": r.status()}
                                     for q, r in reports.items()},
                    "modelfile": str(self.modelfile),
                    "gguf_scores": {q: r.score for q, r in self.gguf_reports.items()},
                    "ollama": self.ollama}
        if self.ollama_scores is not None:
            out["ollama_scores"] = self.ollama_scores.as_dict()
        if self.before is not None or self.after is not None:
            out["comparison"] = self.comparison().as_dict()
        return out


def run_pipeline(params: Params, *, export: bool = True, register: bool = True,
                 resume: bool = False, progress=print) -> PipelineRun:
    """Prepare data, load the model, score the held-out rows, train LoRA, save the adapter
    and score again; with `export`, also merge, write and verify the GGUF files and the
    Modelfile and score the GGUF files; with `register` (and export), register with Ollama
    when a server answers and score through it. Ends with the comparison table
    (heldout.Comparison), written with the rest to summary.json, then an OllamaCheckError if
    Ollama's greedy answers lose more than one row against the GGUF. Progress goes to
    `progress` in the main process only.

    >>> print(run_pipeline(load_config("train.toml")))  # doctest: +SKIP
    """
    from lorahelpers.pipeline import load, prepare_data, preview_training, train_adapter
    from lorahelpers.plots import plot_history, save_figure, stepper
    from lorahelpers.runtime import runtime_report

    t0 = time.perf_counter()
    say = progress if is_main() else (lambda *a, **k: None)
    processes, register = world_size(), export and register
    step = stepper(say, 5 + (2 if export else 0) + (1 if register else 0))
    runtime = runtime_report()
    say(runtime.summary() + (f", {processes} processes" if processes > 1 else ""))
    precision = runtime.precision if params.precision == "auto" else params.precision
    step("Reading data")
    data = prepare_data(params)
    say(str(data.report))
    step(f"Loading {params.model}")
    model, tokenizer, fmt = load(params)
    say(preview_training(params, data, tokenizer, fmt, rows=0).summary())
    step(f"Scoring the held-out rows before training ({params.scorer})")
    before = _score(model, tokenizer, fmt, data, params, say, "before")
    per_step = params.examples_per_step * processes
    step(f"Training LoRA r={params.lora_r} for {params.max_steps} steps, {per_step} "
         f"conversations per step" + (f" ({processes} processes)" if processes > 1 else "")
         + f", {precision}")
    model, result = train_adapter(model, tokenizer, data, fmt, params=params, progress="auto",
                                  resume=resume)
    run = PipelineRun(params, result.adapter_dir if is_main() else None, result.steps,
                      result.final_loss, result.interrupted, processes, result.elapsed_s,
                      before=before)
    if not is_main():
        return run
    out = Path(params.output_dir)
    say(f"Adapter: {result.adapter_dir} (step {result.steps}, loss {result.final_loss})")
    if result.history.records:
        run.loss_plot = save_figure(plot_history(result.history), out / "loss.png")
    step("Scoring the held-out rows after training")
    if result.interrupted:  # Ctrl-C: the adapter trained so far is saved, nothing more runs
        say("  skipped: training was interrupted")
    else:
        run.after = _score(model, tokenizer, fmt, data, params, say, "after")
    if export and not result.interrupted:
        step(f"Exporting GGUF ({', '.join(params.quants)}) and verifying against PyTorch")
        _export(run, model, tokenizer, fmt, data, say)
        del model  # its GPU memory goes to llama.cpp and Ollama
        step("Scoring the GGUF files with llama.cpp")
        _score_ggufs(run, tokenizer, fmt, data, say)
        if register:
            step("Registering with Ollama and scoring the held-out rows through it")
            _register(run, tokenizer, fmt, data, say)
    run.total_seconds = time.perf_counter() - t0
    return _finish(run, out, say)


def _finish(run: PipelineRun, out: Path, say) -> PipelineRun:
    """Print the comparison table and the summary, write summary.json, then fail if Ollama's
    check did."""
    from lorahelpers.atomic import write_atomic

    if run.before is not None or run.after is not None:
        say(f"\n{run.comparison()}")
    say(f"\n{run}")
    write_atomic(out / "summary.json", json.dumps(run.as_dict(), indent=2))
    check = getattr(run.ollama_scores, "check", None)
    if check is not None:
        check.raise_if_failed()
    return run


def _score(model, tokenizer, fmt, data, params: Params, say, when: str):
    """evaluate on the held-out rows in the main process (None elsewhere, or without rows)."""
    from lorahelpers.inference import evaluate

    if not is_main():
        return None
    if not data.eval:
        say("  no held-out rows (eval_size 0 and no eval_data): nothing to score")
        return None
    report = evaluate(model, tokenizer, data.eval, params.scorer, chat_format=fmt)
    say(f"  {when}: {report}")
    return report


def _export(run: PipelineRun, model, tokenizer, fmt, data, say) -> None:
    from lorahelpers.keep import keep_folder
    from lorahelpers.pipeline import export_and_verify

    params = run.params
    run.export = export_and_verify(
        model, tokenizer, run.adapter_dir, fmt, out_dir=params.output_dir,
        name=params.ollama_name, quants=params.quants, prompts=data.prompts(),
        system=params.system, max_seq_length=params.max_seq_length,
        keep_dir=keep_folder(params.keep_dir, params.output_dir), progress=say)
    say(str(run.export))
    say(f"(ollama create {params.ollama_name} -f {run.modelfile})")


def _score_ggufs(run: PipelineRun, tokenizer, fmt, data, say) -> None:
    from lorahelpers.heldout import score_ggufs

    if data.eval:
        run.gguf_reports = score_ggufs(run.export.ggufs, data.eval, fmt, tokenizer,
                                       scorer=run.params.scorer, progress=say)


def _register(run: PipelineRun, tokenizer, fmt, data, say) -> None:
    from lorahelpers.heldout import OllamaScores, score_ollama
    from lorahelpers.pipeline import register_or_skip

    params, quant = run.params, run.params.quants[0]
    registration = register_or_skip(params.ollama_name, run.export.gguf, fmt,
                                    system=params.system, progress=say,
                                    max_seq_length=params.max_seq_length)
    run.ollama = registration.status
    say(f"  {run.ollama}")
    if not registration.registered or not data.eval:
        run.ollama_scores = OllamaScores(run.ollama if not registration.registered
                                         else "no held-out rows")
        return
    run.ollama_scores = score_ollama(params.ollama_name, data.eval, fmt, tokenizer,
                                     scorer=params.scorer, gguf=run.export.gguf,
                                     gguf_report=run.gguf_reports.get(quant), quant=quant,
                                     seed=params.seed, progress=say)
