"""Session fixtures for training results (owned by the training stage).

`finetuned`: the embedded SmolLM2-135M with a LoRA adapter trained a few dozen steps on
data/alpaca_train.jsonl in the chatml format (seeded, short sequences, float32 so that every
CPU trains the same adapter, about a minute on two CPU cores). Export and Ollama tests build their artifacts from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "data"
FINETUNE_STEPS = 24


@dataclass
class Finetuned:
    base_dir: Path  # the embedded base checkpoint
    adapter_dir: Path  # PEFT adapter (safetensors) + tokenizer with the chat template
    chat_format: object  # lorahelpers.chat.ChatFormat ("chatml")
    model: object  # the PEFT model in memory, eval mode, float32
    tokenizer: object
    history: object  # lorahelpers.history.History
    result: object  # lorahelpers.training.TrainResult
    eval_conversations: list  # held-out conversations (data/alpaca_eval.jsonl)


def alpaca_conversations(name: str) -> list:
    from lorahelpers.data import to_conversations

    conversations, _ = to_conversations(DATA / name)
    return conversations


@pytest.fixture(scope="session")
def finetuned(embedded_path, tmp_path_factory) -> Finetuned:
    from lorahelpers.chat import get_chat_format
    from lorahelpers.models import LoraSettings, add_lora, load_model
    from lorahelpers.training import TrainSettings, train

    fmt = get_chat_format("chatml")
    train_rows = alpaca_conversations("alpaca_train.jsonl")
    eval_rows = alpaca_conversations("alpaca_eval.jsonl")
    model, tokenizer = load_model(embedded_path, max_seq_length=256, chat_format=fmt)
    model = add_lora(model, LoraSettings(r=16, alpha=16, seed=3407))
    settings = TrainSettings(
        output_dir=tmp_path_factory.mktemp("finetuned"), max_steps=FINETUNE_STEPS, batch_size=8,
        learning_rate=5e-4, warmup_steps=3, eval_steps=FINETUNE_STEPS // 2,
        save_steps=FINETUNE_STEPS, progress="none", reraise_interrupt=False,
        # float32 on every CPU: bf16 autocast rounds differently with AMX, with AVX-512 BF16
        # alone and in emulation, and the export tests' limits are measured on this adapter
        precision="fp32")
    result = train(model, tokenizer, train_rows, eval_rows[:8], chat_format=fmt, settings=settings)
    assert result.steps == FINETUNE_STEPS and not result.interrupted
    return Finetuned(embedded_path, result.adapter_dir, fmt, model, tokenizer, result.history,
                     result, eval_rows)
