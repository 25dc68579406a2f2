"""The notebooks' steps, one call per cell: data -> score before -> train -> score after ->
export -> verify -> score the GGUF files -> Ollama. lorahelpers.demo runs them all on the
embedded model."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

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

    template = template if template is not None else params.template
    output_column = output_column if output_column is not None else params.output_column
    sheet = sheet if sheet is not None else params.sheet
    eval_sheet = eval_sheet if eval_sheet is not None else params.eval_sheet
    kwargs = {"template": template, "output_column": output_column,
              "system": params.system, "seed": params.seed, "header_row": params.header_row,
              "empty_markers": params.empty_markers, "raw_values": params.raw_values}
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


def preview_training(params: Params, data: DataBundle, tokenizer, chat_format,
                     rows: int = 3):
    """What training will see, before it starts: the first training rows as the model sees
    them with the tokens that carry the loss marked, the token lengths of the rows the run
    reaches against params.max_seq_length (a histogram in notebooks), how many are cut, and
    what the data layer dropped. Tokenized as train() tokenizes (lorahelpers.batches).

    >>> preview_training(params, data, tokenizer, chat_format)  # doctest: +SKIP
    """
    from lorahelpers.preview import training_preview
    from lorahelpers.training import TrainSettings, rows_for_run

    reached = rows_for_run(data.train, TrainSettings(
        max_steps=params.max_steps, batch_size=params.batch_size, grad_accum=params.grad_accum,
        seed=params.seed))
    return training_preview(reached, tokenizer, chat_format, params.max_seq_length or 2048,
                            data.report, rows, rows_total=len(data.train))


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
              "max_seq_length": params.max_seq_length, "seed": params.seed,
              "precision": params.precision} | overrides
    values = {k: v for k, v in values.items() if v is not None}  # None: the device default
    values.setdefault("keep_dir", keep_folder(params.keep_dir, params.output_dir,
                                              run_dir=values["output_dir"]))
    return TrainSettings(**values)


def lora_settings(params: Params):
    from lorahelpers.models import LoraSettings

    return LoraSettings(r=params.lora_r, alpha=params.lora_alpha, seed=params.seed)


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
    from lorahelpers.inference import evaluate_gguf
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
    stop_audit: object | None = None  # stops.StopAudit of the merged checkpoint, GGUFs, Modelfile

    @property
    def all_verified(self) -> bool:
        return all(r.passed for r in self.reports.values())

    GAP_TITLE = "The 4-bit model trained in memory against the merged 16-bit model (for information)"

    def __str__(self) -> str:
        parts = [f"Verified against {self.reference}."]
        parts += [str(r) for r in self.reports.values()]
        if self.quantized_gap is not None:
            parts.append(f"{self.GAP_TITLE}:\n{self.quantized_gap}")
        if self.stop_audit is not None:
            parts.append(self.stop_audit.summary())
        return "\n\n".join(parts)

    def _repr_html_(self) -> str:
        body = f"<p>Verified against {html.escape(self.reference)}.</p>"
        body += "".join(r._repr_html_() for r in self.reports.values())
        if self.quantized_gap is not None:
            body += f"<h4>{html.escape(self.GAP_TITLE)}</h4>" + self.quantized_gap._repr_html_()
        if self.stop_audit is not None:
            body += self.stop_audit._repr_html_()
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
    from lorahelpers.modelfile import render_modelfile
    from lorahelpers.models import is_4bit
    from lorahelpers.stops import audit_stops
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
    bundle.stop_audit = audit_stops(  # the Modelfile as write_modelfile will write it
        tokenizer, chat_format, checkpoint=out / "merged", ggufs=list(ggufs.values()),
        stops=render_modelfile(next(iter(ggufs.values())), chat_format),
        stage="at export").raise_if_failed()  # shown with the verification (str(bundle))
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
                     max_seq_length=None, adapter=None, merged=None):
    """Register with Ollama (lorahelpers.ollama.register, `adapter` and `merged` included) when
    a server answers: (what register returns, one line saying how); else (None, the reason).

    >>> info, status = register_or_skip("my-model", gguf, fmt)  # doctest: +SKIP
    >>> status  # doctest: +SKIP
    "registered as 'my-model' (model) with Ollama 0.12.6"
    """
    from lorahelpers.ollama import register, server_available

    version = server_available(host)
    if version is None:
        return None, ("skipped: no Ollama server answers (start one with `ollama serve`, or "
                      "lorahelpers.ollama.start_server(install=True) on Colab)")
    info = register(name, gguf, chat_format, host=host, system=system, progress=progress,
                    max_seq_length=max_seq_length, adapter=adapter, merged=merged)
    return info, f"registered as {name!r} ({info['registration']}) with Ollama {version}"


def merged_gguf(adapter_dir, base_dir, out_dir, name, quant, chat_format,
                progress=print) -> Path:
    """The adapter merged into the base checkpoint `base_dir` (out_dir/<name>-merged), written
    as one GGUF of type `quant` into out_dir/gguf: what Ollama 0.34.1 and later register in
    place of an adapter layer (pass it to register_or_skip as merged=).

    >>> merged_gguf(run.adapter_dir, base_dir, "out", "tagger", "q8_0", fmt)  # doctest: +SKIP
    PosixPath('out/gguf/tagger-merged-q8_0.gguf')
    """
    from lorahelpers.export import export_gguf
    from lorahelpers.merge import merge_lora

    out = Path(out_dir)
    merged = merge_lora(adapter_dir, out / f"{name}-merged", base_dir=base_dir,
                        chat_format=chat_format, progress=progress)
    return export_gguf(merged.out_dir, out / "gguf", f"{name}-merged", (quant,),
                       progress=progress)[quant]


# ---- the table notebook --------------------------------------------------------------------


def use_upload(params: Params, uploaded) -> tuple[Params, str]:
    """params reading an uploaded file (what Colab's files.upload() or an ipywidgets
    FileUpload's .value holds), saved under output_dir/uploads, with no separate held-out
    file; unchanged when nothing was uploaded. Returns the params and a line saying which.

    >>> params, note = use_upload(params, {})  # doctest: +SKIP
    >>> note  # doctest: +SKIP
    'No file uploaded: using the sample data/table.xlsx'
    """
    from lorahelpers.data import save_upload

    path = save_upload(uploaded, Path(params.output_dir) / "uploads")
    if path is None:
        return params, f"No file uploaded: using the sample {params.data}"
    return params.replace(data=str(path), eval_data=None), f"Using your file: {path}"


def choose_sheets(params: Params) -> tuple[Params, str]:
    """params with sheet and eval_sheet that exist in the workbook params.data: a missing
    training sheet becomes the one load_table reads by default (the first, or the only sheet
    with a table when the first is empty or a cover page), a missing held-out sheet none
    (eval_size rows are then set aside at random); a file without sheets gets neither.
    Returns the params and a few lines saying which rows are used.

    >>> params, note = choose_sheets(default_params("table"))  # doctest: +SKIP
    >>> print(note)  # doctest: +SKIP
    Sheets in the workbook: orders, held_out
    Rows to learn from: orders. Held-out rows: held_out.
    """
    from lorahelpers.data import sheet_names
    from lorahelpers.workbook import default_sheet

    sheets = sheet_names(params.data)
    lines = []
    sheet, eval_sheet = params.sheet, params.eval_sheet
    if not sheets:
        sheet = eval_sheet = None
    else:
        lines.append("Sheets in the workbook: " + ", ".join(sheets))
        if sheet not in sheets:
            first, note = default_sheet(params.data)
            if sheet:
                lines.append(f"No sheet {sheet!r} here: using " + (
                    f"the first sheet, {first!r}." if first == sheets[0] else f"{first!r}."))
            lines += [note[0].upper() + note[1:] + "."] if note else []
            sheet = first
        if eval_sheet and eval_sheet not in sheets:
            lines.append(f"No held-out sheet {eval_sheet!r} here: setting "
                         f"{params.eval_size} rows aside at random instead.")
            eval_sheet = None
    held_out = eval_sheet or f"{params.eval_size} rows set aside at random"
    lines.append(f"Rows to learn from: {sheet or Path(params.data).name}. "
                 f"Held-out rows: {held_out}.")
    return params.replace(sheet=sheet, eval_sheet=eval_sheet), "\n".join(lines)


# ---- the two-adapter notebook --------------------------------------------------------------


def two_adapter_params(runtime=None, env=None) -> Params:
    """The two-adapter notebook's parameters: the tagger's data (the namer's: namer_params),
    20 held-out rows per task scored by exact match, 60 steps per adapter and a q8_0 base GGUF
    on a GPU (24 steps and f16 on CPU). A LORAHELPERS_<FIELD> variable still overrides each.

    >>> two_adapter_params(env={"LORAHELPERS_MAX_STEPS": "5"}).max_steps  # doctest: +SKIP
    5
    """
    import os

    from lorahelpers.params import DATA_DIR, ENV_PREFIX, default_params
    from lorahelpers.runtime import runtime_report

    runtime = runtime or runtime_report()
    env = os.environ if env is None else env
    mine = {"data": str(DATA_DIR / "alpaca_train.jsonl"),  # tagger: review -> POS / NEG
            "eval_data": str(DATA_DIR / "alpaca_eval.jsonl"),
            "scorer": "exact", "eval_size": 20,
            "max_steps": 60 if runtime.cuda else 24,
            "quants": ("q8_0",) if runtime.cuda else ("f16",),  # the one base GGUF
            "ollama_name": "lorahelpers-reviews",  # -> ...-tagger and ...-namer
            "output_dir": "outputs/two_adapters"}
    return default_params("alpaca", runtime=runtime, env=env,
                          **{k: v for k, v in mine.items() if ENV_PREFIX + k.upper() not in env})


def namer_params(params: Params) -> Params:
    """params for the namer task (review -> product name): its own training and held-out
    files, everything else shared with the tagger.

    >>> namer_params(params).data  # doctest: +SKIP
    '.../data/extract_train.jsonl'
    """
    from lorahelpers.params import DATA_DIR

    return params.replace(data=str(DATA_DIR / "extract_train.jsonl"),
                          eval_data=str(DATA_DIR / "extract_eval.jsonl"))
