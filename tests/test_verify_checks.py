"""Each verification check decides on its own, on reports built by hand (no model): the
adapter-effect scale and the adapter's kept top tokens fail a report that every other check
passes, and a limit that cannot fail is shown as information, not as a limit."""

from __future__ import annotations

import pytest

from lorahelpers.verify import THRESHOLDS, VerificationError, VerifyReport


def _report(kind="q8_0", **changes) -> VerifyReport:
    """A q8_0 report inside every limit, with an adapter (30 changed positions) fully kept."""
    fields = dict(artifact="/x/model-q8_0.gguf", kind=kind, limits=THRESHOLDS[kind], prompts=4,
                  positions=100, tokens_match=True, template_match=True, top1=1.0,
                  mean_kl=0.0, max_kl=0.0, nmse=0.0, greedy_match=1.0, notes=[],
                  adapter_kept=1.0, adapter_positions=30, adapter_scale=1.0)
    return VerifyReport(**(fields | changes))


def test_a_report_inside_every_limit_passes():
    assert _report().passed and _report().failures == []


@pytest.mark.parametrize("scale", [0.5, 1.3])
def test_an_adapter_effect_at_the_wrong_scale_fails_on_its_own(scale):
    report = _report(adapter_scale=scale)
    assert report.failures == [f"adapter's effect carried at scale {scale:.2f}, outside 0.8 to "
                               "1.25 (a merge at the wrong scale?)"]
    with pytest.raises(VerificationError, match="a merge at the wrong scale"):
        report.raise_if_failed()


@pytest.mark.parametrize("scale", [0.8, 1.0, 1.25, None])
def test_an_adapter_effect_at_its_scale_or_too_small_to_judge_passes(scale):
    assert _report(adapter_scale=scale).passed


def test_an_adapter_whose_changes_are_lost_fails_on_its_own():
    lost = _report(adapter_kept=0.2)
    assert lost.failures == ["adapter's top-token changes kept 20% < 80% (of 30)"]
    with pytest.raises(VerificationError, match="adapter's top-token changes kept 20%"):
        lost.raise_if_failed()
    assert _report(adapter_kept=0.8).passed
    assert _report(adapter_kept=0.2, adapter_positions=9).passed  # too few to judge
    assert _report(adapter_kept=None, adapter_positions=0).passed


def _limit(report: VerifyReport, check: str) -> str:
    return next(limit for name, _, limit in report.rows() if name == check)


def test_a_limit_that_cannot_fail_is_shown_as_information():
    q8 = _report(greedy_match=0.0)
    assert THRESHOLDS["q8_0"].min_greedy == 0 and q8.passed
    assert _limit(q8, "greedy answers identical") == "information"
    assert _limit(_report("f16"), "greedy answers identical") == ">= 75%"
    assert _limit(q8, "top-1 agreement") == ">= 88%"
    assert _limit(q8, "adapter changes kept") == ">= 80%"
    line = next(x for x in q8.table().splitlines() if "greedy answers identical" in x)
    assert line.split() == ["greedy", "answers", "identical", "0%", "information"]
    html = q8._repr_html_()
    assert "<td>greedy answers identical</td><td>0%</td><td>information</td>" in html
    assert ">= 0%" not in q8.table() + html


@pytest.mark.parametrize("kind", sorted(THRESHOLDS))
def test_no_report_shows_a_limit_of_zero(kind):
    report = _report(kind)
    assert all(not limit.startswith(">= 0") for _, _, limit in report.rows()), report.table()
