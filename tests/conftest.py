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


# Session fixtures that train or export (tests/fixtures_training.py, fixtures_export.py): every
# test file using one runs in the same pytest-xdist worker, so they are built once.
SHARED_BUILDS = {"finetuned", "export_source", "merge_result", "merged_dir", "merged_ggufs",
                 "f16_gguf", "bf16_gguf", "q8_gguf", "q4_gguf", "q5_gguf", "base_f16_gguf",
                 "adapter_gguf"}


def pytest_sessionstart(session):
    # `make test` runs two pytest-xdist workers. The embedded checkpoints are built once, here
    # in the controlling process, so that two workers never build the same cache folder.
    # Only a run with workers needs it: a one-process run builds them when a test asks.
    workers = getattr(session.config.option, "numprocesses", None)
    if (not workers or hasattr(session.config, "workerinput")
            or session.config.getoption("collectonly")):
        return
    from lorahelpers.models import embedded_base, embedded_gemma

    for build in (embedded_base, embedded_gemma):
        try:
            build()
        except Exception as e:  # the tests that need it report it
            print(f"conftest: {build.__name__}() failed: {e}")


def _group_by_file(items) -> None:
    """One xdist group per test file (module fixtures are built once), and one for every file
    that uses a SHARED_BUILDS fixture (run with --dist loadgroup)."""
    shared = {item.path for item in items if SHARED_BUILDS & set(getattr(item, "fixturenames", ()))}
    for item in items:
        group = "shared-builds" if item.path in shared else item.path.name
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_collection_modifyitems(config, items):
    _group_by_file(items)
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
