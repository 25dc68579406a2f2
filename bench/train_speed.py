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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lorahelpers.chat import get_chat_format  # noqa: E402
from lorahelpers.models import ALL_PROJECTIONS, LoraSettings, add_lora, embedded_base, load_model  # noqa: E402
from lorahelpers.training import (  # noqa: E402
    PadCollator,
    TrainSettings,
    label_loss,
    tokenize_conversations,
    train,
)

FMT = get_chat_format("chatml")


def conversations(n: int) -> list:
    from lorahelpers.data import to_conversations

    rows, _ = to_conversations(ROOT / "data" / "alpaca_train.jsonl")
    return [rows[i % len(rows)] for i in range(n)]


class StepClock(TrainerCallback):
    """Wall-clock time at the end of every optimizer step."""

    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def rate(step_ends: list[float], step_tokens: list[int]) -> tuple[float, float]:
    """(seconds per step, tokens/s) over steps 2..N: the first step is warm-up."""
    seconds = step_ends[-1] - step_ends[0]
    return seconds / (len(step_ends) - 1), sum(step_tokens[1:len(step_ends)]) / seconds


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
        ours = {tuple(row["input_ids"]): canonical[i] for i, row in enumerate(trainer.train_dataset)}
        rendered = len(trainer.train_dataset[0]["input_ids"]) - canonical[0]
        step_tokens = []
        collate = trainer.data_collator

        def counting_collator(examples):
            step_tokens.append(sum(ours[tuple(e["input_ids"])] for e in examples))
            return collate(examples)

        trainer.data_collator = counting_collator
        clock = StepClock()
        trainer.add_callback(clock)
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
        ends.append(time.perf_counter())
        step_tokens.append(int(inputs["attention_mask"].sum()))
    return rate(ends, step_tokens)


def bench_lorahelpers(convs, steps: int, batch: int):
    model, tokenizer = load_model(embedded_base(), chat_format=FMT)
    model = add_lora(model, LoraSettings())
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        result = train(model, tokenizer, convs, None, FMT,
                       TrainSettings(output_dir=out, max_steps=steps, batch_size=batch,
                                     save_steps=10_000, progress="none",
                                     reraise_interrupt=False), callbacks=[clock])
    settings = result.settings
    return rate(clock.ends, result.history.column("tokens")), settings


def profile_lorahelpers(examples, batch: int, pad_id: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    model, _ = load_model(embedded_base())
    model = add_lora(model, LoraSettings())
    model.train()
    inputs = PadCollator(pad_id)(examples[:batch])

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = label_loss(model, inputs)
        loss.backward()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="steps per method, first untimed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--extra", action="store_true",
                        help="also TRL's defaults with gradient checkpointing off")
    parser.add_argument("--profile", action="store_true",
                        help="print where lorahelpers' forward+backward spends its time")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is warm-up)")

    from transformers.utils import logging as hf_logging

    from lorahelpers.runtime import runtime_report

    hf_logging.set_verbosity_error()
    print(runtime_report().summary())
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
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
    (s, tps), settings = bench_lorahelpers(convs, args.steps, args.batch)
    rows.append(("lorahelpers.train", s, tps,
                 f"bf16={settings.bf16}, checkpointing={settings.gradient_checkpointing}, "
                 f"{settings.optim}, length-grouped"))
    s, tps = bench_plain_loop(examples, args.steps, args.batch, tokenizer.pad_token_id)
    rows.append(("plain PyTorch loop, fp32", s, tps, "forward with labels, backward, AdamW"))
    (s, tps), rendered = bench_trl_defaults(convs, canonical, args.steps, args.batch)
    rows.append(("TRL SFTTrainer defaults", s, tps,
                 f"+{rendered} template tokens per example (not counted)"))
    if args.extra:
        (s, tps), _ = bench_trl_defaults(convs, canonical, args.steps, args.batch, False)
        rows.append(("TRL defaults, no checkpointing", s, tps, ""))

    ours, plain, trl = rows[0][2], rows[1][2], rows[2][2]
    print(f"{'method':32} {'s/step':>8} {'tokens/s':>9} {'vs TRL':>7} {'vs fp32':>8}  notes")
    for name, s, tps, note in rows:
        print(f"{name:32} {s:8.2f} {tps:9.0f} {tps / trl:6.1f}x {tps / plain:7.2f}x  {note}")
    ok_trl, ok_plain = ours >= 5 * trl, ours >= plain
    print(f"\nlorahelpers vs TRL defaults: {ours / trl:.1f}x (target >= 5x: "
          f"{'met' if ok_trl else 'MISSED'}); vs plain fp32 loop: {ours / plain:.2f}x "
          f"(target >= 1.0x: {'met' if ok_plain else 'MISSED'})")
    print(f"load average now {os.getloadavg()[0]:.1f}: figures from a busy machine are noisy")


if __name__ == "__main__":
    main()
