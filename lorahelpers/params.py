"""The notebooks' parameters: one dataclass, defaults chosen by the runtime, every field
overridable by an environment variable (how CI shrinks a run)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from lorahelpers.runtime import RuntimeReport, device_defaults, runtime_report

ENV_PREFIX = "LORAHELPERS_"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
EMBEDDED = "embedded"  # stands for lorahelpers.models.embedded_base()
QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_k_m", "q5_k_m", "q6_k")
# The column-merge template of the sample orders (data/README.md)
# The columns that decide the answer come first: after the same 40 CPU steps SmolLM2-135M
# scored 10 % of held-out orders with them last (behind item, weight, gift note and date) and
# 100 % after 80 steps with them first. The date keeps every prompt distinct, so no held-out
# prompt is also a training prompt.
TABLE_TEMPLATE = ("Zone {zone}, express: {express}. Order of {item} ({category})"
                  "[[, {weight_kg} kg]][[, gift note: {gift_note}]], ordered {order_date}. "
                  "Shipping in EUR?")


@dataclass
class Params:
    """Everything a notebook run depends on. Each field can be set from the environment as
    LORAHELPERS_<FIELD> (e.g. LORAHELPERS_MAX_STEPS=20, LORAHELPERS_QUANTS=q8_0,q4_k_m)."""

    kind: str = field(default="alpaca", metadata={"help": "'alpaca' or 'table' notebook"})
    model: str = field(default=EMBEDDED, metadata={
        "help": "Hub name or local checkpoint; 'embedded' is the SmolLM2-135M that ships with us"})
    chat_format: str = field(default="chatml", metadata={
        "help": "'chatml', 'llama3', 'gemma', 'mistral', 'phi3', 'qwen3', 'auto' (from the "
                "tokenizer), ... or a template with {INPUT} and {OUTPUT}"})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA (CUDA only)"})
    data: str = field(default="", metadata={"help": "training file or Hub dataset name"})
    eval_data: str = field(default="", metadata={
        "help": "held-out file; empty: split eval_size rows off the training data"})
    eval_size: int = field(default=40, metadata={"help": "held-out rows scored before/after"})
    sheet: str = field(default="", metadata={
        "help": "workbook sheet with the training rows; empty: the first sheet"})
    eval_sheet: str = field(default="", metadata={
        "help": "sheet of held-out rows (in eval_data, else in data); empty: none"})
    template: str = field(default="", metadata={
        "help": "tables: the prompt, with {column} for a cell and [[...]] left out when empty"})
    output_column: str = field(default="", metadata={
        "help": "tables: the column holding the answer the model should give"})
    scorer: str = field(default="exact", metadata={"help": "'exact', 'contains' or 'f1'"})
    system: str = field(default="", metadata={"help": "optional system prompt for every example"})
    max_steps: int = field(default=60, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "conversations per micro-batch"})
    grad_accum: int = field(default=1, metadata={
        "help": "micro-batches per optimizer step (batch_size x grad_accum per step)"})
    learning_rate: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    max_seq_length: int = field(default=512, metadata={"help": "tokens per example, longer ones cut"})
    quants: tuple[str, ...] = field(default=("q8_0",), metadata={
        "help": "GGUF types to export: f16, bf16, q8_0, q4_k_m, q5_k_m, q6_k"})
    ollama_name: str = field(default="lorahelpers-demo", metadata={"help": "model name in Ollama"})
    output_dir: str = field(default="outputs/demo", metadata={"help": "where files are written"})
    seed: int = field(default=3407, metadata={"help": "one seed for data order, LoRA init, split"})
    keep_dir: str = field(default="", metadata={
        "help": "folder that mirrors checkpoints, adapter, GGUFs and Modelfile (a re-run resumes "
                "from it); empty: Google Drive when mounted; 'off': none"})
    hub_repo: str = field(default="", metadata={
        "help": "Hugging Face repo id (user/name) to upload the GGUFs to; empty: no upload"})

    def __post_init__(self):
        if self.kind not in ("alpaca", "table"):
            raise ValueError(f"kind must be 'alpaca' or 'table', got {self.kind!r}")
        if isinstance(self.quants, str):
            self.quants = tuple(q.strip().lower() for q in self.quants.split(",") if q.strip())
        bad = [q for q in self.quants if q not in QUANTS]
        if bad:
            raise ValueError(f"unknown GGUF type(s) {bad}: choose from {', '.join(QUANTS)}")
        for name in ("max_steps", "batch_size", "grad_accum", "lora_r", "lora_alpha",
                     "max_seq_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be between 0 and 1, got {self.learning_rate}")
        if bool(self.template.strip()) != bool(self.output_column.strip()):
            raise ValueError("template and output_column go together: set both to read a table "
                             f"(template={self.template!r}, output_column={self.output_column!r})")

    def resolved_model(self) -> str:
        """The model path or Hub name to load ('embedded' becomes the cached checkpoint)."""
        if self.model == EMBEDDED:
            from lorahelpers.models import embedded_base

            return str(embedded_base())
        return self.model

    @property
    def examples_per_step(self) -> int:
        return self.batch_size * self.grad_accum

    def table(self) -> list[tuple[str, str]]:
        rows = [(f.name, str(getattr(self, f.name))) for f in dataclasses.fields(self)]
        return rows + [("examples per step", f"{self.batch_size} x {self.grad_accum} = "
                                             f"{self.examples_per_step}")]

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{k}</td><td><code>{v}</code></td></tr>" for k, v in self.table())
        return f"<table><tr><th>parameter</th><th>value</th></tr>{rows}</table>"


def default_params(kind: str = "alpaca", runtime: RuntimeReport | None = None,
                   env: dict | None = None, **overrides) -> Params:
    """Defaults for this machine, then LORAHELPERS_* environment variables, then `overrides`.

    On a CUDA GPU: an Unsloth 4-bit Llama-3.2 Instruct model and a Hub dataset (Alpaca) or the
    sample table, with Unsloth's notebook settings (2 x 4 = 8 conversations per step, 60 steps,
    2e-4). On CPU: the embedded SmolLM2-135M and the data/ samples. The step sizes come from
    lorahelpers.runtime.device_defaults, the one place that decides them.

    >>> default_params("alpaca", max_steps=5).max_steps
    5
    """
    runtime = runtime or runtime_report()
    env = os.environ if env is None else env
    values: dict = {"kind": kind}
    if kind == "alpaca":
        values |= {"data": str(DATA_DIR / "alpaca_train.jsonl"),
                   "eval_data": str(DATA_DIR / "alpaca_eval.jsonl"),
                   "ollama_name": "lorahelpers-alpaca"}
    else:
        values |= {"data": str(DATA_DIR / "table.xlsx"), "sheet": "orders",
                   "eval_sheet": "held_out", "template": TABLE_TEMPLATE,
                   "output_column": "shipping_eur", "ollama_name": "lorahelpers-table"}
    values |= device_defaults(runtime) | {"output_dir": f"outputs/{kind}"}
    if runtime.cuda:
        values |= {"model": "unsloth/Llama-3.2-3B-Instruct-bnb-4bit", "chat_format": "llama3",
                   "load_in_4bit": True, "quants": ("q4_k_m", "q8_0")}
        if kind == "alpaca":
            values |= {"data": "yahma/alpaca-cleaned", "eval_data": "", "scorer": "f1"}
    else:
        values |= {"model": EMBEDDED, "chat_format": "chatml", "quants": ("q8_0",)}
        if kind == "table":  # measured: 80 steps at 1e-3 take the sample orders from 0 to 100 %
            values |= {"max_steps": 80, "learning_rate": 1e-3}
    values |= from_env(env)
    values |= overrides
    return Params(**values)


def from_env(env) -> dict:
    """The LORAHELPERS_<FIELD> variables, converted to each field's type."""
    out = {}
    for f in dataclasses.fields(Params):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is None:
            continue
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        try:
            if kind == "bool":
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
            raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a valid {kind}") from None
    return out
