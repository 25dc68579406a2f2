"""Shared fixtures. Stage-specific session fixtures live in the fixtures_* modules below."""

from __future__ import annotations

import os

import pytest

# Tests never reach the Hugging Face Hub; fail fast instead of hanging on a lookup.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads spin-wait by default; when another process (a notebook kernel, llama.cpp)
# shares the cores, that spinning slowed training steps several-fold. Must be set before torch
# is first imported, which is why it lives here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

pytest_plugins = ["tests.fixtures_training", "tests.fixtures_export"]


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def embedded_path():
    from lorahelpers.models import embedded_base

    return embedded_base()


@pytest.fixture(scope="session")
def embedded_tokenizer(embedded_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_path)
