"""An adapter trained with lora_bias cannot become an adapter-only GGUF (llama.cpp's LoRA has no
bias term): it is refused with the reason, before anything is converted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lorahelpers.export import (
    AdapterNotConvertibleError,
    adapter_gguf_problems,
    export_adapter_gguf,
)

PREFIX = "base_model.model.model.layers.0.self_attn.q_proj"
PLAIN = [f"{PREFIX}.lora_A.weight", f"{PREFIX}.lora_B.weight"]


def test_lora_bias_is_a_problem_named_by_its_reason():
    config = {"peft_type": "LORA", "target_modules": ["q_proj"], "lora_bias": True}
    problems = adapter_gguf_problems(config, [*PLAIN, f"{PREFIX}.lora_B.bias"])
    assert problems == ["lora_bias: llama.cpp's LoRA has no bias term."]
    assert adapter_gguf_problems(config | {"lora_bias": False}, PLAIN) == []


def test_an_adapter_with_lora_bias_is_refused_before_converting(tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    def no_conversion(*args, **kwargs):
        raise AssertionError("the converter must not run")

    monkeypatch.setattr("lorahelpers.export.run_script", no_conversion)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"],
         "lora_bias": True}))
    save_file({PLAIN[0]: np.zeros((2, 576), np.float32),
               PLAIN[1]: np.zeros((576, 2), np.float32),
               f"{PREFIX}.lora_B.bias": np.zeros(576, np.float32)},
              str(adapter / "adapter_model.safetensors"))
    out = tmp_path / "out" / "adapter.gguf"
    with pytest.raises(AdapterNotConvertibleError, match=r"(?s)- lora_bias: llama.cpp's LoRA "
                                                         r"has no bias term.*Fix: merge it"):
        export_adapter_gguf(adapter, tmp_path / "base", out, progress=lambda s: None)
    assert not out.parent.exists()
