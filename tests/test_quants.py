"""The one table of GGUF types: every type in it is accepted by the parameters, the export
(converter or quantizer) and verification, and its llama.cpp file-type id is llama.cpp's."""

from __future__ import annotations

import pytest

from lorahelpers import export, llamacpp, verify
from lorahelpers.params import Params
from lorahelpers.quants import GGUF_TYPES, OTHER_LIMITS, QUANTS, THRESHOLDS


@pytest.mark.parametrize("name", QUANTS)
def test_every_type_is_accepted_by_each_stage(name, tmp_path):
    kind = GGUF_TYPES[name]
    assert Params(quants=name.upper()).quants == (name,)
    assert export._check_quants([name]) == [name]
    assert export.export_needs(10**9, (name,)).gguf_bytes[name] == int(10**9 * kind.bits / 8)
    assert verify.THRESHOLDS[name] is kind.limits and verify.FILE_TYPES[kind.ftype] == name
    assert kind.made_by in ("converter", "llama-quantize")
    assert (name in export.CONVERTER_TYPES) == (kind.made_by == "converter")
    assert (name in export.KQUANT_TYPES) == (kind.made_by == "llama-quantize")
    if kind.made_by == "converter":  # a valid outtype: the error is about the missing adapter
        with pytest.raises(llamacpp.ExportError, match="adapter_config.json"):
            export.export_adapter_gguf(tmp_path, tmp_path, tmp_path / "a.gguf", outtype=name)


@pytest.mark.parametrize("name", QUANTS)
def test_file_type_ids_are_llama_cpps(name):
    gguf = pytest.importorskip("gguf")
    expected = {"f32": "ALL_F32"}.get(name, f"MOSTLY_{name.upper()}")
    assert GGUF_TYPES[name].ftype == int(gguf.LlamaFileType[expected])


def test_an_unknown_type_is_refused_everywhere(tmp_path):
    with pytest.raises(ValueError, match="unknown GGUF type"):
        Params(quants="q3_x")
    with pytest.raises(ValueError, match="choose from f32, f16, bf16, q8_0"):
        export._check_quants(["q3_x"])
    with pytest.raises(ValueError, match="outtype 'q4_k_m' is unknown. Fix: use f32, f16, bf16, q8_0"):
        export.export_adapter_gguf(tmp_path, tmp_path, tmp_path / "a.gguf", outtype="q4_k_m")


def test_verify_limits_cover_the_table_and_nothing_else():
    assert set(THRESHOLDS) == set(GGUF_TYPES) | set(OTHER_LIMITS)
    assert len({t.ftype for t in GGUF_TYPES.values()}) == len(GGUF_TYPES)
    bits = [GGUF_TYPES[q].bits for q in ("f32", "f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m")]
    assert bits == sorted(bits, reverse=True)
