"""Which changes make a run another run: a kept checkpoint resumes only a run that computes the
same (settings, LoRA configuration, training tokens and labels), whatever its bookkeeping."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from lorahelpers.keep import fingerprint
from lorahelpers.training import TrainSettings

SETTINGS = TrainSettings(max_steps=10, learning_rate=2e-4, batch_size=2, grad_accum=1)
MODEL = SimpleNamespace(peft_config={"default": {"r": 8, "lora_alpha": 16,
                                                 "target_modules": {"q_proj", "v_proj"}}})
EXAMPLES = [{"input_ids": [1, 5, 6, 7, 2], "labels": [-100, -100, 6, 7, 2]},
            {"input_ids": [1, 8, 9, 2], "labels": [-100, -100, 9, 2]}]


def _print(settings=SETTINGS, model=MODEL, examples=EXAMPLES) -> str:
    return fingerprint(settings, model, examples)


def test_the_same_run_has_the_same_fingerprint():
    again = [{k: list(v) for k, v in e.items()} for e in EXAMPLES]
    assert _print() == _print(dataclasses.replace(SETTINGS), examples=again)


@pytest.mark.parametrize("change", [
    {"output_dir": "elsewhere"}, {"save_steps": 7}, {"save_total_limit": 5}, {"eval_steps": 3},
    {"resume": True}, {"progress": "none"}, {"keep_dir": "/tmp/keep"},
    {"reraise_interrupt": False}])
def test_bookkeeping_keeps_the_fingerprint(change):
    assert _print(dataclasses.replace(SETTINGS, **change)) == _print()


@pytest.mark.parametrize("change", [
    {"learning_rate": 1e-4}, {"max_steps": 11}, {"batch_size": 4}, {"seed": 1},
    {"max_seq_length": 128}, {"warmup_steps": 0}])
def test_settings_that_change_the_computation_change_the_fingerprint(change):
    assert _print(dataclasses.replace(SETTINGS, **change)) != _print()


def test_the_training_data_and_labels_change_the_fingerprint():
    other_token = [{**EXAMPLES[0], "input_ids": [1, 5, 6, 8, 2]}, EXAMPLES[1]]
    other_labels = [{**EXAMPLES[0], "labels": [-100, 5, 6, 7, 2]}, EXAMPLES[1]]
    fewer = EXAMPLES[:1]
    prints = {_print(examples=e) for e in (EXAMPLES, other_token, other_labels, fewer)}
    assert len(prints) == 4


def test_the_lora_configuration_changes_the_fingerprint():
    wider = SimpleNamespace(peft_config={"default": {**MODEL.peft_config["default"], "r": 16}})
    assert _print(model=wider) != _print()
