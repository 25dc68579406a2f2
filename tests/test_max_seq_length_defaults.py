"""The default training length per device, from the one place that decides it: 2048 tokens on a
GPU (Unsloth's notebooks), 256 on a CPU (the embedded model's short chats), and a value given by
the user kept on both."""

from __future__ import annotations

import pytest

from lorahelpers.params import Params, default_params, device_defaults
from lorahelpers.runtime import RuntimeReport


def _runtime(cuda: bool) -> RuntimeReport:
    return RuntimeReport(cuda=cuda, gpu_name="Tesla T4" if cuda else None,
                         gpu_memory_gb=15.0 if cuda else None, bf16=False, unsloth=cuda,
                         colab=cuda, cpu_threads=2, torch_version="2.13.0",
                         python_version="3.12", capability=(7, 5) if cuda else None)


@pytest.mark.parametrize("cuda, tokens", [(True, 2048), (False, 256)])
def test_default_max_seq_length_per_device(cuda, tokens):
    runtime = _runtime(cuda)
    assert device_defaults(runtime)["max_seq_length"] == tokens
    assert Params().resolved(runtime).max_seq_length == tokens
    for kind in ("alpaca", "table"):
        params = default_params(kind, runtime=runtime, env={})
        assert params.max_seq_length == tokens
        assert params.source("max_seq_length") == f"{'GPU' if cuda else 'CPU'} default"


@pytest.mark.parametrize("cuda", [True, False])
def test_a_given_max_seq_length_is_kept(cuda):
    runtime = _runtime(cuda)
    assert Params(max_seq_length=512).resolved(runtime).max_seq_length == 512
    assert default_params("alpaca", runtime=runtime, env={"LORAHELPERS_MAX_SEQ_LENGTH": "1024"}
                          ).max_seq_length == 1024
