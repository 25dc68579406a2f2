"""The whole path in a few calls: data -> score before -> train -> score after -> export ->
verify -> Modelfile -> Ollama. The notebooks call these one per cell; `python -m lorahelpers
demo` calls run_demo, which runs them all on the embedded model."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path

from lorahelpers.atomic import atomic_path, write_atomic
from lorahelpers.params import Params


@dataclass
class DataBundle:
    """Training and held-out conversations, with the loader's reports."""

    train: list
    eval: list
    report: object
    eval_report: object | None = None


def prepare_data(params: Params, template: str | None = None, output_column: str | None = None,
                 sheet=None, eval_sheet=None) -> DataBundle:
    """Conversations from params.data (and params.eval_data or params.eval_sheet, else a
    seeded split of eval_size rows). Tables need a column-merge `template` and an
    `output_column`; arguments left None come from the same-named params fields.

    >>> bundle = prepare_data(default_params("alpaca"))  # doctest: +SKIP
    """
    from lorahelpers.data import split, to_conversations

    template = template if template is not None else params.template or None
    output_column = output_column if output_column is not None else params.output_column or None
    sheet = sheet if sheet is not None else params.sheet or None
    eval_sheet = eval_sheet if eval_sheet is not None else params.eval_sheet or None
    kwargs = {"template": template, "output_column": output_column,
              "system": params.system or None, "seed": params.seed}
    if template is not None:
        kwargs["format"] = "table"
    train, report = to_conversations(params.data, sheet=sheet, **kwargs)
    eval_report = None
    if params.eval_data:
        held_out, eval_report = to_conversations(params.eval_data, sheet=eval_sheet, **kwargs)
    elif eval_sheet is not None:
        held_out, eval_report = to_conversations(params.data, sheet=eval_sheet, **kwargs)
    else:
        train, held_out = split(train, params.eval_size, seed=params.seed)
    return DataBundle(train, held_out[: params.eval_size], report, eval_report)


def load(params: Params):
    """(model, tokenizer, chat_format) for params, the ChatFormat installed in the tokenizer."""
    from lorahelpers.chat import get_chat_format
    from lorahelpers.models import load_model

    model, tokenizer = load_model(params.resolved_model(), max_seq_length=params.max_seq_length,
                                  load_in_4bit=params.load_in_4bit,
                                  chat_format=params.chat_format)
    fmt = get_chat_format(params.chat_format, eos=tokenizer.eos_token, tokenizer=tokenizer)
    return model, tokenizer, fmt


def train_settings(params: Params, **overrides):
    from lorahelpers.training import TrainSettings

    values = {"output_dir": params.output_dir, "max_steps": params.max_steps,
              "batch_size": params.batch_size, "learning_rate": params.learning_rate,
              "max_seq_length": params.max_seq_length, "seed": params.seed} | overrides
    return TrainSettings(**values)


def lora_settings(params: Params):
    from lorahelpers.models import LoraSettings

    return LoraSettings(r=params.lora_r, alpha=params.lora_alpha, seed=params.seed)


@dataclass
class Comparison:
    """Held-out scores side by side (before training, after, and of exported models)."""

    scores: dict[str, float]
    n: int

    def rows(self) -> list[tuple[str, str]]:
        return [(name, f"{score:.1f}") for name, score in self.scores.items()]

    def __str__(self) -> str:
        width = max(len(k) for k in self.scores)
        return "\n".join(f"{k:<{width}}  {v:>6}" for k, v in self.rows())

    def _repr_html_(self) -> str:
        body = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in self.rows())
        return (f"<table><tr><th>model ({self.n} held-out rows)</th><th>score (%)</th></tr>"
                f"{body}</table>")


def evaluate_gguf(gguf, eval_rows, chat_format, tokenizer, scorer="exact",
                  max_new_tokens: int = 64):
    """Score a GGUF with llama.cpp on held-out conversations, the prompts rendered by the same
    ChatFormat as in training: the number to compare with inference.evaluate's.

    >>> evaluate_gguf("out/m-q8_0.gguf", eval_rows, fmt, tokenizer).score  # doctest: +SKIP
    """
    from lorahelpers.inference import EvalReport, _scorer, cut_at_stop
    from lorahelpers.verify import _GGUFRunner

    score_fn = _scorer(scorer)
    stop_ids = {tokenizer.convert_tokens_to_ids(s) for s in chat_format.stop
                if s in tokenizer.get_vocab()} | {tokenizer.eos_token_id}
    prompts = [(list(row[:-1]), row[-1]["content"]) for row in eval_rows]
    longest = max(len(tokenizer(chat_format.generation_prefix(m))["input_ids"]) for m, _ in prompts)
    runner = _GGUFRunner(Path(gguf), None, n_ctx=longest + max_new_tokens + 8)
    rows = []
    try:
        for messages, expected in prompts:
            ids = runner.tokenize(chat_format.generation_prefix(messages))
            out = runner.greedy(ids, max_new_tokens, stop_ids)
            text = runner.llm.detokenize(out, special=True).decode("utf-8", errors="replace")
            answer = cut_at_stop(text, chat_format.stop)
            rows.append({"prompt": messages[-1]["content"], "expected": expected,
                         "answer": answer, "correct": float(score_fn(expected, answer))})
    finally:
        runner.close()
    score = 100.0 * sum(r["correct"] for r in rows) / max(len(rows), 1)
    return EvalReport(score, rows, scorer if isinstance(scorer, str) else "custom")


@dataclass
class ExportBundle:
    """What export_and_verify wrote and how each file compares with the PyTorch model."""

    merged_dir: Path
    ggufs: dict[str, Path]
    reports: dict = field(default_factory=dict)

    @property
    def all_verified(self) -> bool:
        return all(r.passed for r in self.reports.values())

    def __str__(self) -> str:
        return "\n\n".join(str(r) for r in self.reports.values())

    def _repr_html_(self) -> str:
        return "".join(r._repr_html_() for r in self.reports.values())


def export_and_verify(model, tokenizer, adapter_dir, chat_format, out_dir, name, quants,
                      prompts, progress=print) -> ExportBundle:
    """Merge the adapter into its 16-bit base, write one GGUF per quant type, and verify each
    against `model` (the PEFT model in memory) on `prompts` (message lists).

    >>> bundle = export_and_verify(model, tok, result.adapter_dir, fmt, "out", "m", ["q8_0"],
    ...                            prompts)  # doctest: +SKIP
    """
    from lorahelpers.export import export_gguf
    from lorahelpers.merge import merge_lora
    from lorahelpers.verify import verify

    out = Path(out_dir)
    merged = merge_lora(adapter_dir, out / "merged", chat_format=chat_format, progress=progress)
    progress(merged.summary())
    ggufs = export_gguf(out / "merged", out / "gguf", name, tuple(quants), progress=progress)
    bundle = ExportBundle(out / "merged", ggufs)
    for quant, path in ggufs.items():
        progress(f"Verifying {path.name} against the PyTorch model...")
        bundle.reports[quant] = verify(path, model, tokenizer, prompts, quant=quant)
    return bundle


def register_or_skip(name, gguf, chat_format, system=None, host=None, progress=print):
    """Register with Ollama when a server answers; else (None, one-line reason)."""
    from lorahelpers.ollama import register, server_available

    version = server_available(host)
    if version is None:
        return None, ("skipped: no Ollama server answers (start one with `ollama serve`, or "
                      "lorahelpers.ollama.start_server(install=True) on Colab)")
    info = register(name, gguf, chat_format, host=host, system=system, progress=progress)
    return info, f"registered as {name!r} with Ollama {version}"


@dataclass
class DemoSummary:
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

    def rows(self) -> list[tuple[str, str]]:
        rows = [("held-out score before training", f"{self.before.score:.1f}%"),
                ("held-out score after training", f"{self.after.score:.1f}%")]
        rows += [(f"held-out score of the {q} GGUF (llama.cpp)", f"{s:.1f}%")
                 for q, s in self.gguf_scores.items()]
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
                "total_seconds": self.total_seconds, "max_steps": self.params.max_steps}


def run_demo(params: Params | None = None, progress=print, **overrides) -> DemoSummary:
    """Fine-tune on the Alpaca sample with this machine's defaults, then export, verify and
    register; print and return a summary. Overrides are Params fields (max_steps=..., ...).

    >>> print(run_demo(max_steps=20))  # doctest: +SKIP
    """
    from lorahelpers.inference import evaluate
    from lorahelpers.modelfile import write_modelfile
    from lorahelpers.models import add_lora
    from lorahelpers.params import default_params
    from lorahelpers.plots import plot_history
    from lorahelpers.runtime import runtime_report
    from lorahelpers.training import train

    t0 = time.perf_counter()
    overrides = {k: v for k, v in overrides.items() if v is not None}
    params = params or default_params("alpaca", **overrides)
    out = Path(params.output_dir)
    progress(runtime_report().summary())
    step = _stepper(progress, 8)

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
    loss_plot = _save_figure(plot_history(result.history), out / "loss.png")
    step("Scoring the held-out rows after training")
    after = evaluate(model, tokenizer, data.eval, params.scorer, fmt)
    progress(f"  after: {after}")
    step(f"Exporting GGUF ({', '.join(params.quants)}) and verifying against PyTorch")
    prompts = [list(row[:-1]) for row in data.eval[:4]]
    bundle = export_and_verify(model, tokenizer, result.adapter_dir, fmt, out,
                               params.ollama_name, params.quants, prompts, progress)
    progress(str(bundle))
    step("Scoring the GGUF files with llama.cpp")
    gguf_scores = {q: evaluate_gguf(p, data.eval, fmt, tokenizer, params.scorer).score
                   for q, p in bundle.ggufs.items()}
    first = bundle.ggufs[params.quants[0]]
    modelfile = write_modelfile(first, fmt, system=params.system or None)
    step("Registering with Ollama")
    _, ollama_status = register_or_skip(params.ollama_name, first, fmt, params.system or None,
                                        progress=progress)
    progress(f"  {ollama_status}")
    summary = DemoSummary(params, before, after, gguf_scores, bundle, modelfile, ollama_status,
                          loss_plot, result.elapsed_s, time.perf_counter() - t0)
    _write_json(out / "summary.json", summary.as_dict())
    progress("\n" + str(summary))
    return summary


def _stepper(progress, total: int):
    count = iter(range(1, total + 1))

    def step(message: str) -> None:
        progress(f"\n[{next(count)}/{total}] {message}")
    return step


def _write_json(path: Path, data: dict) -> Path:
    import json

    return write_atomic(path, json.dumps(data, indent=2))


def _save_figure(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path
