"""`python -m lorahelpers demo`: the notebook steps of lorahelpers.pipeline run one after the
other on the embedded model and the review-tagging sample, ending with a summary table and
summary.json."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from lorahelpers.atomic import write_atomic
from lorahelpers.heldout import Comparison, OllamaScores, compare, ollama_rows, score_ollama
from lorahelpers.params import Params
from lorahelpers.pipeline import (
    ExportBundle,
    export_and_verify,
    free_torch_memory,
    load,
    lora_settings,
    prepare_data,
    register_or_skip,
    score_ggufs,
    train_settings,
)


@dataclass
class DemoSummary:
    """What run_demo did: scores before and after training, of each GGUF and through Ollama
    (the comparison table), the export reports, the Modelfile, the Ollama status, the loss
    plot and the times."""

    params: Params
    before: object
    after: object
    gguf_scores: dict[str, float]
    export: ExportBundle
    modelfile: Path
    ollama: str
    loss_plot: Path
    train_seconds: float
    total_seconds: float
    ollama_scores: OllamaScores | None = None
    comparison: Comparison | None = None

    def rows(self) -> list[tuple[str, str]]:
        rows = [("held-out score before training", f"{self.before.score:.1f}%"),
                ("held-out score after training", f"{self.after.score:.1f}%")]
        rows += [(f"held-out score of the {q} GGUF (llama.cpp)", f"{s:.1f}%")
                 for q, s in self.gguf_scores.items()]
        rows += ollama_rows(self.ollama_scores)
        rows += [(f"export {q}", r.status()) for q, r in self.export.reports.items()]
        rows += [("Modelfile", str(self.modelfile)), ("Ollama", self.ollama),
                 ("loss curve", str(self.loss_plot)),
                 ("time", f"training {self.train_seconds:.0f} s, all {self.total_seconds:.0f} s")]
        return rows

    def __str__(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self.rows())

    def as_dict(self) -> dict:
        return {"before": self.before.score, "after": self.after.score,
                "gguf_scores": self.gguf_scores, "held_out_rows": self.after.n,
                "verified": {q: r.passed for q, r in self.export.reports.items()},
                "verification": {q: {"top1": r.top1, "mean_kl": r.mean_kl, "nmse": r.nmse,
                                     "greedy_match": r.greedy_match, "status": r.status()}
                                 for q, r in self.export.reports.items()},
                "ggufs": {q: str(p) for q, p in self.export.ggufs.items()},
                "modelfile": str(self.modelfile), "ollama": self.ollama,
                "loss_plot": str(self.loss_plot), "train_seconds": self.train_seconds,
                "total_seconds": self.total_seconds, "max_steps": self.params.max_steps,
                "ollama_scores": None if self.ollama_scores is None
                else self.ollama_scores.as_dict(),
                "comparison": None if self.comparison is None else self.comparison.as_dict()}


def run_demo(params: Params | None = None, progress=print, **overrides) -> DemoSummary:
    """Fine-tune on the Alpaca sample with this machine's defaults, then export, verify and
    register; print and return a summary. Overrides are Params fields (max_steps=..., ...).

    >>> print(run_demo(max_steps=20))  # doctest: +SKIP
    """
    from lorahelpers.inference import evaluate
    from lorahelpers.keep import keep, keep_folder
    from lorahelpers.modelfile import write_modelfile
    from lorahelpers.models import add_lora
    from lorahelpers.params import default_params
    from lorahelpers.plots import plot_history, save_figure, stepper
    from lorahelpers.runtime import runtime_report
    from lorahelpers.training import train

    t0 = time.perf_counter()
    overrides = {k: v for k, v in overrides.items() if v is not None}
    params = params or default_params("alpaca", **overrides)
    out = Path(params.output_dir)
    progress(runtime_report().summary())
    step = stepper(progress, 8)

    step("Reading data")
    data = prepare_data(params)
    progress(str(data.report))
    step(f"Loading {params.model}")
    model, tokenizer, fmt = load(params)
    step(f"Scoring {len(data.eval)} held-out rows before training")
    before = evaluate(model, tokenizer, data.eval, params.scorer, fmt)
    progress(f"  before: {before}")
    step(f"Training LoRA r={params.lora_r} for {params.max_steps} steps")
    model = add_lora(model, lora_settings(params))
    result = train(model, tokenizer, data.train, data.eval, fmt,
                   train_settings(params, progress="auto"))
    loss_plot = save_figure(plot_history(result.history), out / "loss.png")
    step("Scoring the held-out rows after training")
    after = evaluate(model, tokenizer, data.eval, params.scorer, fmt)
    progress(f"  after: {after}")
    step(f"Exporting GGUF ({', '.join(params.quants)}) and verifying against PyTorch")
    prompts = [list(row[:-1]) for row in data.eval[:4]]
    bundle = export_and_verify(model, tokenizer, result.adapter_dir, fmt, out,
                               params.ollama_name, params.quants, prompts, progress)
    progress(str(bundle))
    step("Scoring the GGUF files with llama.cpp")
    del model  # its memory goes to llama.cpp and Ollama
    progress(f"  {free_torch_memory()}")
    gguf_reports = score_ggufs(bundle.ggufs, data.eval, fmt, tokenizer, params.scorer,
                               progress=progress)
    first = bundle.ggufs[params.quants[0]]
    modelfile = write_modelfile(first, fmt, system=params.system,
                                max_seq_length=params.max_seq_length)
    for path in (*bundle.ggufs.values(), modelfile):  # to Google Drive or keep_dir, if any
        keep(path, keep_folder(params.keep_dir, params.output_dir), root=out)
    step("Registering with Ollama")
    info, ollama_status = register_or_skip(params.ollama_name, first, fmt, params.system,
                                           progress=progress,
                                           max_seq_length=params.max_seq_length)
    progress(f"  {ollama_status}")
    ollama_scores = OllamaScores(ollama_status) if info is None else score_ollama(
        params.ollama_name, data.eval, fmt, tokenizer, params.scorer, gguf=first,
        gguf_report=gguf_reports[params.quants[0]], quant=params.quants[0], seed=params.seed,
        progress=progress)
    comparison = compare(before, after, gguf_reports, ollama_scores)
    summary = DemoSummary(params, before, after, {q: r.score for q, r in gguf_reports.items()},
                          bundle, modelfile, ollama_status, loss_plot, result.elapsed_s,
                          time.perf_counter() - t0, ollama_scores, comparison)
    write_atomic(out / "summary.json", json.dumps(summary.as_dict(), indent=2))
    progress(f"\n{comparison}\n\n{summary}")
    if ollama_scores.check is not None:
        ollama_scores.check.raise_if_failed()  # after the table and summary.json
    return summary


