"""The GGUF types, in one table: how each is made, its bits per weight, and the limits a
verified export of that type must meet. Imports nothing heavy (params and export read it).

>>> GGUF_TYPES["q4_k_m"].made_by, GGUF_TYPES["q4_k_m"].ftype
('llama-quantize', 15)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    max_kl: float       # mean KL(reference || candidate) over all positions, nats
    min_top1: float     # fraction of positions where both pick the same next token
    max_nmse: float     # mean squared logit error / variance of the reference logits
    min_greedy: float   # fraction of prompts whose greedy continuation is identical
    source: str
    # Of the positions where the adapter changes the reference's top token, the fraction where
    # the candidate picks the adapted token: a quantized export must keep what was learnt,
    # which KL alone cannot tell on small models (their quantization noise is as large).
    min_adapter_kept: float = 0.5
    # How much of the adapter's effect the candidate carries: the slope of the candidate's
    # log-probability change over the base against the reference's (1: all of it, 0: the base
    # alone). Quantization noise leans neither way, so one range serves every type. Measured on
    # SmolLM2-135M (the test adapter, 157 positions): correct exports f16 1.00, bf16 0.98, q8_0
    # 1.00, q5_k_m 1.07, q4_k_m 0.95, f16 + adapter GGUF 1.00; a merge at half the alpha 0.71
    # (f16), 0.68 (bf16), 0.70 (q8_0), 0.64 (q4_k_m), 0.39 (q5_k_m), which KL and the kept top
    # tokens could not tell from a correct q4_k_m/q5_k_m export; the base alone -0.02 to 0.00.
    adapter_scale: tuple[float, float] = (0.8, 1.25)


@dataclass(frozen=True)
class GGUFType:
    name: str
    made_by: str        # "converter" (convert_hf_to_gguf.py --outtype name) or "llama-quantize"
    ftype: int          # llama.cpp's LLAMA_FTYPE id: what llama-quantize is given, and what a
    #                     GGUF's general.file_type says it holds
    bits: float         # bits per weight, for the disk-space estimate (k-quants keep some
    #                     tensors at higher precision)
    limits: Thresholds  # what verify accepts from an export of this type


# Where the limits come from. llama.cpp's published KL / same-top-token figures against FP16
# are for 7-8B models on Wikitext: Llama-3-8B q8_0 0.0014 / 97.7 %, Q4_K_M 0.031 / 91.9 %;
# Llama-2-7B q8_0 0.0004 / 98.8 %, Q4_K_M 0.0127 / 94.7 %; BF16 0.000025 / 99.7 %. Its
# model-conversion checks pass NMSE < 1e-2 and call < 1e-4 excellent. Small models lose more,
# and SmolLM2-135M's hidden size (576, not a multiple of 256) makes llama.cpp fall back to
# q5_0/q5_1/q8_0 for most tensors of a "k-quant". Measured here against the fine-tuned PEFT
# model (6 chat prompts, about 160 positions; ranges over runs and adapters): f16 KL 5e-6 to
# 1.1e-5, top-1 100 %; bf16 2.5e-4 to 2.0e-3, 94-100 % (94.3 % on the float32-trained
# test adapter: 9 of 157 near-tied top tokens flip); q8_0 5e-3 to 6e-3, 96-99 %;
# q5_k_m 0.06 to 0.22, 80-90 %; q4_k_m 0.07 to 0.12, 85-92 %; f16 + adapter GGUF 5e-6 to 8e-6,
# 100 %; the merged float32 checkpoint 1e-11. The limits leave 2-5x headroom over those. A
# wrong template, tokenizer, adapter scale or tensor layout misses the 16-bit and q8_0 limits
# by far (the base model without its adapter: KL 0.3). On a model this small the 4-5 bit
# types lose almost as much as that, so its demo exports q8_0; they are meant for models of
# 1B parameters and more, where llama.cpp's figures above apply.
# Hence the last limit, min_adapter_kept: where the LoRA changes the PEFT model's top token
# (30 of 157 positions for the stand-in adapter), the export must pick the adapted one. Measured
# on SmolLM2-135M: correct exports keep f16 100 %, bf16 100 %, q8_0 97 %, q5_k_m 80 %,
# q4_k_m 73 %; the base GGUF without its adapter keeps 0-3 % at every type (f16 KL 0.32,
# which the 4-5 bit KL limit of 0.3 could not tell from a correct q4_k_m/q5_k_m export).
GGUF_TYPES = {t.name: t for t in (
    GGUFType("f32", "converter", 0, 32, Thresholds(
        1e-4, 0.99, 1e-4, 1.0, "float32 GGUF, only kernel rounding differs", 0.95)),
    GGUFType("f16", "converter", 1, 16, Thresholds(
        1e-3, 0.99, 1e-3, 0.75, "the export issue: KL < 1e-3, top-1 >= 99 %; measured KL 5e-6 "
        "to 9e-6, NMSE 2e-6 to 3e-6", 0.9)),
    GGUFType("bf16", "converter", 32, 16, Thresholds(
        5e-3, 0.90, 5e-3, 0.5, "llama.cpp BF16 KL 2.5e-5 (8B); measured on SmolLM2-135M: KL "
        "2.5e-4 to 2e-3, NMSE up to 7e-4, top-1 94-100 %", 0.9)),
    GGUFType("q8_0", "converter", 7, 8.5, Thresholds(
        0.03, 0.88, 2e-2, 0.0, "llama.cpp q8_0 KL 0.0004-0.0014, same-top 97.7-98.8 % (7-8B); "
        "measured on SmolLM2-135M: KL 5e-3 to 6e-3", 0.8)),
    GGUFType("q4_k_m", "llama-quantize", 15, 4.9, Thresholds(
        0.3, 0.78, 0.2, 0.0, "llama.cpp Q4_K_M KL 0.013-0.031, same-top 92-95 % (7-8B); "
        "measured on SmolLM2-135M: KL 0.07 to 0.12", 0.5)),
    GGUFType("q5_k_m", "llama-quantize", 17, 5.7, Thresholds(
        0.3, 0.75, 0.2, 0.0, "between llama.cpp's q8_0 and Q4_K_M figures; measured on "
        "SmolLM2-135M: KL 0.06 to 0.22, top-1 80-90 %", 0.5)),
    GGUFType("q6_k", "llama-quantize", 18, 6.6, Thresholds(
        0.06, 0.85, 5e-2, 0.0, "between q8_0 and q5_k_m (on small models mostly q8_0 "
        "fallbacks)", 0.6)),
)}

# Limits for what verify compares besides a GGUF type.
OTHER_LIMITS = {
    "merged": Thresholds(1e-4, 0.99, 1e-4, 1.0, "float32 merge, only rounding differs: "
                         "measured KL 1e-11", 0.95),
    # Not an export: how far a model trained over 4-bit (NF4) base weights is from its adapter
    # merged into the 16-bit originals, which is what every GGUF is made from and verified
    # against. Only the base's 4-bit rounding separates them; a gap past these loose limits
    # means the merge used other base weights than training did.
    "4bit-gap": Thresholds(0.5, 0.7, 0.5, 0.0, "for information: 4-bit rounding of the base "
                           "weights only"),
}

# Views of the table for the stages that each need one column.
QUANTS = tuple(GGUF_TYPES)
CONVERTER_TYPES = tuple(n for n, t in GGUF_TYPES.items() if t.made_by == "converter")
KQUANT_TYPES = tuple(n for n, t in GGUF_TYPES.items() if t.made_by == "llama-quantize")
BITS = {n: t.bits for n, t in GGUF_TYPES.items()}
FTYPES = {n: t.ftype for n, t in GGUF_TYPES.items()}
THRESHOLDS = OTHER_LIMITS | {n: t.limits for n, t in GGUF_TYPES.items()}
