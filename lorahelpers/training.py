"""Training: LoRA fine-tuning through TRL's SFTTrainer, with the loss on assistant responses
only (the ChatFormat's spans), defaults per device, history, checkpoints, resume and a clean
stop on KeyboardInterrupt.

Examples reach the trainer already tokenized by lorahelpers.batches (input_ids + labels), so
TRL neither re-renders them nor adds the tokenizer's default system prompt.

Importing this module loads neither transformers nor trl nor peft: on a GPU Unsloth must be
imported before them to patch the trainer, and the backend is chosen only when a model is loaded
(lorahelpers.models.load_model). The trainer classes are built on first use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .batches import (
    LengthGroupedSampler,
    PadCollator,
    causal_lm_of,
    label_loss,
    tokenize_conversations,
)
from .chat import ChatFormat, get_chat_format, install_chat_template
from .distributed import is_main, main_print, world_size
from .errors import SettingsError, TrainingError
from .history import History
from .keep import fingerprint, last_checkpoint, record_run, recorded_run
from .models import backend_of, save_adapter
from .plots import in_notebook, make_progress
from .runtime import RuntimeReport, check_precision, machine_defaults, runtime_report
from .stops import audit_stops


def _help(default, text: str):
    return field(default=default, metadata={"help": text})


@dataclass
class TrainSettings:
    """How to train. Fields left None get a default for the device (see `resolved`).

    >>> TrainSettings(max_steps=30, output_dir="outputs/run1").max_steps
    30
    """

    output_dir: str | Path = _help("outputs/lora", "Holds adapter/, checkpoints/ and history.*")
    max_steps: int | None = _help(None, "Optimizer steps to run; 0 or less means num_epochs "
                                  "passes; None: 60 on GPU, 40 on CPU.")
    num_epochs: float = _help(1.0, "Passes over the data when max_steps <= 0.")
    learning_rate: float | None = _help(None, "Peak learning rate; None: 2e-4 on GPU, 5e-4 on CPU.")
    batch_size: int | None = _help(None, "Conversations per micro-batch; None: 2 on GPU, 8 on CPU.")
    grad_accum: int | None = _help(None, "Micro-batches per optimizer step; None: 4 on GPU, "
                                   "1 on CPU.")
    max_seq_length: int | None = _help(None, "Tokens kept per conversation; None: the value "
                                       "given to load_model, else 2048 on GPU, 256 on CPU.")
    warmup_steps: int = _help(5, "Steps of linear learning-rate warm-up.")
    lr_scheduler: str = _help("linear", "Learning-rate schedule after warm-up (transformers name).")
    weight_decay: float = _help(0.01, "AdamW weight decay on the LoRA matrices.")
    max_grad_norm: float = _help(1.0, "Gradient clipping norm.")
    eval_steps: int | None = _help(None, "Evaluate every N steps; None: 5 times per run; 0: never.")
    save_steps: int = _help(50, "Write a resumable checkpoint every N steps.")
    save_total_limit: int = _help(2, "Checkpoints kept; older ones are deleted.")
    seed: int = _help(3407, "Seed for data order and everything random.")
    gradient_checkpointing: bool | None = _help(None, "Recompute activations to save memory; "
                                                "None: on for GPU, off on CPU (where it only "
                                                "costs time).")
    precision: str = _help("auto", "'auto' (bf16 where the hardware has it natively, fp16 on "
                           "older GPUs, else float32), 'fp32', 'bf16' or 'fp16' (CUDA only).")
    optim: str | None = _help(None, "Optimizer; None: adamw_8bit on GPU, adamw_torch on CPU.")
    group_by_length: bool = _help(True, "Batch conversations of similar length (less padding).")
    resume: bool = _help(False, "Continue from the last checkpoint in output_dir.")
    keep_dir: str | Path | None = _help(None, "Mirror checkpoints, history and adapter into this "
                                        "folder (e.g. on Google Drive) as they are written; a "
                                        "re-run of the same run resumes from the newest kept.")
    progress: str = _help("auto", "'auto', 'notebook' (bar + live plot), 'terminal' or 'none'.")
    reraise_interrupt: bool | None = _help(None, "After Ctrl-C saves the adapter, re-raise "
                                           "KeyboardInterrupt; None: yes in terminals, no in "
                                           "notebooks.")

    def __post_init__(self):
        positive = ("batch_size", "grad_accum", "max_seq_length", "save_steps", "save_total_limit")
        for name in positive:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise SettingsError(f"TrainSettings.{name} is {value!r}. Fix: a positive integer")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise SettingsError(f"TrainSettings.learning_rate is {self.learning_rate!r}. Fix: a "
                                "number in (0, 1), e.g. 2e-4")
        if self.max_steps is not None and self.max_steps <= 0 and not self.num_epochs > 0:
            raise SettingsError("TrainSettings: neither max_steps nor num_epochs is above 0. "
                                "Fix: set max_steps > 0 or num_epochs > 0")
        if self.eval_steps is not None and self.eval_steps < 0:
            raise SettingsError(f"TrainSettings.eval_steps is {self.eval_steps}. Fix: 0 or more")
        if self.warmup_steps < 0:
            raise SettingsError(f"TrainSettings.warmup_steps is {self.warmup_steps}. Fix: 0 or "
                                "more")
        check_precision(self.precision, "TrainSettings.precision")
        if self.progress not in ("auto", "notebook", "terminal", "none"):
            raise SettingsError(f"TrainSettings.progress is {self.progress!r}. Fix: use 'auto', "
                                "'notebook', 'terminal' or 'none'")

    def resolved(self, report: RuntimeReport | None = None, model=None) -> TrainSettings:
        """A copy with every None replaced by the default for this machine (the step sizes from
        lorahelpers.runtime.machine_defaults, as in the notebooks' parameters)."""
        report = report or runtime_report()
        gpu = report.cuda
        device = machine_defaults(report.cuda)
        defaults = {k: device[k] for k in ("learning_rate", "batch_size", "grad_accum",
                                           "max_steps")} | {
            "max_seq_length": getattr(model, "lorahelpers_max_seq_length", None)
            or device["max_seq_length"],
            "gradient_checkpointing": gpu and backend_of(model) != "unsloth",
            "optim": ("adamw_8bit" if _bitsandbytes() else "adamw_torch_fused") if gpu
            else "adamw_torch",
            "reraise_interrupt": not in_notebook(),
        }
        precision = report.precision if self.precision == "auto" else self.precision
        if precision == "fp16" and not gpu:
            raise SettingsError("TrainSettings.precision is 'fp16', which trains on a CUDA GPU "
                                "only. Fix: use 'auto', 'fp32' or 'bf16' on this machine")
        return dataclasses.replace(
            self, precision=precision,
            **{k: v for k, v in defaults.items() if getattr(self, k) is None})


def _bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


@dataclass
class TrainResult:
    """What train() did: where the adapter is, the history, and how far it got."""

    output_dir: Path
    adapter_dir: Path
    history: History
    steps: int
    max_steps: int
    interrupted: bool
    resumed_from: Path | None
    examples: int
    dropped: int
    elapsed_s: float
    settings: TrainSettings = field(repr=False)
    stop_audit: object | None = field(default=None, repr=False)  # stops.StopAudit

    @property
    def final_loss(self) -> float | None:
        losses = [v for v in self.history.column("loss") if v is not None]
        return losses[-1] if losses else None

    def __repr__(self) -> str:
        loss = "" if self.final_loss is None else f", loss {self.final_loss:.4g}"
        stopped = " (interrupted)" if self.interrupted else ""
        return (f"{self.steps} of {self.max_steps} steps in {self.elapsed_s:.0f} s{loss}"
                f"{stopped}; adapter in {self.adapter_dir}")


# ---- the trainer ---------------------------------------------------------------------------


@functools.cache
def _classes():
    """(_Meter, _Progress, _Trainer), defined on first use so that importing this module does
    not import transformers or trl."""
    from transformers import TrainerCallback
    from trl import SFTTrainer

    class _Meter(TrainerCallback):
        """Times each optimizer step; the trainer adds the real tokens it sees."""

        def __init__(self):
            self.tokens = 0
            self.t_begin = self.t_train = time.perf_counter()
            self.step_s = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.t_train = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            self.t_begin, self.tokens = time.perf_counter(), 0

        def on_step_end(self, args, state, control, **kwargs):
            self.step_s = time.perf_counter() - self.t_begin

    class _Progress(TrainerCallback):
        def __init__(self, display, history: History):
            self.display, self.history = display, history

        def on_train_begin(self, args, state, control, **kwargs):
            self.display.start(state.max_steps, state.global_step, self.history)

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.display.update(self.history)

    class _Trainer(SFTTrainer):
        """SFTTrainer with length-grouped batches, a loss computed only where labels are set,
        and a per-step history."""

        def __init__(self, *args, lengths, history: History, history_dir: Path, **kwargs):
            self._lengths, self._history, self._history_dir = lengths, history, history_dir
            self._meter = _Meter()
            super().__init__(*args, **kwargs)
            self.add_callback(self._meter)
            # compute_loss divides by num_items_in_batch (the answer tokens of the whole step,
            # over every micro-batch and process) whatever the model's forward accepts, so the
            # trainer must count them and leave gradient accumulation to the loss.
            self.model_accepts_loss_kwargs = True
            self._loss_shifts_labels = True

        def _get_train_sampler(self, train_dataset=None):
            if self._lengths is None:
                return super()._get_train_sampler(train_dataset)
            # Under several processes the loader hands consecutive batches to the processes in
            # turn, so grouping by the global batch gives each step the same conversations as
            # one process with world_size times the batch.
            return LengthGroupedSampler(
                self._lengths, self.args.per_device_train_batch_size * world_size(),
                self.args.seed)

        def autocast_smart_context_manager(self, cache_enabled=True):
            # Accelerate applies mixed precision by wrapping model.forward; label_loss calls the
            # backbone directly, so it needs the autocast context itself.
            return self.accelerator.autocast()

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # One loss for every model and launcher: ours (label_loss), never TRL's fused LM
            # head (its triton kernel fails on CPU under trl 1.15).
            if return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                self._meter.tokens += int(inputs["attention_mask"].sum())
            loss = wrapped_loss(model, self.accelerator.unwrap_model(model), inputs,
                                num_items_in_batch)
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                # num_items_in_batch counts the answer tokens of every process and the
                # processes average their gradients: scaled so the step's gradient is that of
                # one process summing over all the answer tokens (token-weighted, like the
                # Trainer's own loss), whatever each process's share of them.
                loss = loss * self.accelerator.num_processes
            return loss

        def log(self, logs: dict, start_time: float | None = None) -> None:
            step = self.state.global_step
            if "loss" in logs:
                m = self._meter
                self._history.add_train(
                    step, epoch=self.state.epoch, loss=logs["loss"],
                    learning_rate=logs.get("learning_rate"), grad_norm=_float(logs.get("grad_norm")),
                    tokens=m.tokens, tokens_per_s=m.tokens / m.step_s if m.step_s else None,
                    elapsed_s=time.perf_counter() - m.t_train)
                logs["tokens_per_s"] = self._history.records[-1]["tokens_per_s"]
            if "eval_loss" in logs:
                self._history.add_eval(step, logs["eval_loss"])
            if ("loss" in logs or "eval_loss" in logs) and is_main():
                self._history.save(self._history_dir)
            super().log(logs, start_time)

    return _Meter, _Progress, _Trainer


def wrapped_loss(model, inner, batch: dict, num_items_in_batch=None):
    """label_loss of `inner` (the PEFT model), computed inside the forward of `model` when a
    launcher wrapped it (DistributedDataParallel): the wrapper synchronises gradients only for
    what runs through its forward, so the loss takes the place of inner's forward for one call.

    >>> wrapped_loss(model, model, batch)  # doctest: +SKIP
    tensor(2.3125, grad_fn=<DivBackward0>)
    """
    if model is inner:
        return label_loss(inner, batch, num_items_in_batch)
    saved = inner.__dict__.get("forward")
    inner.forward = lambda **kwargs: label_loss(inner, kwargs, num_items_in_batch)
    try:
        return model(**batch)
    finally:
        if saved is None:
            del inner.forward
        else:
            inner.forward = saved


def _float(value):
    return None if value is None else float(value)



# ---- train() -------------------------------------------------------------------------------


def _dataset(examples: list[dict]):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [e["input_ids"] for e in examples],
                              "labels": [e["labels"] for e in examples]})


# Rows kept beyond what the steps consume, so that conversations dropped for length (no
# answer left within max_seq_length) still leave enough for every step.
ROWS_MARGIN = 1.25


def rows_for_run(rows: list, s: TrainSettings) -> list:
    """Only the conversations a run can reach: with max_steps set, at most max_steps x
    batch_size x grad_accum of them (x ROWS_MARGIN), a seeded sample when there are more, so
    that a 60-step run on 51,760 Alpaca rows tokenizes 600 instead of all. `s` is resolved.

    >>> len(rows_for_run(list(range(10_000)), TrainSettings(max_steps=10, batch_size=2,
    ...                                                      grad_accum=4)))
    100
    """
    if s.max_steps <= 0:
        return list(rows)
    keep = math.ceil(s.max_steps * s.batch_size * s.grad_accum * world_size() * ROWS_MARGIN)
    if len(rows) <= keep:
        return list(rows)
    import random

    picked = sorted(random.Random(s.seed).sample(range(len(rows)), keep))
    return [rows[i] for i in picked]


def _planned_steps(s: TrainSettings, n_examples: int) -> int:
    if s.max_steps > 0:
        return s.max_steps
    per_epoch = math.ceil(math.ceil(n_examples / (s.batch_size * world_size())) / s.grad_accum)
    return max(1, math.ceil(per_epoch * s.num_epochs))


def precision_flags(cuda: bool, precision: str) -> dict:
    """The trainer's mixed-precision switches for a resolved precision ("fp32", "bf16" or
    "fp16"): weights stay float32, the forward runs under autocast to the 16-bit type.

    >>> precision_flags(cuda=True, precision="fp16")
    {'bf16': False, 'fp16': True, 'use_cpu': False}
    """
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not cuda}


def _sft_config(s: TrainSettings, report: RuntimeReport, out: Path, has_eval: bool,
                total_steps: int):
    from trl import SFTConfig

    eval_steps = s.eval_steps if s.eval_steps is not None else math.ceil(total_steps / 5)
    kwargs = dict(
        output_dir=str(out / "checkpoints"), max_steps=s.max_steps if s.max_steps > 0 else -1,
        num_train_epochs=s.num_epochs, per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.batch_size, gradient_accumulation_steps=s.grad_accum,
        learning_rate=s.learning_rate, lr_scheduler_type=s.lr_scheduler,
        warmup_steps=s.warmup_steps, weight_decay=s.weight_decay, max_grad_norm=s.max_grad_norm,
        optim=s.optim, seed=s.seed, data_seed=s.seed,
        **precision_flags(report.cuda, s.precision),
        gradient_checkpointing=bool(s.gradient_checkpointing),
        gradient_checkpointing_kwargs={"use_reentrant": False}
        if s.gradient_checkpointing else None,
        logging_steps=1, eval_strategy="steps" if has_eval and eval_steps else "no",
        eval_steps=eval_steps or None, save_strategy="steps", save_steps=s.save_steps,
        save_total_limit=s.save_total_limit, report_to="none", disable_tqdm=True,
        dataset_kwargs={"skip_prepare_dataset": True}, remove_unused_columns=False,
        max_length=None, prediction_loss_only=True, dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every LoRA matrix takes part in every step
        dataloader_pin_memory=report.cuda,
    )
    with warnings.catch_warnings():  # TRL itself still sets the deprecated checkpointing name
        warnings.simplefilter("ignore", FutureWarning)
        return SFTConfig(**kwargs)


def train(model, tokenizer, train_conversations, eval_conversations=None,
          *, chat_format: ChatFormat | str = "chatml", settings: TrainSettings | None = None,
          callbacks=()) -> TrainResult:
    """Fine-tune the LoRA adapters of `model` on conversations (lists of {role, content}
    messages ending with an assistant turn). Writes output_dir/adapter (adapter + tokenizer),
    output_dir/checkpoints/checkpoint-N and output_dir/history.{csv,json}. Ctrl-C stops
    cleanly and keeps the adapter trained so far; resume=True continues from the last checkpoint.
    The model is left in eval mode.

    >>> result = train(model, tokenizer, train_rows, eval_rows, chat_format="chatml",
    ...                settings=TrainSettings(max_steps=60, output_dir="outputs/run"))  # doctest: +SKIP
    """
    if not hasattr(model, "peft_config"):
        raise TrainingError("train() trains LoRA adapters and the model has none. Fix: call "
                            "lorahelpers.models.add_lora(model) first")
    report = runtime_report()
    s = (settings or TrainSettings()).resolved(report, model)
    fmt = chat_format if isinstance(chat_format, ChatFormat) else \
        get_chat_format(chat_format, eos=tokenizer.eos_token, tokenizer=tokenizer)
    install_chat_template(tokenizer, fmt)
    out = Path(s.output_dir)

    train_conversations = rows_for_run(train_conversations, s)
    train_examples, dropped = tokenize_conversations(tokenizer, train_conversations, fmt,
                                                     s.max_seq_length)
    if not train_examples:
        raise TrainingError("no training conversation has an assistant response within "
                            f"max_seq_length={s.max_seq_length} tokens ({dropped} dropped). "
                            "Fix: raise max_seq_length, or shorten the conversations")
    # Every trained answer must end with the token the tokenizer, the model and Ollama stop on.
    stop_audit = audit_stops(tokenizer, fmt, examples=train_examples, model=model,
                             stage="before training").raise_if_failed()
    main_print(stop_audit.summary())
    eval_examples, _ = tokenize_conversations(tokenizer, eval_conversations or [], fmt,
                                              s.max_seq_length)
    eval_examples.sort(key=lambda e: len(e["input_ids"]))  # less padding per eval batch

    keeper = None
    if s.keep_dir and world_size() > 1:
        raise SettingsError(f"keep_dir={str(s.keep_dir)!r} mirrors one process's run; under "
                            f"{world_size()} processes the main process alone writes "
                            "checkpoints. Fix: set keep_dir = 'off' for a multi-process run.")
    run = fingerprint(s, model, train_examples)
    if s.keep_dir:
        from .keep import Keeper

        keeper = Keeper.start(s.keep_dir, out, run)
        callbacks = [*callbacks, keeper]
    resume_from, history = _starting_point(out, s.resume or bool(keeper and keeper.resumable),
                                           run)
    total_steps = _planned_steps(s, len(train_examples))
    if backend_of(model) == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_training(model)
    forwards = _own_forwards(model)
    _, _Progress, _Trainer = _classes()
    longest = max(len(e["input_ids"]) for e in train_examples + eval_examples)
    trainer = _Trainer(
        model=model, args=_sft_config(s, report, out, bool(eval_examples), total_steps),
        data_collator=PadCollator(tokenizer.pad_token_id, 8 if report.cuda else None),
        train_dataset=_dataset(train_examples),
        eval_dataset=_dataset(eval_examples) if eval_examples else None,
        processing_class=tokenizer, callbacks=list(callbacks),
        lengths=[len(e["input_ids"]) for e in train_examples] if s.group_by_length else None,
        history=history, history_dir=out)
    _quiet(trainer)
    display = make_progress(s.progress if is_main() else "none")
    if display is not None:
        trainer.add_callback(_Progress(display, history))

    t0 = time.perf_counter()
    interrupted = False
    try:
        with _cpu_fast_path(model, enabled=s.precision == "bf16" and not report.cuda,
                            longest=longest):
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if display is not None:
            display.close(history)
        _restore_forwards(forwards)
    model.eval()
    steps = trainer.state.global_step
    info = {"base_model": _base_name(model), "chat_format": dataclasses.asdict(fmt),
            "steps": steps, "max_steps": trainer.state.max_steps, "interrupted": interrupted,
            "settings": dataclasses.asdict(s)}
    adapter_dir = out / "adapter"
    if is_main():  # the processes hold the same weights; one writes them
        save_adapter(model, tokenizer, adapter_dir, info)
        history.save(out)
    if keeper is not None:
        keeper.finish(adapter_dir)
    result = TrainResult(out, adapter_dir, history, steps, trainer.state.max_steps, interrupted,
                         resume_from, len(train_examples), dropped, time.perf_counter() - t0, s,
                         stop_audit)
    last = last_checkpoint(out / "checkpoints", remove_incomplete=is_main())
    if interrupted:
        main_print(f"Training interrupted at step {steps}; the adapter so far is in {adapter_dir}."
              + (f" train(..., TrainSettings(resume=True)) continues from {last.name}."
                 if last else ""))
        if s.reraise_interrupt:
            raise KeyboardInterrupt
    return result


def _starting_point(out: Path, resume: bool, run: str) -> tuple[Path | None, History]:
    """The checkpoint to resume from (or None) and the history up to it. `run` is this run's
    fingerprint: checkpoints recorded for another run are refused, not resumed."""
    last = (last_checkpoint(out / "checkpoints", remove_incomplete=is_main()) if resume
            else None)
    recorded = recorded_run(out)
    if last is not None and recorded not in (None, run):
        raise TrainingError(f"{out / 'checkpoints'} holds checkpoints of a run with other "
                            "settings, data or model; resuming would mix the two. Fix: "
                            "resume=False to start over, or resume with that run's settings, "
                            "data and model")
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
        record_run(out, run)
    if last is None:
        if resume:
            main_print(f"No checkpoint in {out / 'checkpoints'}; starting from step 0.")
        # Checkpoints of an earlier run would be mistaken for this run's on the next resume.
        if is_main():
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        return None, History()
    step = int(last.name.rsplit("-", 1)[-1])
    main_print(f"Resuming from {last} (step {step}).")
    saved = out / "history.json"
    return last, History.load(saved).truncate(step) if saved.is_file() else History()


EAGER_ATTENTION_MAX_TOKENS = 256  # measured: below this, CPU eager attention beats SDPA


@contextlib.contextmanager
def _cpu_fast_path(model, enabled: bool, longest: int):
    """bf16 training on CPU without waste; the model is exactly as before afterwards.

    Measured with torch.profiler on SmolLM2-135M, batch 8 x 38 tokens, one thread: SDPA's CPU
    flash-attention backward took 28% of a step (11 ms per layer for 38 tokens), eager
    attention a fifth of that; autocast re-cast every frozen weight to bf16 on every forward
    (the 49152 x 576 tied LM head alone costs 30+ ms a step), and PEFT cast each LoRA input to
    float32 only for autocast to cast it back. Together these made a step about 1.6x slower.
    """
    if not enabled:
        yield
        return
    from peft.helpers import disable_input_dtype_casting

    attention = getattr(model.config, "_attn_implementation", None)
    eager = attention == "sdpa" and longest <= EAGER_ATTENTION_MAX_TOKENS
    frozen = [m for m in model.modules() if isinstance(m, torch.nn.Linear)
              and not m.weight.requires_grad and m.weight.dtype == torch.float32]
    originals = [m.weight for m in frozen]
    try:
        if eager:
            model.set_attn_implementation("eager")
        # bf16 copies are what autocast computes anyway, once instead of every step. A new
        # Parameter (not .data) leaves an LM head tied to the embedding untouched.
        for m in frozen:
            m.weight = torch.nn.Parameter(m.weight.detach().to(torch.bfloat16),
                                          requires_grad=False)
        with disable_input_dtype_casting(model):
            yield
    finally:
        for m, weight in zip(frozen, originals, strict=True):
            m.weight = weight
        if eager:
            model.set_attn_implementation(attention)


def _own_forwards(model) -> list:
    """The instance-level forward of the model and its base model, before the trainer patches
    them (accelerate wraps one in bf16 autocast, TRL gives the other a fused LM head)."""
    return [(m, m.__dict__.get("forward")) for m in {id(m): m for m in
                                                      (model, causal_lm_of(model))}.values()]


def _restore_forwards(saved: list) -> None:
    # After training the model must run exactly as loaded (float32 on CPU), or exported
    # artifacts would be checked against autocast logits.
    for module, forward in saved:
        if forward is None:
            module.__dict__.pop("forward", None)
            module.__dict__.pop("_original_forward", None)
        else:
            module.forward = forward


def _quiet(trainer) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    # Our own displays replace the trainer's printed dicts and tqdm bars.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _base_name(model) -> str | None:
    config = getattr(model, "peft_config", {}).get("default")
    return getattr(config, "base_model_name_or_path", None) or \
        getattr(model.config, "_name_or_path", None)
