"""Ollama 0.34.1 exactly: the first release that refuses LoRA adapters, typical_p and GGUF
quantization at create time. The double (as each release it imitates), the Modelfile checker
and lorahelpers' own rules all draw the line there, not one release later or earlier."""

from __future__ import annotations

import pytest

from lorahelpers.modelfile import ollama_rules
from tests.modelfile_check import ModelfileError, check
from tests.ollama_double import VERSIONS, Release

REFUSES = {"0.12.6": False, "0.32.15": False, "0.34.0": False, "0.34.1": True,
           "0.34.2": True}


def test_the_double_imitates_the_first_release_that_refuses():
    assert set(VERSIONS) <= set(REFUSES) and "0.34.1" in VERSIONS


@pytest.mark.parametrize("version", sorted(REFUSES))
def test_each_release_refuses_from_0_34_1(version):
    refuses = REFUSES[version]
    release = Release(version)
    assert (release.refuses_adapters, release.refuses_typical_p,
            release.refuses_gguf_quantize) == (refuses,) * 3
    rules = ollama_rules(version)
    assert (rules.adapters, rules.typical_p, rules.quantize_gguf) == (not refuses,) * 3
    if refuses:
        with pytest.raises(ModelfileError, match="^typical_p is no longer supported$"):
            check("FROM x\nPARAMETER typical_p 0.5\n", version)
    else:
        assert check("FROM x\nPARAMETER typical_p 0.5\n", version).parameters == {
            "typical_p": 0.5}
