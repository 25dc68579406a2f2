"""Verification: the metrics themselves, the report, and every exported artifact against the
PEFT model it came from."""

from __future__ import annotations

import numpy as np
import pytest

from lorahelpers.export import ExportError
from lorahelpers.verify import (
    THRESHOLDS,
    VerificationError,
    VerifyReport,
    _Stats,
    verify,
    verify_or_raise,
)

# ---- metrics and report (no model)


def _report(**changes) -> VerifyReport:
    fields = dict(artifact="/x/model-q8_0.gguf", kind="q8_0", limits=THRESHOLDS["q8_0"],
                  prompts=4, positions=100, tokens_match=True, template_match=True, top1=0.95,
                  mean_kl=0.01, max_kl=0.05, nmse=0.001, greedy_match=0.5, notes=[])
    return VerifyReport(**(fields | changes))


def test_kl_top1_and_nmse_on_known_numbers():
    ref = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]))
    cand = np.log(np.array([[0.25, 0.5, 0.25], [0.1, 0.2, 0.7]]))
    stats = _Stats()
    stats.add([5, 6], ref, cand)
    expected_kl = 0.5 * np.log(2) + 0.25 * np.log(0.5)
    assert stats.n == 2
    assert stats.kl / stats.n == pytest.approx(expected_kl / 2)
    assert stats.max_kl == pytest.approx(expected_kl)
    assert stats.top1 == 1  # the first position picks another token
    err = ((cand - ref) ** 2).mean()
    assert stats.nmse() == pytest.approx(err / ref.var())


def test_shared_prefixes_count_once_and_near_ties_agree():
    stats = _Stats()
    ref = np.array([[1.0, 1.005, 0.0], [3.0, 0.0, 0.0]])
    cand = np.array([[1.0, 0.9, 0.0], [0.0, 3.0, 0.0]])
    stats.add([7, 8], ref, cand)
    assert stats.top1 == 1  # a 0.005-logit tie counts as agreement; the clear miss does not
    stats.add([7, 8, 9], np.vstack([ref, ref[:1]]), np.vstack([cand, cand[:1]]))
    assert stats.n == 3  # only the new context [7, 8, 9] is counted


def test_report_lists_each_failure_and_renders():
    ok = _report()
    assert ok.passed and ok.status() == "verified"
    bad = _report(tokens_match=False, mean_kl=0.5, top1=0.5, template_match=False)
    assert not bad.passed
    assert len(bad.failures) == 4 and "mean KL 0.5 > 0.03" in bad.failures
    table = bad.table()
    assert "UNVERIFIED" in table and "model-q8_0.gguf [q8_0]" in table and "50.0%" in table
    html = bad._repr_html_()
    assert "<table>" in html and "color:red" in html and "top-1 agreement" in html
    with pytest.raises(VerificationError, match="UNVERIFIED: tokenization differs"):
        bad.raise_if_failed()


def test_every_quant_type_has_limits_with_a_source():
    for quant in ("merged", "f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m"):
        limits = THRESHOLDS[quant]
        assert limits.source and 0 < limits.max_kl < 1 and 0.5 < limits.min_top1 <= 1
    assert THRESHOLDS["f16"].max_kl <= 1e-3 and THRESHOLDS["f16"].min_top1 >= 0.99
    order = ["f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m"]
    assert [THRESHOLDS[q].max_kl for q in order] == sorted(THRESHOLDS[q].max_kl for q in order)


def test_not_a_gguf_fails_before_running_the_reference(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("hello")
    with pytest.raises(ExportError, match="not a GGUF file"):
        verify(fake, reference_model=None, tokenizer=None, prompts=["hi"])


# ---- every artifact against the PEFT model

QUANT_FIXTURES = {"f16": "f16_gguf", "bf16": "bf16_gguf", "q8_0": "q8_gguf",
                  "q5_k_m": "q5_gguf", "q4_k_m": "q4_gguf"}


@pytest.mark.slow
def test_f16_gguf_matches_the_peft_model(f16_gguf, export_source, verify_prompts):
    report = verify(f16_gguf, export_source.model, export_source.tokenizer, verify_prompts)
    print(report.table())
    assert report.kind == "f16" and report.tokens_match and report.template_match
    assert report.mean_kl < 1e-3 and report.top1 >= 0.99
    assert report.passed, report.table()


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["bf16", "q8_0", "q5_k_m", "q4_k_m"])
def test_quantized_gguf_passes_its_limits(quant, request, export_source, verify_prompts):
    path = request.getfixturevalue(QUANT_FIXTURES[quant])
    report = verify_or_raise(path, export_source.model, export_source.tokenizer, verify_prompts)
    print(report.table())
    assert report.kind == quant and report.tokens_match and report.positions > 80


@pytest.mark.slow
def test_adapter_gguf_over_the_base_gguf_matches_the_peft_model(
        base_f16_gguf, adapter_gguf, export_source, verify_prompts):
    model, tokenizer = export_source.model, export_source.tokenizer
    report = verify(base_f16_gguf, model, tokenizer, verify_prompts, lora_path=adapter_gguf)
    print(report.table())
    assert report.kind == "f16+adapter" and report.template_match is None
    assert report.mean_kl < 1e-3 and report.top1 >= 0.99 and report.passed
    # Without the adapter the same base fails by far: the check can tell them apart.
    alone = verify(base_f16_gguf, model, tokenizer, verify_prompts[:2])
    assert not alone.passed and alone.mean_kl > 30 * THRESHOLDS["f16"].max_kl
    with pytest.raises(VerificationError, match="UNVERIFIED"):
        verify_or_raise(base_f16_gguf, model, tokenizer, verify_prompts[:2])


@pytest.mark.slow
def test_merged_checkpoint_verifies_against_the_peft_model(merged_dir, export_source,
                                                           verify_prompts):
    report = verify(merged_dir, export_source.model, export_source.tokenizer, verify_prompts[:2])
    assert report.kind == "merged" and report.passed, report.table()
    assert report.mean_kl < 1e-6


@pytest.mark.slow
def test_tokenizer_that_disagrees_with_the_gguf_is_caught(q8_gguf, export_source):
    # The classic export bug: one side adds a BOS token the other does not.
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(export_source.adapter_dir)
    other._tokenizer.post_processor = TemplateProcessing(
        single="<|im_start|> $A", special_tokens=[("<|im_start|>", 1)])
    report = verify(q8_gguf, export_source.model, other, ["Hi there"], max_new_tokens=2)
    assert not report.tokens_match and not report.passed
    assert "tokenization differs from the Hugging Face tokenizer" in report.failures
    # HF now gives [BOS, <|im_start|>, ...], the GGUF [<|im_start|>, ...]: they part at 1.
    assert any(n.startswith("tokens differ at 1 ") for n in report.notes), report.notes
