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
    from lorahelpers.keep import keep_folder
    from lorahelpers.training import TrainSettings

    values = {"output_dir": params.output_dir, "max_steps": params.max_steps,
              "batch_size": params.batch_size, "grad_accum": params.grad_accum,
              "learning_rate": params.learning_rate,
              "max_seq_length": params.max_seq_length, "seed": params.seed} | overrides
    values.setdefault("keep_dir", keep_folder(params.keep_dir, params.output_dir,
                                              run_dir=values["output_dir"]))
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
                  max_new_tokens: int = 64, n_gpu_layers: int = 0):
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
    runner = _GGUFRunner(Path(gguf), None, n_ctx=longest + max_new_tokens + 8,
                         n_gpu_layers=n_gpu_layers)
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


# Without GPU offload llama.cpp scores a 3B q4_k_m GGUF on Colab's 2 CPU threads at a few
# tokens per second: 40 held-out Alpaca answers of up to 64 tokens would take 20-35 minutes.
GGUF_ROWS_WITHOUT_OFFLOAD = 8


@dataclass(frozen=True)
class ScoringPlan:
    """How GGUF files are scored on this runtime: how many held-out rows, on which device."""

    rows: int
    n_gpu_layers: int
    note: str


def gguf_scoring_plan(cuda: bool, offload: bool, n_rows: int) -> ScoringPlan:
    """Score every held-out row, on the GPU where llama.cpp can offload there; on a GPU runtime
    whose llama.cpp is a CPU build, only the first GGUF_ROWS_WITHOUT_OFFLOAD rows (the model that
    was trained on the GPU is too slow for the runtime's CPU).

    >>> gguf_scoring_plan(cuda=True, offload=False, n_rows=40).rows
    8
    """
    if cuda and offload:
        return ScoringPlan(n_rows, -1, "all layers on the GPU (llama.cpp CUDA build)")
    if cuda and n_rows > GGUF_ROWS_WITHOUT_OFFLOAD:
        return ScoringPlan(GGUF_ROWS_WITHOUT_OFFLOAD, 0,
                           f"first {GGUF_ROWS_WITHOUT_OFFLOAD} of {n_rows} held-out rows: this "
                           "llama.cpp build runs on the CPU only (install its CUDA wheel to "
                           "score them all)")
    return ScoringPlan(n_rows, 0, "on the CPU")


def free_torch_memory() -> str:
    """Return the GPU memory PyTorch no longer uses to the driver, so that llama.cpp and Ollama
    can have it; call it after `del model`. A one-line report; nothing to do on CPU.

    >>> del model; print(free_torch_memory())  # doctest: +SKIP
    GPU memory held by PyTorch: 9.8 GB -> 0.1 GB
    """
    import gc

    import torch

    gc.collect()
    if not torch.cuda.is_available():
        return "CPU runtime: nothing to free on a GPU"
    before = torch.cuda.memory_reserved() / 1e9
    torch.cuda.empty_cache()
    return f"GPU memory held by PyTorch: {before:.1f} GB -> {torch.cuda.memory_reserved() / 1e9:.1f} GB"


def score_ggufs(ggufs: dict, eval_rows, chat_format, tokenizer, scorer="exact",
                max_new_tokens: int = 64, progress=print) -> dict:
    """evaluate_gguf for each exported file, planned for this runtime (gguf_scoring_plan):
    {quant: EvalReport}. On a GPU, call it after `del model; free_torch_memory()`.

    >>> score_ggufs(export.ggufs, data.eval, fmt, tokenizer)["q8_0"].score  # doctest: +SKIP
    """
    from lorahelpers.llamacpp import import_llama_cpp
    from lorahelpers.runtime import runtime_report

    offload = bool(import_llama_cpp().llama_supports_gpu_offload())
    plan = gguf_scoring_plan(runtime_report().cuda, offload, len(eval_rows))
    progress(f"Scoring {len(ggufs)} GGUF file(s) with llama.cpp: {plan.note}")
    return {q: evaluate_gguf(path, eval_rows[: plan.rows], chat_format, tokenizer, scorer,
                             max_new_tokens, n_gpu_layers=plan.n_gpu_layers)
            for q, path in ggufs.items()}


@dataclass
class ExportBundle:
    """What export_and_verify wrote and how each file compares with the PyTorch model."""

    merged_dir: Path
    ggufs: dict[str, Path]
    reports: dict = field(default_factory=dict)
    reference: str = "the PEFT model in memory"
    # For a model trained over 4-bit base weights: that model against the merged 16-bit one
    # the GGUF files were verified against (for information, not part of all_verified).
    quantized_gap: object | None = None

    @property
    def all_verified(self) -> bool:
        return all(r.passed for r in self.reports.values())

    GAP_TITLE = "The 4-bit model trained in memory against the merged 16-bit model (for information)"

    def __str__(self) -> str:
        parts = [f"Verified against {self.reference}."]
        parts += [str(r) for r in self.reports.values()]
        if self.quantized_gap is not None:
            parts.append(f"{self.GAP_TITLE}:\n{self.quantized_gap}")
        return "\n\n".join(parts)

    def _repr_html_(self) -> str:
        body = f"<p>Verified against {html.escape(self.reference)}.</p>"
        body += "".join(r._repr_html_() for r in self.reports.values())
        if self.quantized_gap is not None:
            body += f"<h4>{html.escape(self.GAP_TITLE)}</h4>" + self.quantized_gap._repr_html_()
        return body


def export_and_verify(model, tokenizer, adapter_dir, chat_format, out_dir, name, quants,
                      prompts, progress=print) -> ExportBundle:
    """Merge the adapter into its 16-bit base, write one GGUF per quant type, and verify each
    against `model` (the PEFT model in memory) on `prompts` (message lists).

    A model trained over 4-bit base weights (QLoRA, Unsloth's bnb-4bit) differs from any
    16-bit export by the base's rounding, so there each GGUF is verified against the merged
    16-bit checkpoint it was made from (what it must equal), and the 4-bit model's distance
    from that checkpoint is reported separately (`quantized_gap`).

    >>> bundle = export_and_verify(model, tok, result.adapter_dir, fmt, "out", "m", ["q8_0"],
    ...                            prompts)  # doctest: +SKIP
    """
    from lorahelpers.export import (
        base_parameter_count,
        export_gguf,
        export_needs,
        preflight_export,
    )
    from lorahelpers.merge import merge_lora
    from lorahelpers.models import is_4bit
    from lorahelpers.verify import load_reference, verify

    out = Path(out_dir)
    params, largest = base_parameter_count(model)
    needs = export_needs(params, quants, largest, download_base=is_4bit(model))
    preflight_export(needs, out)
    progress(f"Export needs about {needs.disk_bytes / 1e9:.1f} GB of disk: checked.")
    merged = merge_lora(adapter_dir, out / "merged", chat_format=chat_format, progress=progress)
    progress(merged.summary())
    ggufs = export_gguf(out / "merged", out / "gguf", name, tuple(quants), progress=progress)
    bundle = ExportBundle(out / "merged", ggufs)
    reference = model
    if is_4bit(model):
        progress("The model in memory has 4-bit base weights: verifying against the merged "
                 "16-bit model, and reporting the 4-bit model's distance from it separately.")
        reference, _ = load_reference(out / "merged")
        bundle.reference = f"the merged 16-bit model in {out / 'merged'}"
        bundle.quantized_gap = verify(model, reference, tokenizer, prompts, quant="4bit-gap")
    for quant, path in ggufs.items():
        progress(f"Verifying {path.name} against {bundle.reference}...")
        bundle.reports[quant] = verify(path, reference, tokenizer, prompts, quant=quant)
    return bundle


def register_or_skip(name, gguf, chat_format, system=None, host=None, progress=print,
                     max_seq_length=None):
    """Register with Ollama when a server answers; else (None, one-line reason)."""
    from lorahelpers.ollama import register, server_available

    version = server_available(host)
    if version is None:
        return None, ("skipped: no Ollama server answers (start one with `ollama serve`, or "
                      "lorahelpers.ollama.start_server(install=True) on Colab)")
    info = register(name, gguf, chat_format, host=host, system=system, progress=progress,
                    max_seq_length=max_seq_length)
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
    from lorahelpers.keep import keep, keep_folder
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
    del model  # its memory goes to llama.cpp and Ollama
    progress(f"  {free_torch_memory()}")
    gguf_scores = {q: r.score for q, r in
                   score_ggufs(bundle.ggufs, data.eval, fmt, tokenizer, params.scorer,
                               progress=progress).items()}
    first = bundle.ggufs[params.quants[0]]
    modelfile = write_modelfile(first, fmt, system=params.system or None,
                                max_seq_length=params.max_seq_length)
    for path in (*bundle.ggufs.values(), modelfile):  # to Google Drive or keep_dir, if any
        keep(path, keep_folder(params.keep_dir, params.output_dir), root=out)
    step("Registering with Ollama")
    _, ollama_status = register_or_skip(params.ollama_name, first, fmt, params.system or None,
                                        progress=progress,
                                        max_seq_length=params.max_seq_length)
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
