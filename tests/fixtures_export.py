"""Session fixtures for export results (owned by the export stage).

Everything is built from the training stage's `finetuned` fixture; until that fixture exists,
from a stand-in: a LoRA with random updates (sized to move the model noticeably, KL ~0.2 from
the base, while it still answers sensibly) on the embedded base, saved like a trained adapter.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUANTS = ("f16", "bf16", "q8_0", "q4_k_m", "q5_k_m")


def verify_prompt_list() -> list:
    """Held-out review prompts, two general questions and a multi-turn chat with a system
    message (so the template's every branch reaches the tokenizer comparison)."""
    rows = [json.loads(line) for line in (ROOT / "data" / "alpaca_eval.jsonl").open()][:3]
    chat = [{"role": "system", "content": "You tag product reviews as POS or NEG."},
            {"role": "user", "content": "Tag the review.\n\nThe kettle boils fast and quietly."},
            {"role": "assistant", "content": "POS"},
            {"role": "user", "content": "Tag the review.\n\nThe lid broke on the first day."}]
    return [f"{r['instruction']}\n\n{r['input']}" for r in rows] + [
        "What is the capital of France?", "Name three colours of the rainbow.", chat]


def make_stand_in(base_dir: Path, out: Path, **lora_kwargs) -> SimpleNamespace:
    """A PEFT LoRA on the embedded base with random (not zero) updates, saved with the
    chatml template in its tokenizer; the same fields as the `finetuned` fixture."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorahelpers.chat import get_chat_format, install_chat_template

    fmt = get_chat_format("chatml")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    install_chat_template(tokenizer, fmt)
    torch.manual_seed(0)
    settings = dict(r=8, lora_alpha=16, init_lora_weights=False, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                           LoraConfig(**(settings | lora_kwargs)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                p.mul_(0.6)
            elif "modules_to_save" in name:  # a trained copy differs from the original
                p.add_(torch.randn_like(p) * p.std() * 0.05)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return SimpleNamespace(base_dir=Path(base_dir), adapter_dir=Path(out), chat_format=fmt,
                           model=model, tokenizer=tokenizer, history=[])


@pytest.fixture(scope="session")
def export_source(request, tmp_path_factory, embedded_path):
    try:
        return request.getfixturevalue("finetuned")
    except pytest.FixtureLookupError:
        return make_stand_in(embedded_path, tmp_path_factory.mktemp("stand_in") / "adapter")


@pytest.fixture(scope="session")
def verify_prompts():
    return verify_prompt_list()


@pytest.fixture(scope="session")
def merge_result(export_source, tmp_path_factory):
    from lorahelpers.merge import merge_lora

    out = tmp_path_factory.mktemp("merged") / "model"
    return merge_lora(export_source.adapter_dir, out, base_dir=export_source.base_dir,
                      chat_format=export_source.chat_format, progress=lambda s: None)


@pytest.fixture(scope="session")
def merged_dir(merge_result):
    return merge_result.out_dir


@pytest.fixture(scope="session")
def merged_ggufs(merged_dir, tmp_path_factory):
    """All quant types from one export_gguf call (the k-quants reuse its f16 file)."""
    from lorahelpers.export import export_gguf

    return export_gguf(merged_dir, tmp_path_factory.mktemp("gguf"), "model", QUANTS,
                       progress=lambda s: None)


@pytest.fixture(scope="session")
def f16_gguf(merged_ggufs):
    return merged_ggufs["f16"]


@pytest.fixture(scope="session")
def bf16_gguf(merged_ggufs):
    return merged_ggufs["bf16"]


@pytest.fixture(scope="session")
def q8_gguf(merged_ggufs):
    return merged_ggufs["q8_0"]


@pytest.fixture(scope="session")
def q4_gguf(merged_ggufs):
    return merged_ggufs["q4_k_m"]


@pytest.fixture(scope="session")
def q5_gguf(merged_ggufs):
    return merged_ggufs["q5_k_m"]


@pytest.fixture(scope="session")
def base_f16_gguf(export_source, tmp_path_factory):
    from lorahelpers.export import export_gguf

    out = tmp_path_factory.mktemp("base_gguf")
    return export_gguf(export_source.base_dir, out, "base", ("f16",),
                       progress=lambda s: None)["f16"]


@pytest.fixture(scope="session")
def adapter_gguf(export_source, tmp_path_factory):
    from lorahelpers.export import export_adapter_gguf

    out = tmp_path_factory.mktemp("adapter_gguf") / "adapter-f16.gguf"
    return export_adapter_gguf(export_source.adapter_dir, export_source.base_dir, out,
                               progress=lambda s: None)
