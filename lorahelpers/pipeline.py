"""The notebooks' steps, one call per cell: data -> score before -> train -> score after ->
export (merge, GGUF, verify, Modelfile) -> score the GGUF files -> Ollama. lorahelpers.runner
runs them one after the other for the demo and the train command; the scoring steps are in
lorahelpers.inference and lorahelpers.heldout."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from lorahelpers.params import Params

# Held-out prompts each export is verified on (logits and greedy answers).
VERIFY_PROMPTS = 4


@dataclass
class DataBundle:
    """Training and held-out conversations, with the loader's reports. Shows the reports, the
    first rows as questions and answers, and the counts.

    >>> DataBundle(train=[[{"role": "user", "content": "Hi"},
    ...                    {"role": "assistant", "content": "Yo"}]], eval=[], report="1 row")
    1 row
    <BLANKLINE>
    Question: Hi
    Answer:   Yo
    <BLANKLINE>
    1 rows to learn from, 0 held-out rows to test with.
    """

    train: list
    eval: list
    report: object
    eval_report: object | None = None
    template: str | None = None  # tables: the column-merge template and the answer column
    output_column: str | None = None

    def prompts(self, n: int = VERIFY_PROMPTS) -> list[list[dict]]:
        """The first n held-out rows (training rows when none are held out) without their
        answers: the prompts an export is verified on."""
        return [list(row[:-1]) for row in (self.eval or self.train)[:n]]

    def _lines(self, n: int = 3) -> list[str]:
        lines = []
        if self.template is not None:
            lines += [f"Template: {self.template}", f"Answer column: {self.output_column}", ""]
        for conversation in self.train[:n]:
            lines += [f"Question: {conversation[-2]['content']}",
                      f"Answer:   {conversation[-1]['content']}", ""]
        lines.append(f"{len(self.train)} rows to learn from, {len(self.eval)} held-out rows to "
                     "test with.")
        return lines

    def __repr__(self) -> str:
        reports = [str(r) for r in (self.report, self.eval_report) if r is not None]
        return "\n\n".join(reports + ["\n".join(self._lines())])

    def _repr_html_(self) -> str:
        reports = [r._repr_html_() if hasattr(r, "_repr_html_") else f"<pre>{html.escape(str(r))}</pre>"
                   for r in (self.report, self.eval_report) if r is not None]
        return "".join(reports) + f"<pre>{html.escape(chr(10).join(self._lines()))}</pre>"


def prepare_data(params: Params, *, template: str | None = None,
                 output_column: str | None = None, sheet=None, eval_sheet=None) -> DataBundle:
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
    return DataBundle(train, held_out[: params.eval_size], report, eval_report,
                      template, output_column if template is not None else None)


def preview_training(params: Params, data: DataBundle, tokenizer, chat_format, *,
                     rows: int = 3):
    """What training will see, before it starts: the first training rows as the model sees
    them with the tokens that carry the loss marked, the token lengths of the rows the run
    reaches against params.max_seq_length (a histogram in notebooks), how many are cut, and
    what the data layer dropped. Tokenized as train() tokenizes (lorahelpers.batches).

    >>> preview_training(params, data, tokenizer, chat_format)  # doctest: +SKIP
    """
    from lorahelpers.preview import training_preview
    from lorahelpers.runtime import machine_defaults, runtime_report
    from lorahelpers.training import TrainSettings, rows_for_run

    reached = rows_for_run(data.train, TrainSettings(
        max_steps=params.max_steps, batch_size=params.batch_size, grad_accum=params.grad_accum,
        seed=params.seed))
    length = params.max_seq_length or machine_defaults(runtime_report().cuda)["max_seq_length"]
    return training_preview(reached, tokenizer, chat_format, length, report=data.report, rows=rows,
                            rows_total=len(data.train))


def load(params: Params):
    """(model, tokenizer, chat_format) for params, the ChatFormat installed in the tokenizer.

    >>> model, tokenizer, chat_format = load(params)  # doctest: +SKIP
    """
    from lorahelpers.chat import get_chat_format
    from lorahelpers.models import load_model

    model, tokenizer = load_model(params.resolved_model(), max_seq_length=params.max_seq_length,
                                  load_in_4bit=params.load_in_4bit,
                                  chat_format=params.chat_format)
    fmt = get_chat_format(params.chat_format, eos=tokenizer.eos_token, tokenizer=tokenizer)
    return model, tokenizer, fmt


def train_settings(params: Params, **overrides):
    """training.TrainSettings from params (None fields take the device default), the keep
    folder included; `overrides` are TrainSettings fields.

    >>> train_settings(params, output_dir="outputs/run/tagger").max_steps  # doctest: +SKIP
    """
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
    """models.LoraSettings from params (rank, alpha, seed)."""
    from lorahelpers.models import LoraSettings

    return LoraSettings(r=params.lora_r, alpha=params.lora_alpha, seed=params.seed)


def train_adapter(model, tokenizer, data: DataBundle, chat_format, *, params: Params,
                  **settings):
    """Add LoRA to `model` (params.lora_r, lora_alpha) and train it on data.train, held-out loss
    on data.eval: (the model with its adapter, training.TrainResult). `settings` are
    TrainSettings fields (resume=True continues from the last checkpoint, output_dir=...).
    Interrupting it keeps the adapter trained so far.

    >>> model, result = train_adapter(model, tokenizer, data, chat_format,
    ...                               params=params)  # doctest: +SKIP
    """
    from lorahelpers.models import add_lora
    from lorahelpers.training import train

    model = add_lora(model, lora_settings(params))
    result = train(model, tokenizer, data.train, data.eval, chat_format=chat_format,
                   settings=train_settings(params, **settings))
    return model, result


def try_row(model, tokenizer, row, chat_format, *, max_new_tokens: int = 64) -> str:
    """Ask the model one held-out row's question: prints the question and the expected answer,
    then streams the model's answer, which it returns.

    >>> try_row(model, tokenizer, data.eval[0], chat_format)  # doctest: +SKIP
    """
    from lorahelpers.inference import generate

    print(f"Q: {row[-2]['content']}\nExpected: {row[-1]['content']}\nModel:    ", end="")
    return generate(model, tokenizer, list(row[:-1]), chat_format, max_new_tokens=max_new_tokens)


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
    modelfile: Path | None = None  # next to the first GGUF, which it registers

    @property
    def gguf(self) -> Path:
        """The first GGUF (of params.quants[0]): the one the Modelfile and Ollama use."""
        return next(iter(self.ggufs.values()))

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
        if self.modelfile is not None:
            parts.append(f"Modelfile: {self.modelfile}")
        return "\n\n".join(parts)

    def _repr_html_(self) -> str:
        body = f"<p>Verified against {html.escape(self.reference)}.</p>"
        body += "".join(r._repr_html_() for r in self.reports.values())
        if self.quantized_gap is not None:
            body += f"<h4>{html.escape(self.GAP_TITLE)}</h4>" + self.quantized_gap._repr_html_()
        if self.stop_audit is not None:
            body += self.stop_audit._repr_html_()
        if self.modelfile is not None:
            body += f"<p>Modelfile: <code>{html.escape(str(self.modelfile))}</code></p>"
        return body


def preflight(model, quants, out_dir, progress=print) -> None:
    """Check the disk (and, on a GPU, the memory) that merging and writing `quants` from
    `model`'s base needs in out_dir, before anything is written; an ExportError says what is
    short and how to free it.

    >>> preflight(model, ["q8_0"], "outputs/alpaca")  # doctest: +SKIP
    Export needs about 0.6 GB of disk: checked.
    """
    from lorahelpers.export import base_parameter_count, export_needs, preflight_export
    from lorahelpers.models import is_4bit

    params, largest = base_parameter_count(model)
    needs = export_needs(params, quants, largest, download_base=is_4bit(model))
    preflight_export(needs, Path(out_dir))
    progress(f"Export needs about {needs.disk_bytes / 1e9:.1f} GB of disk: checked.")


def export_and_verify(model, tokenizer, adapter_dir, chat_format, *, out_dir, name, quants,
                      prompts, system: str | None = None, max_seq_length: int | None = None,
                      keep_dir=None, progress=print) -> ExportBundle:
    """Merge the adapter into its 16-bit base, write one GGUF per quant type and the Modelfile
    (next to the first GGUF), verify each GGUF against `model` (the PEFT model in memory) on
    `prompts` (message lists), and copy the GGUFs and the Modelfile to `keep_dir` (Google
    Drive), if given.

    A model trained over 4-bit base weights (QLoRA, Unsloth's bnb-4bit) differs from any
    16-bit export by the base's rounding, so there each GGUF is verified against the merged
    16-bit checkpoint it was made from (what it must equal), and the 4-bit model's distance
    from that checkpoint is reported separately (`quantized_gap`).

    >>> bundle = export_and_verify(model, tok, result.adapter_dir, fmt, out_dir="out", name="m",
    ...                            quants=["q8_0"], prompts=data.prompts())  # doctest: +SKIP
    """
    from lorahelpers.export import export_gguf
    from lorahelpers.keep import keep
    from lorahelpers.merge import merge_lora
    from lorahelpers.modelfile import render_modelfile, write_modelfile
    from lorahelpers.models import is_4bit
    from lorahelpers.stops import audit_stops
    from lorahelpers.verify import load_reference, verify

    out = Path(out_dir)
    preflight(model, quants, out, progress)
    merged = merge_lora(adapter_dir, out / "merged", chat_format=chat_format, progress=progress)
    progress(merged.summary())
    ggufs = export_gguf(out / "merged", out / "gguf", name, tuple(quants), progress=progress)
    bundle = ExportBundle(out / "merged", ggufs)
    modelfile_args = {"system": system, "max_seq_length": max_seq_length}
    bundle.stop_audit = audit_stops(  # the Modelfile as write_modelfile writes it
        tokenizer, chat_format, checkpoint=out / "merged", ggufs=list(ggufs.values()),
        stops=render_modelfile(bundle.gguf, chat_format, **modelfile_args),
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
    bundle.modelfile = write_modelfile(bundle.gguf, chat_format, **modelfile_args)
    for path in (*ggufs.values(), bundle.modelfile):  # now, before the longer steps that follow
        keep(path, keep_dir, root=out)
    return bundle


@dataclass
class Registration:
    """What register_or_skip did: `info` (what Ollama's /api/show reports) or None when
    skipped, and one line saying how."""

    name: str
    info: dict | None
    status: str

    @property
    def registered(self) -> bool:
        return self.info is not None

    def __repr__(self) -> str:
        return self.status


def register_or_skip(name, gguf, chat_format, *, system=None, host=None, progress=print,
                     max_seq_length=None, adapter=None, merged=None,
                     start_server: bool = False) -> Registration:
    """Register with Ollama (lorahelpers.ollama.register, `adapter` and `merged` included) when
    a server answers, else skip and say why. With start_server (on Colab), start one first
    (installing Ollama when missing).

    >>> print(register_or_skip("my-model", gguf, fmt))  # doctest: +SKIP
    registered as 'my-model' (model) with Ollama 0.12.6
    """
    from lorahelpers import ollama

    if start_server:
        ollama.start_server(install=True, host=host)
    version = ollama.server_available(host)
    if version is None:
        return Registration(name, None, (
            "skipped: no Ollama server answers (start one with `ollama serve`, or "
            "lorahelpers.ollama.start_server(install=True) on Colab)"))
    info = ollama.register(name, gguf, chat_format, host=host, system=system, progress=progress,
                           max_seq_length=max_seq_length, adapter=adapter, merged=merged)
    return Registration(name, info, f"registered as {name!r} ({info['registration']}) with "
                                    f"Ollama {version}")
