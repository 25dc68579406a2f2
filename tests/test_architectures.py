"""The architecture matrix: tiny random-weight checkpoints of each family the users pick go
through LoRA (alpha != r), the streamed merge, GGUF f16 and verify, and the adapter GGUF over
the base GGUF; an architecture the converter cannot take is refused before training.

The figures printed here are the README's support table (pytest -s to see them)."""

from __future__ import annotations

import json
import shutil

import pytest

from lorahelpers.chat import get_chat_format, install_chat_template

# (transformers config class, tokenizer: embedded "smol" or "gemma", chat format, extra config)
ARCHES = {
    "llama": ("LlamaConfig", "smol", "llama3", {}),
    "mistral": ("MistralConfig", "smol", "mistral", {"sliding_window": None}),
    "qwen2": ("Qwen2Config", "smol", "qwen", {}),
    "qwen3": ("Qwen3Config", "smol", "qwen3", {}),
    "phi3": ("Phi3Config", "smol", "phi3", {"pad_token_id": 0}),
    # llama.cpp scales queries by 1/sqrt(head_dim), as the released Gemma sizes do
    "gemma2": ("Gemma2Config", "gemma", "gemma", {"query_pre_attn_scalar": 16}),
    "gemma3": ("Gemma3TextConfig", "gemma", "gemma", {"query_pre_attn_scalar": 16}),
}
# transformers 5 loads a qwen2 checkpoint's tokenizer as Qwen2Tokenizer with its own
# pre-tokenizer, so the borrowed vocabulary gets a pre-tokenizer hash the converter refuses.
# Any other refusal fails the test.
OWN_TOKENIZER_ONLY = {"qwen2"}
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
            initializer_range=0.1)
PROMPTS = ["What is 2+2?", [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Name a colour."}]]
R, ALPHA = 4, 12  # scale 3: a merge or adapter that used alpha/r = 1 would be caught


def tokenizer_for(kind, embedded_path, gemma_path, fmt_name):
    from transformers import AutoTokenizer

    src = embedded_path if kind == "smol" else gemma_path
    tok = AutoTokenizer.from_pretrained(src)
    fmt = get_chat_format(fmt_name, eos=tok.eos_token)
    missing = [t for t in {fmt.eos, *fmt.stop} if t.startswith("<") and t not in tok.get_vocab()]
    if missing:  # the family's own turn tokens, as a real base of that family has them
        tok.add_special_tokens({"additional_special_tokens": sorted(missing)})
    install_chat_template(tok, fmt)
    return src, tok, fmt


def tiny_checkpoint(arch, out, tok, src):
    import torch
    import transformers

    config_class, kind, _, extra = ARCHES[arch]
    config = getattr(transformers, config_class)(
        **TINY, **extra, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
        eos_token_id=tok.convert_tokens_to_ids(tok.eos_token))
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    for extra_file in ("tokenizer.model", "added_tokens.json"):  # the converter's Gemma input
        if (src / extra_file).is_file():
            shutil.copy(src / extra_file, out / extra_file)
    if arch == "phi3":
        gpt2_class(out)
    return model


def gpt2_class(directory):
    # Phi-3's converter reads a GPT-2 style BPE (Phi-4's) only when tokenizer_config says so.
    cfg = json.loads((directory / "tokenizer_config.json").read_text())
    (directory / "tokenizer_config.json").write_text(json.dumps(cfg | {
        "tokenizer_class": "GPT2Tokenizer"}))


@pytest.fixture(scope="module")
def gemma_path():
    from lorahelpers.models import embedded_gemma

    return embedded_gemma()


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_architecture_trains_merges_exports_and_verifies(arch, tmp_path, embedded_path,
                                                         gemma_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from lorahelpers.export import TokenizerNotRecognizedError, export_adapter_gguf, export_gguf
    from lorahelpers.merge import merge_lora
    from lorahelpers.models import load_model
    from lorahelpers.verify import verify

    _, kind, fmt_name, _ = ARCHES[arch]
    src, tok, fmt = tokenizer_for(kind, embedded_path, gemma_path, fmt_name)
    base = tmp_path / "base"
    tiny_checkpoint(arch, base, tok, src)
    model, tok = load_model(base, max_seq_length=64)  # the check before training passes
    torch.manual_seed(1)
    peft_model = get_peft_model(model, LoraConfig(
        r=R, lora_alpha=ALPHA, target_modules="all-linear", init_lora_weights=False))
    peft_model.eval()
    peft_model.save_pretrained(tmp_path / "adapter")
    tok.save_pretrained(tmp_path / "adapter")
    if arch == "phi3":
        gpt2_class(tmp_path / "adapter")

    quiet = {"progress": lambda s: None}
    merged = merge_lora(tmp_path / "adapter", tmp_path / "merged", base_dir=base,
                        chat_format=fmt, **quiet).out_dir
    try:
        f16 = export_gguf(merged, tmp_path / "gguf", arch, ("f16",), **quiet)["f16"]
    except TokenizerNotRecognizedError:
        if arch not in OWN_TOKENIZER_ONLY:
            raise
        pytest.skip(f"transformers loads a {arch} checkpoint's tokenizer with its own "
                    "pre-tokenizer, whose hash with a borrowed vocabulary llama.cpp's converter "
                    "does not know; it needs the family's own tokenizer, not shipped here")
    report = verify(f16, peft_model, tok, PROMPTS, max_new_tokens=4)
    print(f"\n{arch} merged f16: KL {report.mean_kl:.2e}, top-1 {report.top1:.1%}, "
          f"NMSE {report.nmse:.2e}, tokens {'same' if report.tokens_match else 'DIFFER'}")
    assert report.tokens_match and report.template_match, report.table()
    assert report.mean_kl <= 1e-3 and report.top1 >= 0.99, report.table()

    # The adapter alone over the base GGUF: llama.cpp applies alpha / r itself.
    base_gguf = export_gguf(base, tmp_path / "base_gguf", "base", ("f16",), **quiet)["f16"]
    adapter = export_adapter_gguf(tmp_path / "adapter", base, tmp_path / "a.gguf", **quiet)
    with_adapter = verify(base_gguf, peft_model, tok, PROMPTS, lora_path=adapter,
                          max_new_tokens=4)
    print(f"{arch} f16 + adapter GGUF: KL {with_adapter.mean_kl:.2e}, "
          f"top-1 {with_adapter.top1:.1%}")
    assert with_adapter.mean_kl <= 1e-3 and with_adapter.top1 >= 0.99, with_adapter.table()
    assert with_adapter.adapter_kept >= 0.95  # (tests/test_verify_wrong_exports.py: without it)


def test_an_architecture_the_converter_cannot_take_is_refused_before_training(tmp_path,
                                                                              embedded_path):
    import transformers

    from lorahelpers.llamacpp import UnsupportedArchitectureError, converter_is_cached
    from lorahelpers.models import load_model

    if not converter_is_cached():
        pytest.skip("llama.cpp's converter is not cached (run make setup)")
    config = transformers.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=1,
                                    num_attention_heads=2, vocab_size=64)
    config.architectures = ["OPTForCausalLM"]
    config.save_pretrained(tmp_path)  # no weights: the refusal must come before loading them
    with pytest.raises(UnsupportedArchitectureError) as e:
        load_model(tmp_path)
    message = str(e.value)
    assert "'OPTForCausalLM'" in message and str(tmp_path) in message and "Fix:" in message
