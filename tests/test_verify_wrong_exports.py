"""Verification that can fail: for every quant type a wrong export (the base without the
adapter, a merge at the wrong scale) is rejected, and a fast check that the streamed merge
applies alpha / r (not 1, not alpha), or alpha / sqrt(r) with rsLoRA, on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lorahelpers.verify import THRESHOLDS, _Stats, verify
from tests.fixtures_export import QUANTS


def test_adapter_kept_counts_only_positions_the_adapter_changed():
    stats = _Stats()
    base = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    ref = np.array([[0.0, 3.0, 0.0], [0.0, 3.0, 0.0], [3.0, 0.0, 0.0]])  # changes 0 and 2
    cand = np.array([[0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])  # keeps 0, loses 2
    stats.add([1, 2, 3], ref, cand, base)
    assert (stats.adapter_n, stats.adapter_kept) == (2, 1)
    assert all(0 < t.min_adapter_kept < 1 for t in THRESHOLDS.values())


def test_adapter_scale_is_the_share_of_the_adapter_effect_carried():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 50))
    ref = base + rng.normal(size=(20, 50))  # what the adapter adds

    def scale(cand):
        stats = _Stats()
        stats.add(list(range(20)), ref, cand, base)
        return stats.adapter_scale()

    assert scale(ref) == pytest.approx(1.0)
    assert scale(base) == pytest.approx(0.0, abs=0.05)
    # a merge at half the scale (in logits, which is what a half-scale LoRA does to a layer
    # next to the head), plus noise that leans neither way
    half = base + 0.5 * (ref - base) + rng.normal(scale=0.3, size=(20, 50))
    assert scale(half) == pytest.approx(0.5, abs=0.15)
    low, high = THRESHOLDS["q4_k_m"].adapter_scale
    assert not low <= scale(half) <= high and low <= scale(ref) <= high
    stats = _Stats()
    stats.add(list(range(20)), base, base, base)  # an adapter that changes nothing
    assert stats.adapter_scale() is None


@pytest.fixture(scope="module", params=[False, True], ids=["lora", "rslora"])
def tiny(request, tmp_path_factory, embedded_tokenizer):
    """A two-layer Llama with random weights and a random LoRA with alpha != r (rsLoRA in the
    second run), and the scale its update must be merged at: alpha / r, or alpha / sqrt(r)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    rslora = request.param
    root = tmp_path_factory.mktemp("tiny")
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         vocab_size=len(embedded_tokenizer), initializer_range=0.1)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(root / "base")
    embedded_tokenizer.save_pretrained(root / "base")
    torch.manual_seed(1)
    peft = get_peft_model(model, LoraConfig(r=2, lora_alpha=7, init_lora_weights=False,
                                            use_rslora=rslora,
                                            target_modules=["q_proj", "v_proj", "down_proj"]))
    peft.eval()
    peft.save_pretrained(root / "adapter")
    return root, peft, 7 / 2 ** 0.5 if rslora else 7 / 2


def test_streamed_merge_scales_by_alpha_over_r(tiny, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from lorahelpers.merge import merge_lora

    root, peft, scale = tiny
    merge_lora(root / "adapter", tmp_path / "merged", base_dir=root / "base",
               progress=lambda s: None)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    ids = torch.arange(3, 40).unsqueeze(0)
    with torch.no_grad():
        want = peft(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        with peft.disable_adapter():
            base = peft(input_ids=ids).logits
    assert (want - base).abs().max() > 1e-2  # the adapter matters
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    # the weights themselves: W + (7 / 2) * B @ A, with rsLoRA W + (7 / sqrt(2)) * B @ A
    layer = peft.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(scale)
    expected = layer.base_layer.weight + scale * layer.lora_B["default"].weight @ \
        layer.lora_A["default"].weight
    assert torch.allclose(merged.model.layers[0].self_attn.q_proj.weight, expected, atol=1e-6)


@pytest.fixture(scope="module")
def base_exports(export_source, tmp_path_factory):
    """The base model without the adapter, at every quant type."""
    from lorahelpers.export import export_gguf

    return export_gguf(export_source.base_dir, tmp_path_factory.mktemp("base"), "base", QUANTS,
                       progress=lambda s: None)


@pytest.fixture(scope="module")
def half_scale(export_source, tmp_path_factory):
    """A merge whose adapter config says half the alpha it was trained with, at every type."""
    import shutil

    from lorahelpers.export import export_gguf
    from lorahelpers.merge import merge_lora

    quiet = {"progress": lambda s: None}
    root = tmp_path_factory.mktemp("half")
    adapter = root / "half-scale-adapter"
    shutil.copytree(export_source.adapter_dir, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(config | {
        "lora_alpha": config["lora_alpha"] / 2}))
    merged = merge_lora(adapter, root / "merged", base_dir=export_source.base_dir,
                        chat_format=export_source.chat_format, **quiet).out_dir
    return export_gguf(merged, root / "gguf", "half", QUANTS, **quiet)


@pytest.mark.slow
@pytest.mark.parametrize("quant", QUANTS)
def test_the_base_without_its_adapter_fails_verify(quant, base_exports, export_source,
                                                   verify_prompts):
    base = base_exports
    report = verify(base[quant], export_source.model, export_source.tokenizer, verify_prompts)
    print(f"\nbase without adapter, {quant}: KL {report.mean_kl:.3f}, top-1 {report.top1:.1%}, "
          f"adapter kept {report.adapter_kept:.0%} of {report.adapter_positions}, "
          f"adapter scale {report.adapter_scale:.2f}")
    assert not report.passed, report.table()
    assert report.adapter_kept < THRESHOLDS[quant].min_adapter_kept
    assert report.adapter_scale < THRESHOLDS[quant].adapter_scale[0]


@pytest.mark.slow
@pytest.mark.parametrize("quant", QUANTS)
def test_a_merge_at_the_wrong_scale_fails_verify(quant, half_scale, export_source,
                                                 verify_prompts):
    report = verify(half_scale[quant], export_source.model, export_source.tokenizer,
                    verify_prompts)
    print(f"\nmerge at half scale, {quant}: KL {report.mean_kl:.3f}, top-1 {report.top1:.1%}, "
          f"adapter kept {report.adapter_kept:.0%} of {report.adapter_positions}, "
          f"adapter scale {report.adapter_scale:.2f}")
    assert not report.passed, report.table()
    assert report.adapter_scale < THRESHOLDS[quant].adapter_scale[0], report.table()
