"""The notebooks' parameters: one dataclass, defaults chosen by the runtime (device_defaults,
the one place that decides them), every field overridable by an environment variable (how CI
shrinks a run)."""

from __future__ import annotations

import dataclasses
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from lorahelpers.errors import SettingsError
from lorahelpers.quants import QUANTS
from lorahelpers.runtime import (
    EMBEDDED,
    RuntimeReport,
    check_precision,
    machine_defaults,
    runtime_report,
)

ENV_PREFIX = "LORAHELPERS_"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
# The column-merge template of the sample orders (data/README.md)
# The columns that decide the answer come first: after the same 40 CPU steps SmolLM2-135M
# scored 10 % of held-out orders with them last (behind item, weight, gift note and date) and
# 100 % after 80 steps with them first. The date keeps every prompt distinct, so no held-out
# prompt is also a training prompt.
TABLE_TEMPLATE = ("Zone {zone}, express: {express}. Order of {item} ({category})"
                  "[[, {weight_kg} kg]][[, gift note: {gift_note}]], ordered {order_date}. "
                  "Shipping in EUR?")


# Fields whose None means "the default for this device" (device_defaults fills them) and
# text fields whose None means "none" ("" given by a user or the environment becomes None).
DEVICE_FIELDS = ("model", "chat_format", "load_in_4bit", "scorer", "max_steps", "batch_size",
                 "grad_accum", "learning_rate", "max_seq_length", "quants")
OPTIONAL_TEXT = ("data", "eval_data", "sheet", "eval_sheet", "template", "output_column",
                 "system", "keep_dir", "hub_repo")


@dataclass
class Params:
    """Everything a notebook run depends on. Each field can be set from the environment as
    LORAHELPERS_<FIELD> (e.g. LORAHELPERS_MAX_STEPS=20, LORAHELPERS_QUANTS=q8_0,q4_k_m).
    None means the device default (see device_defaults) or, for text, none.

    >>> Params(sheet="").sheet is None
    True
    """

    kind: str = field(default="alpaca", metadata={"help": "'alpaca' or 'table' notebook"})
    model: str | None = field(default=None, metadata={
        "help": "Hub name or local checkpoint; 'embedded' is the SmolLM2-135M that ships with us"})
    chat_format: str | None = field(default=None, metadata={
        "help": "'chatml', 'llama3', 'gemma', 'mistral', 'phi3', 'qwen3', 'auto' (from the "
                "tokenizer), ... or a template with {INPUT} and {OUTPUT}"})
    load_in_4bit: bool | None = field(default=None, metadata={"help": "QLoRA (CUDA only)"})
    data: str | None = field(default=None, metadata={"help": "training file or Hub dataset name"})
    eval_data: str | None = field(default=None, metadata={
        "help": "held-out file; none: split eval_size rows off the training data"})
    eval_size: int = field(default=40, metadata={"help": "held-out rows scored before/after"})
    sheet: str | None = field(default=None, metadata={
        "help": "workbook sheet with the training rows; none: the first sheet"})
    eval_sheet: str | None = field(default=None, metadata={
        "help": "sheet of held-out rows (in eval_data, else in data); none: no sheet"})
    template: str | None = field(default=None, metadata={
        "help": "tables: the prompt, with {column} for a cell and [[...]] left out when empty"})
    output_column: str | None = field(default=None, metadata={
        "help": "tables: the column holding the answer the model should give"})
    header_row: int | None = field(default=None, metadata={
        "help": "tables: the line (CSV) or sheet row (Excel) naming the columns, from 1; none: "
                "found past title lines and notes"})
    empty_markers: tuple[str, ...] | None = field(default=None, metadata={
        "help": "words read as empty cells, e.g. N/A,-; none: only empty cells are empty"})
    raw_values: bool = field(default=False, metadata={
        "help": "Excel cells as stored (0.25) instead of as the sheet shows them (25%)"})
    scorer: str | None = field(default=None, metadata={"help": "'exact', 'contains' or 'f1'"})
    system: str | None = field(default=None, metadata={
        "help": "optional system prompt for every example"})
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps"})
    batch_size: int | None = field(default=None, metadata={
        "help": "conversations per micro-batch"})
    grad_accum: int | None = field(default=None, metadata={
        "help": "micro-batches per optimizer step (batch_size x grad_accum per step)"})
    learning_rate: float | None = field(default=None, metadata={"help": "peak learning rate"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    max_seq_length: int | None = field(default=None, metadata={
        "help": "tokens per example, longer ones cut"})
    precision: str = field(default="auto", metadata={
        "help": "'auto' (bf16 where the hardware has it, fp16 on older GPUs, else float32), "
                "'fp32', 'bf16' or 'fp16' (CUDA only)"})
    quants: tuple[str, ...] | None = field(default=None, metadata={
        "help": f"GGUF types to export: {', '.join(QUANTS)}"})
    ollama_name: str = field(default="lorahelpers-demo", metadata={"help": "model name in Ollama"})
    output_dir: str = field(default="outputs/demo", metadata={"help": "where files are written"})
    seed: int = field(default=3407, metadata={"help": "one seed for data order, LoRA init, split"})
    keep_dir: str | None = field(default=None, metadata={
        "help": "folder that mirrors checkpoints, adapter, GGUFs and Modelfile (a re-run resumes "
                "from it); none: Google Drive when mounted; 'off': none"})
    hub_repo: str | None = field(default=None, metadata={
        "help": "Hugging Face repo id (user/name) to upload the GGUFs to; none: no upload"})

    def __setattr__(self, name, value):
        # "" (from a user, a form field or LORAHELPERS_EVAL_DATA=) means none, here and later
        if name in OPTIONAL_TEXT and isinstance(value, str) and not value.strip():
            value = None
        super().__setattr__(name, value)

    def __post_init__(self):
        if self.kind not in ("alpaca", "table"):
            raise SettingsError(f"kind is {self.kind!r}. Fix: use 'alpaca' or 'table'")
        if isinstance(self.quants, str):  # "q8_0,q4_k_m"; "" is the device default
            names = tuple(q.strip().lower() for q in self.quants.split(",") if q.strip())
            self.quants = names if names else None
        bad = [q for q in self.quants or () if q not in QUANTS]
        if bad:
            raise SettingsError(f"unknown GGUF type(s) {bad}. Fix: choose from "
                                f"{', '.join(QUANTS)}")
        for name in ("max_steps", "batch_size", "grad_accum", "lora_r", "lora_alpha",
                     "max_seq_length"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise SettingsError(f"{name} is {getattr(self, name)}. Fix: set it to 1 or more")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise SettingsError(f"learning_rate is {self.learning_rate}. Fix: a number between 0 "
                                "and 1, e.g. 2e-4")
        check_precision(self.precision)
        if (self.template is None) != (self.output_column is None):
            raise SettingsError("template and output_column go together (template="
                                f"{self.template!r}, output_column={self.output_column!r}). "
                                "Fix: set both to read a table, or neither")
        self.sources = {}

    def resolved(self, runtime: RuntimeReport | None = None) -> Params:
        """A copy with every device-default field (None) filled for this machine.

        >>> Params(max_steps=5).resolved().max_steps
        5
        """
        runtime = runtime or runtime_report()
        filled = {k: v for k, v in device_defaults(runtime, self.kind).items()
                  if k in DEVICE_FIELDS and getattr(self, k) is None}
        out = dataclasses.replace(self, **filled)
        label = f"{'GPU' if runtime.cuda else 'CPU'} default"
        out.sources = self.sources | {k: (label, v) for k, v in filled.items()}
        return out

    def replace(self, **changes) -> Params:
        """A copy with `changes`, keeping where every other value came from (a plain
        dataclasses.replace would report each default as "set").

        >>> cpu = RuntimeReport(False, None, None, False, False, False, 2, None, "3.12")
        >>> default_params("table", cpu, env={}).replace(sheet="orders").source("batch_size")
        'CPU default'
        """
        out = dataclasses.replace(self, **changes)
        out.sources = dict(self.sources)
        return out

    def resolved_model(self) -> str:
        """The model path or Hub name to load ('embedded' becomes the cached checkpoint)."""
        if self.model == EMBEDDED:
            from lorahelpers.models import embedded_base

            return str(embedded_base())
        return self.model

    @property
    def examples_per_step(self) -> int | None:
        if self.batch_size is None or self.grad_accum is None:
            return None
        return self.batch_size * self.grad_accum

    def source(self, name: str) -> str:
        """Where a field's value came from: 'GPU default', 'CPU default', 'alpaca default',
        'env LORAHELPERS_<FIELD>', 'set' (given, or changed since) or 'default'."""
        if name in self.sources:
            label, value = self.sources[name]
        else:
            label, value = "default", next(f.default for f in dataclasses.fields(self)
                                           if f.name == name)
        return label if getattr(self, name) == value else "set"

    def table(self) -> list[tuple[str, str, str]]:
        """(field, value, where it came from) for each field, then the examples per step."""
        rows = [(f.name, str(getattr(self, f.name)), self.source(f.name))
                for f in dataclasses.fields(self)]
        return rows + [("examples per step", f"{self.batch_size} x {self.grad_accum} = "
                                             f"{self.examples_per_step}", "")]

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{k}</td><td><code>{html.escape(v)}</code></td><td>{s}</td></tr>"
                       for k, v, s in self.table())
        return ("<table><tr><th>parameter</th><th>value</th><th>from</th></tr>"
                f"{rows}</table>")


def device_defaults(runtime: RuntimeReport, kind: str | None = None) -> dict:
    """The notebooks' defaults on this machine: lorahelpers.runtime.machine_defaults (the one
    place that decides what depends on the machine), and with a notebook `kind` ('alpaca' or
    'table') its sample data: a Hub dataset for Alpaca on a GPU, the data/ samples on CPU.
    default_params and Params.resolved read them.

    >>> cpu = RuntimeReport(False, None, None, False, False, False, 2, None, "3.12")
    >>> d = device_defaults(cpu); (d["batch_size"], d["grad_accum"], d["max_steps"])
    (8, 1, 40)
    """
    gpu = runtime.cuda
    values = machine_defaults(runtime.cuda)
    if kind == "alpaca":
        values |= {"data": str(DATA_DIR / "alpaca_train.jsonl"),
                   "eval_data": str(DATA_DIR / "alpaca_eval.jsonl"),
                   "ollama_name": "lorahelpers-alpaca"}
        if gpu:
            values |= {"data": "yahma/alpaca-cleaned", "eval_data": None, "scorer": "f1"}
    elif kind == "table":
        values |= {"data": str(DATA_DIR / "table.xlsx"), "sheet": "orders",
                   "eval_sheet": "held_out", "template": TABLE_TEMPLATE,
                   "output_column": "shipping_eur", "ollama_name": "lorahelpers-table"}
        if not gpu:  # measured: 80 steps at 1e-3 take the sample orders from 0 to 100 %
            values |= {"max_steps": 80, "learning_rate": 1e-3}
    if kind:
        values["output_dir"] = f"outputs/{kind}"
    return values


def default_params(kind: str = "alpaca", runtime: RuntimeReport | None = None,
                   env: dict | None = None, **overrides) -> Params:
    """Defaults for this machine (device_defaults), then LORAHELPERS_* environment variables,
    then `overrides`. `Params.table()` says which of these each value came from.

    >>> default_params("alpaca", max_steps=5).max_steps
    5
    """
    runtime = runtime or runtime_report()
    env = os.environ if env is None else env
    defaults = device_defaults(runtime, kind)
    from_environment = from_env(env)
    params = Params(**{"kind": kind} | defaults | from_environment | overrides)
    device = f"{'GPU' if runtime.cuda else 'CPU'} default"
    other = device_defaults(dataclasses.replace(runtime, cuda=not runtime.cuda), kind)
    sources = {k: (device if other.get(k) != v else f"{kind} default", v)
               for k, v in defaults.items()}
    sources |= {k: (f"env {ENV_PREFIX}{k.upper()}", v) for k, v in from_environment.items()}
    sources |= {k: ("set", v) for k, v in overrides.items()}
    # recorded as the Params holds them ("" as None, "q8_0,q4_k_m" as a tuple)
    params.sources = {k: (label, getattr(params, k)) for k, (label, _) in sources.items()}
    return params.resolved(runtime)


def from_env(env) -> dict:
    """The LORAHELPERS_<FIELD> variables, converted to each field's type; an empty one is None
    (the device default, or none).

    >>> from_env({"LORAHELPERS_MAX_STEPS": "20", "LORAHELPERS_EVAL_DATA": ""})
    {'eval_data': None, 'max_steps': 20}
    """
    out = {}
    for f in dataclasses.fields(Params):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is None:
            continue
        kind = str(f.type).removesuffix(" | None")
        try:
            if not raw.strip() and f.name in DEVICE_FIELDS + OPTIONAL_TEXT:
                out[f.name] = None
            elif kind == "bool":
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                out[f.name] = raw.lower() in ("1", "true", "yes")
            elif kind == "int":
                out[f.name] = int(raw)
            elif kind == "float":
                out[f.name] = float(raw)
            else:
                out[f.name] = raw
        except ValueError:
            raise SettingsError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a valid {kind}. "
                                f"Fix: set it to a {kind} or unset it") from None
    return out
