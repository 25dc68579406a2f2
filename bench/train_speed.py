"""Training speed on this machine, three ways, same model, data and steps, in one run:

  1. TRL's SFTTrainer with its defaults, as a user writes it (conversational dataset, the
     tokenizer's own chat template, use_cpu=True where there is no GPU),
  2. a plain PyTorch loop in float32 (forward with labels, backward, AdamW),
  3. lorahelpers.training.train with its defaults for this device.

Tokens/s counts only real (non-padding) tokens of the same examples as lorahelpers renders
them, so a default system prompt injected by a template is not counted as useful work. The
first step of each (warm-up) is not timed. Targets: lorahelpers >= 5x TRL's defaults and
>= 1.0x the plain float32 loop.

    python bench/train_speed.py [--steps 6] [--batch 8] [--extra] [--profile]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lorahelpers.batches import PadCollator, label_loss, tokenize_conversations  # noqa: E402
from lorahelpers.chat import get_chat_format  # noqa: E402
from lorahelpers.models import (  # noqa: E402
    ALL_PROJECTIONS,
    LoraSettings,
    add_lora,
    embedded_base,
    load_model,
)
from lorahelpers.training import TrainSettings, train  # noqa: E402

FMT = get_chat_format("chatml")


def conversations(n: int) -> list:
    from lorahelpers.data import to_conversations

    rows, _ = to_conversations(ROOT / "data" / "alpaca_train.jsonl")
    return [rows[i % len(rows)] for i in range(n)]


def now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


class StepClock(TrainerCallback):
    """Wall-clock and CPU time at the end of every optimizer step."""

    def __init__(self):
        self.ends: list[tuple[float, float]] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(now())


def rate(step_ends: list[tuple[float, float]], step_tokens: list[int]) -> dict:
    """Seconds per step and tokens per second (wall clock and CPU time) over steps 2..N: the
    first step is warm-up."""
    wall = step_ends[-1][0] - step_ends[0][0]
    cpu = step_ends[-1][1] - step_ends[0][1]
    tokens = sum(step_tokens[1:len(step_ends)])
    return {"s_step": wall / (len(step_ends) - 1), "wall": tokens / wall, "cpu": tokens / cpu}


def bench_trl_defaults(convs, canonical: dict, steps: int, batch: int, checkpointing=None):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    path = embedded_base()
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)  # its own template, default system prompt
    extra = {} if checkpointing is None else {"gradient_checkpointing": checkpointing}
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=batch,
                         logging_steps=1, save_strategy="no", report_to="none",
                         disable_tqdm=True, use_cpu=not torch.cuda.is_available(), **extra)
        trainer = SFTTrainer(
            model=model, args=args, processing_class=tokenizer,
            train_dataset=Dataset.from_list([{"messages": c} for c in convs]),
            peft_config=LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0,
                                   target_modules=list(ALL_PROJECTIONS), task_type="CAUSAL_LM"))
        # Map each of TRL's tokenized examples back to the same conversation's real tokens.
        ours = {tuple(row["input_ids"]): canonical[i]
                for i, row in enumerate(trainer.train_dataset)}
        rendered = len(trainer.train_dataset[0]["input_ids"]) - canonical[0]
        step_tokens = []
        collate = trainer.data_collator

        def counting_collator(examples):
            step_tokens.append(sum(ours[tuple(e["input_ids"])] for e in examples))
            return collate(examples)

        trainer.data_collator = counting_collator
        clock = StepClock()
        trainer.add_callback(clock)
        trainer.remove_callback(PrinterCallback)  # a dict per step on stdout, nothing else
        trainer.train()
    return rate(clock.ends, step_tokens), rendered


def bench_plain_loop(examples, steps: int, batch: int, pad_id: int):
    model, _ = load_model(embedded_base())
    model = add_lora(model, LoraSettings())
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    collate = PadCollator(pad_id)
    ends, step_tokens = [], []
    for k in range(steps):
        chunk = examples[k * batch:(k + 1) * batch]
        inputs = collate(chunk)
        loss = model(**inputs).loss  # full logits, float32
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        ends.append(now())
        step_tokens.append(int(inputs["attention_mask"].sum()))
    return rate(ends, step_tokens)


def bench_lorahelpers(convs, steps: int, batch: int):
    model, tokenizer = load_model(embedded_base(), chat_format=FMT)
    model = add_lora(model, LoraSettings())
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        result = train(model, tokenizer, convs, None, chat_format=FMT,
                       settings=TrainSettings(output_dir=out, max_steps=steps, batch_size=batch,
                                     save_steps=10_000, progress="none",
                                     reraise_interrupt=False), callbacks=[clock])
    return rate(clock.ends, result.history.column("tokens")), result.settings


def profile_lorahelpers(examples, batch: int, pad_id: int) -> None:
    """Where one lorahelpers training step (forward, backward, AdamW) spends its time."""
    from torch.profiler import ProfilerActivity, profile

    from lorahelpers.training import _cpu_fast_path

    model, _ = load_model(embedded_base())
    model = add_lora(model, LoraSettings())
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    inputs = PadCollator(pad_id)(examples[:batch])

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = label_loss(model, inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    longest = max(len(e["input_ids"]) for e in examples)
    with _cpu_fast_path(model, enabled=not torch.cuda.is_available(), longest=longest):
        step()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(2):
                step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=24))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="steps per method, first untimed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--extra", action="store_true",
                        help="also TRL's defaults with gradient checkpointing off")
    parser.add_argument("--profile", action="store_true",
                        help="print where lorahelpers' forward+backward spends its time")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="compare by CPU time instead of wall clock: steadier on a busy "
                             "machine, best with --threads 1")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is warm-up)")

    from transformers.utils import logging as hf_logging

    from lorahelpers.runtime import runtime_report

    hf_logging.set_verbosity_error()
    print(runtime_report().summary())
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads; "
          f"{args.steps} steps x batch {args.batch}, first step untimed\n")
    _, tokenizer = load_model(embedded_base())
    convs = conversations(args.steps * args.batch)
    examples, _ = tokenize_conversations(tokenizer, convs, FMT)
    canonical = [len(e["input_ids"]) for e in examples]
    print(f"{len(convs)} conversations, {sum(canonical) / len(canonical):.0f} real tokens each "
          "on average\n")
    if args.profile:
        profile_lorahelpers(examples, args.batch, tokenizer.pad_token_id)

    rows = []
    r, settings = bench_lorahelpers(convs, args.steps, args.batch)
    rows.append(("lorahelpers.train", r, f"precision={settings.precision}, checkpointing="
                 f"{settings.gradient_checkpointing}, {settings.optim}, length-grouped"))
    r = bench_plain_loop(examples, args.steps, args.batch, tokenizer.pad_token_id)
    rows.append(("plain PyTorch loop, fp32", r, "forward with labels, backward, AdamW"))
    r, rendered = bench_trl_defaults(convs, canonical, args.steps, args.batch)
    rows.append(("TRL SFTTrainer defaults", r,
                 f"+{rendered} template tokens per example (not counted)"))
    if args.extra:
        r, _ = bench_trl_defaults(convs, canonical, args.steps, args.batch, False)
        rows.append(("TRL defaults, no checkpointing", r, ""))

    key = "cpu" if args.cpu_time else "wall"
    ours, plain, trl = (rows[i][1][key] for i in range(3))
    print(f"\n{'method':32} {'s/step':>7} {'tokens/s':>9} {'tok/cpu-s':>9} {'vs TRL':>7} "
          f"{'vs fp32':>8}  notes")
    for name, r, note in rows:
        print(f"{name:32} {r['s_step']:7.2f} {r['wall']:9.0f} {r['cpu']:9.0f} "
              f"{r[key] / trl:6.1f}x {r[key] / plain:7.2f}x  {note}")
    ok_trl, ok_plain = ours >= 5 * trl, ours >= plain
    basis = "CPU time" if args.cpu_time else "wall clock"
    print(f"\nBy {basis}: lorahelpers vs TRL defaults {ours / trl:.1f}x (target >= 5x: "
          f"{'met' if ok_trl else 'MISSED'}); vs plain fp32 loop {ours / plain:.2f}x "
          f"(target >= 1.0x: {'met' if ok_plain else 'MISSED'})")
    print(f"torch threads {torch.get_num_threads()}, load average now {os.getloadavg()[0]:.1f}"
          " (figures from a busy machine are noisy)")


if __name__ == "__main__":
    main()
