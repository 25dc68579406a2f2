"""The verification limits of every type, pinned number by number: a limit loosened by mistake
(q8_0's NMSE 10x) lets wrong exports through without any other test noticing, and a deliberate
change must restate its measurement here and in quants.py."""

from __future__ import annotations

import pytest

from lorahelpers.quants import THRESHOLDS

# kind: (max_kl, min_top1, max_nmse, min_greedy, min_adapter_kept, adapter_scale)
LIMITS = {
    "f32": (1e-4, 0.99, 1e-4, 1.0, 0.95, (0.8, 1.25)),
    "f16": (1e-3, 0.99, 1e-3, 0.75, 0.9, (0.8, 1.25)),
    "bf16": (5e-3, 0.90, 5e-3, 0.5, 0.9, (0.8, 1.25)),
    "q8_0": (0.03, 0.88, 2e-2, 0.0, 0.8, (0.8, 1.25)),
    "q6_k": (0.06, 0.85, 5e-2, 0.0, 0.6, (0.8, 1.25)),
    "q5_k_m": (0.3, 0.75, 0.2, 0.0, 0.5, (0.8, 1.25)),
    "q4_k_m": (0.3, 0.78, 0.2, 0.0, 0.5, (0.8, 1.25)),
    "merged": (1e-4, 0.99, 1e-4, 1.0, 0.95, (0.8, 1.25)),
    "4bit-gap": (0.5, 0.7, 0.5, 0.0, 0.5, (0.8, 1.25)),
}


def test_every_kind_is_pinned():
    assert set(LIMITS) == set(THRESHOLDS)


@pytest.mark.parametrize("kind", sorted(LIMITS))
def test_limits_are_exactly_the_measured_ones(kind):
    t = THRESHOLDS[kind]
    assert (t.max_kl, t.min_top1, t.max_nmse, t.min_greedy, t.min_adapter_kept,
            t.adapter_scale) == LIMITS[kind]
    assert t.source
