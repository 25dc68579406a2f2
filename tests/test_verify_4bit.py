"""A model trained over 4-bit base weights is verified through the merged 16-bit model.

QLoRA (and Unsloth's bnb-4bit checkpoints) train the adapter over rounded base weights, while
the export merges it into the original 16-bit weights. A correct GGUF equals the merged model,
not the 4-bit one. bitsandbytes needs CUDA, so here the 4-bit base is imitated on CPU: every
linear weight of the decoder rounded to 16 levels per row, and the model flagged as 4-bit as
bitsandbytes flags it.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def _four_bit_copy(base_dir, adapter_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in name:
                w = module.weight
                scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / 7
                w.copy_(torch.round(w / scale).clamp(-8, 7) * scale)
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.base_model.model.is_loaded_in_4bit = True
    model.eval()
    return model


def test_gguf_of_a_4bit_trained_model_is_verified_against_the_merged_model(
        export_source, verify_prompts, tmp_path):
    from lorahelpers.models import is_4bit
    from lorahelpers.pipeline import ExportBundle, export_and_verify
    from lorahelpers.verify import verify

    src = export_source
    quantized = _four_bit_copy(src.base_dir, src.adapter_dir)
    assert is_4bit(quantized) and not is_4bit(src.model)
    prompts = verify_prompts[:4]
    bundle = export_and_verify(quantized, src.tokenizer, src.adapter_dir, src.chat_format,
                               out_dir=tmp_path, name="m", quants=["q8_0"], prompts=prompts,
                               progress=lambda s: None)
    q8 = bundle.reports["q8_0"]
    assert bundle.reference.startswith("the merged 16-bit model")
    assert q8.passed, q8.table()
    gap = bundle.quantized_gap
    assert gap is not None and gap.kind == "4bit-gap"
    # The 4-bit model is measurably further from the merged model than the q8_0 file is.
    assert gap.mean_kl > 3 * q8.mean_kl, (gap.mean_kl, q8.mean_kl)
    assert bundle.all_verified  # the gap is information, not a verdict on the export
    text = str(bundle)
    assert ExportBundle.GAP_TITLE in text and "Verified against the merged 16-bit model" in text
    # Against the 4-bit model itself, the same correct file would look wrong.
    direct = verify(bundle.ggufs["q8_0"], quantized, src.tokenizer, prompts, quant="q8_0")
    assert not direct.passed and direct.mean_kl > q8.mean_kl

