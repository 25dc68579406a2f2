"""Merging a LoRA into its base, streamed: equal to the PEFT model, for every adapter shape."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from lorahelpers import checkpoint
from lorahelpers.checkpoint import MergeError, original_16bit_name, read_header
from lorahelpers.errors import ExportError
from lorahelpers.merge import base_with_template, merge_lora

QUIET = {"progress": lambda s: None}
IDS = [1, 4093, 198, 26843, 2, 198, 1, 520, 9531, 198, 504, 3458, 314, 253]


def _logits(model, ids=IDS):
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()


# ---- units

def test_original_16bit_name():
    assert original_16bit_name("unsloth/llama-3-8b-bnb-4bit") == "unsloth/llama-3-8b"
    assert original_16bit_name("unsloth/Llama-3.2-1B-Instruct-unsloth-bnb-4bit") == \
        "unsloth/Llama-3.2-1B-Instruct"
    assert original_16bit_name("HuggingFaceTB/SmolLM2-135M-Instruct") is None


def test_read_header_checks_length_and_size(tmp_path):
    from safetensors.numpy import save_file

    good = tmp_path / "good.safetensors"
    save_file({"w": np.ones((4, 4), np.float32)}, str(good))
    assert read_header(good)["w"]["shape"] == [4, 4]
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-8])
    with pytest.raises(MergeError, match=r"cut.safetensors is truncated .* re-download"):
        read_header(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(MergeError, match="not a safetensors file"):
        read_header(junk)


def _four_bit_dir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "four_bit"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({
        "_name_or_path": name, "quantization_config": {"load_in_4bit": True,
                                                       "quant_method": "bitsandbytes"}}))
    return path


def test_four_bit_base_resolves_to_its_16bit_original(tmp_path, monkeypatch, embedded_path):
    hub = {"unsloth/SmolLM2-135M-Instruct": embedded_path}

    def fetch(name):  # local directories as usual; "the Hub" holds only the 16-bit original
        return Path(name) if Path(name).is_dir() else hub.get(name)

    monkeypatch.setattr(checkpoint, "fetch_base", fetch)
    by_name, said = "unsloth/SmolLM2-135M-Instruct-bnb-4bit", []
    assert checkpoint.resolve_base(by_name, said.append) == (embedded_path, by_name, True)
    assert said == [f"{by_name} is 4-bit; using its 16-bit original {embedded_path}."]
    local = _four_bit_dir(tmp_path, "unsloth/SmolLM2-135M-Instruct-bnb-4bit")
    assert checkpoint.resolve_base(str(local), **QUIET) == (embedded_path, str(local), True)
    plain = str(embedded_path)
    assert checkpoint.resolve_base(plain, **QUIET) == (embedded_path, plain, False)


def test_four_bit_base_without_its_original_says_what_to_download(monkeypatch):
    monkeypatch.setattr(checkpoint, "fetch_base", lambda name: None)
    with pytest.raises(MergeError) as e:
        checkpoint.resolve_base("unsloth/mistral-7b-v0.3-bnb-4bit")
    assert "huggingface-cli download unsloth/mistral-7b-v0.3" in str(e.value)
    assert "base_dir" in str(e.value)


def _write_adapter(path: Path, config: dict, tensors: dict | None) -> Path:
    from safetensors.numpy import save_file

    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps(config))
    if tensors is not None:
        save_file(tensors, str(path / "adapter_model.safetensors"))
    return path


def test_one_reader_names_what_an_adapter_folder_lacks(tmp_path):
    from lorahelpers.models import ModelError

    lora = {"x.lora_A.weight": np.ones((1, 2), np.float32)}
    with pytest.raises(MergeError, match=r"has no adapter_config.json\. Fix: pass the "
                                         r"directory that train\(\) or save_adapter\(\) wrote"):
        checkpoint.read_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{'r': 1}")
    with pytest.raises(MergeError, match=r"adapter_config.json is not valid JSON .*Fix: save"):
        checkpoint.read_adapter(tmp_path)
    unnamed = _write_adapter(tmp_path / "unnamed", {"r": 1}, lora)
    with pytest.raises(ModelError, match=r"adapter_config.json names no base model\. Fix: .*"
                                         r"base= to load_adapter"):
        checkpoint.read_adapter(unnamed, error=ModelError)
    assert checkpoint.read_adapter(unnamed, "some/base").base == "some/base"
    assert checkpoint.read_adapter(unnamed, "b").tensor_names() == ["x.lora_A.weight"]
    empty = _write_adapter(tmp_path / "empty", {"base_model_name_or_path": "b"}, None)
    with pytest.raises(MergeError, match="has no adapter_model.safetensors. Fix: save the"):
        checkpoint.read_adapter(empty)
    # merge_lora reads through it: the same message, before any base is looked for
    with pytest.raises(MergeError, match="has no adapter_model.safetensors. Fix: save the"):
        merge_lora(empty, tmp_path / "merged", **QUIET)


def test_free_disk_is_checked_with_one_message(tmp_path):
    with pytest.raises(ExportError, match=r"^Not enough disk space in .*: 100 MB free, but "
                                          r"merging into x needs about 1\.5 GB there\. Fix: "
                                          r"free disk space"):
        checkpoint.check_free_disk(tmp_path / "not" / "yet", 1.5e9, "merging into x", free=10**8)
    checkpoint.check_free_disk(tmp_path, 10**6, "merging into x")  # enough: nothing raised


# ---- the merge against PEFT on the embedded model

@pytest.mark.slow
def test_merged_checkpoint_matches_the_peft_model(merge_result, export_source):
    merged = _load(merge_result.out_dir)
    ours, peft = _logits(merged), _logits(export_source.model)
    assert np.abs(ours - peft).max() < 2e-3
    with export_source.model.disable_adapter():
        base = _logits(export_source.model)
    assert np.abs(peft - base).max() > 0.5  # the adapter matters, so the match means something
    assert merge_result.merged == 30 * 7 and merge_result.tensors == 272
    assert not merge_result.untied and not merge_result.from_4bit
    config = json.loads((merge_result.out_dir / "config.json").read_text())
    assert config["tie_word_embeddings"] is True
    from transformers import AutoTokenizer

    template = AutoTokenizer.from_pretrained(merge_result.out_dir).chat_template
    assert template == export_source.chat_format.jinja_template


@pytest.mark.slow
def test_merging_again_replaces_the_output(merge_result, export_source, tmp_path):
    out = tmp_path / "merged"
    merge_lora(export_source.adapter_dir, out, base_dir=export_source.base_dir, **QUIET)
    (out / "stale.txt").write_text("from an earlier run")
    merge_lora(export_source.adapter_dir, out, base_dir=export_source.base_dir, **QUIET)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_text("meow")
    with pytest.raises(MergeError, match="not a model checkpoint"):
        merge_lora(export_source.adapter_dir, other, base_dir=export_source.base_dir, **QUIET)
    assert (other / "cat.jpg").exists()


VARIANTS = {
    "dora": {"use_dora": True},
    "rslora_patterns": {"use_rslora": True, "rank_pattern": {"v_proj": 4},
                        "alpha_pattern": {"layers.0.self_attn.q_proj": 64}},
    "modules_to_save_lm_head": {"target_modules": ["q_proj"], "modules_to_save": ["lm_head"]},
    "lora_on_embeddings": {"target_modules": ["q_proj", "embed_tokens"]},
    "lora_on_lm_head": {"target_modules": ["v_proj", "lm_head"]},
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_merge_matches_peft_for_each_adapter_shape(variant, tmp_path, embedded_path):
    from tests.fixtures_export import make_stand_in

    source = make_stand_in(embedded_path, tmp_path / "adapter", **VARIANTS[variant])
    result = merge_lora(source.adapter_dir, tmp_path / "merged", **QUIET)
    assert result.base_dir == embedded_path  # from the adapter's base_model_name_or_path
    peft = _logits(source.model)
    ours = _logits(_load(result.out_dir))
    with source.model.disable_adapter():
        base = _logits(source.model)
    assert np.abs(peft - base).max() > 0.1
    assert np.abs(ours - peft).max() < 2e-3, variant
    tied_pair_changed = variant in ("modules_to_save_lm_head", "lora_on_embeddings",
                                    "lora_on_lm_head")
    assert result.untied == tied_pair_changed
    config = json.loads((result.out_dir / "config.json").read_text())
    assert config["tie_word_embeddings"] is (not tied_pair_changed)


def test_nan_in_the_adapter_is_named_and_nothing_is_written(tmp_path, embedded_path):
    from safetensors.numpy import save_file

    prefix = "base_model.model.model.layers.3.mlp.down_proj"
    lora_b = np.zeros((576, 2), np.float32)
    lora_b[7, 1] = np.nan
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 2, "target_modules": ["down_proj"]}))
    save_file({f"{prefix}.lora_A.weight": np.ones((2, 1536), np.float32),
               f"{prefix}.lora_B.weight": lora_b}, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(MergeError, match=r"model.layers.3.mlp.down_proj.weight .*NaN/Inf, from "
                                         r"the adapter"):
        merge_lora(adapter, tmp_path / "out" / "merged", base_dir=embedded_path, **QUIET)
    assert list((tmp_path / "out").iterdir()) == []


def test_adapter_for_another_model_is_refused(tmp_path, embedded_path):
    from safetensors.numpy import save_file

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 2}))
    prefix = "base_model.model.transformer.h.0.attn.c_attn"
    save_file({f"{prefix}.lora_A.weight": np.ones((2, 8), np.float32),
               f"{prefix}.lora_B.weight": np.ones((8, 2), np.float32)},
              str(adapter / "adapter_model.safetensors"))
    with pytest.raises(MergeError, match="transformer.h.0.attn.c_attn.weight, which .* does "
                                         "not have"):
        merge_lora(adapter, tmp_path / "merged", base_dir=embedded_path, **QUIET)


def test_truncated_base_shard_is_named(tmp_path, embedded_path):
    from safetensors.numpy import save_file

    base = tmp_path / "base"
    base.mkdir()
    for p in embedded_path.iterdir():
        if p.name != "model.safetensors":
            (base / p.name).write_bytes(p.read_bytes())
    with open(embedded_path / "model.safetensors", "rb") as f:
        (base / "model.safetensors").write_bytes(f.read(1_000_000))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 1, "lora_alpha": 1}))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{prefix}.lora_A.weight": np.ones((1, 576), np.float32),
               f"{prefix}.lora_B.weight": np.ones((576, 1), np.float32)},
              str(adapter / "adapter_model.safetensors"))
    with pytest.raises(MergeError, match=r"base/model.safetensors is truncated"):
        merge_lora(adapter, tmp_path / "merged", base_dir=base, **QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "base"]


# ---- one tokenizer writer: the merged checkpoint and the base with the training template

def test_merge_and_base_with_template_write_the_same_tokenizer_files(tmp_path):
    """On Gemma 3 270M, whose vocabulary llama.cpp's converter reads only from tokenizer.model
    (and its user-defined pieces from added_tokens.json), which a fast tokenizer does not save:
    the merged checkpoint and the base with the template carry the same tokenizer files."""
    from transformers import AutoTokenizer

    from lorahelpers.chat import get_chat_format, install_chat_template
    from lorahelpers.models import embedded_gemma

    gemma, fmt = embedded_gemma(), get_chat_format("gemma")
    generation_config = (gemma / "generation_config.json").read_bytes()
    out, into = read_header(gemma / "model.safetensors")[
        "model.layers.0.mlp.down_proj.weight"]["shape"]
    prefix = "base_model.model.model.layers.0.mlp.down_proj"
    adapter = _write_adapter(tmp_path / "adapter", {
        "peft_type": "LORA", "r": 1, "lora_alpha": 1, "base_model_name_or_path": str(gemma)}, {
        f"{prefix}.lora_A.weight": np.zeros((1, into), np.float32),
        f"{prefix}.lora_B.weight": np.zeros((out, 1), np.float32)})
    tokenizer = AutoTokenizer.from_pretrained(gemma)  # saved as save_adapter saves it
    install_chat_template(tokenizer, fmt)
    tokenizer.save_pretrained(adapter)
    merged = merge_lora(adapter, tmp_path / "merged", chat_format=fmt, **QUIET).out_dir
    base = base_with_template(gemma, fmt, tmp_path / "base", **QUIET)

    names = sorted(p.name for p in merged.iterdir())
    assert names == sorted(p.name for p in base.iterdir())
    assert {"tokenizer.model", "added_tokens.json", "tokenizer.json"} <= set(names)
    for name in set(names) - {"model.safetensors", "config.json"}:
        assert (merged / name).read_bytes() == (base / name).read_bytes(), name
    for folder in (merged, base):
        assert AutoTokenizer.from_pretrained(folder).chat_template == fmt.jinja_template
    assert (base / "model.safetensors").is_symlink()
    # the turn end went into the copy of generation_config.json, not through a link to Gemma's
    assert (gemma / "generation_config.json").read_bytes() == generation_config
