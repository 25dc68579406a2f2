"""evaluate_gguf scores a GGUF with llama.cpp through the same rows, stops, scorers and report
as evaluate: run here on the GGUF the embedded model ships as (no export needed)."""

from __future__ import annotations

import pytest

from lorahelpers.chat import get_chat_format
from lorahelpers.inference import evaluate, evaluate_gguf
from lorahelpers.models import embedded_gguf

CHATML = get_chat_format("chatml")
FRANCE = "What is the capital of France?"


def ask(question: str, expected: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": expected}]


def starts_with_the(expected: str, answer: str) -> bool:
    return answer.startswith("The")


def test_answers_are_cut_at_the_stop_and_scored_by_name(embedded_tokenizer):
    rows = [ask(FRANCE, "Paris"), {"messages": ask("What is 2 + 2?", "4")}]
    report = evaluate_gguf(embedded_gguf(), rows, CHATML, embedded_tokenizer,
                           scorer=starts_with_the,
                           max_new_tokens=12)
    assert report.scorer == "starts_with_the"  # a custom scorer is named, as evaluate names it
    assert report.n == 2 and [r["prompt"] for r in report.rows] == [FRANCE, "What is 2 + 2?"]
    answers = [r["answer"] for r in report.rows]
    assert all(a and "<|im_end|>" not in a for a in answers), answers
    assert report.score == 100.0 * sum(a.startswith("The") for a in answers) / 2

    # Scoring its own answers back: "exact" finds every one, a wrong expectation none.
    own = [ask(FRANCE, answers[0]), ask(FRANCE, "Berlin")]
    exact = evaluate_gguf(embedded_gguf(), own, "chatml", embedded_tokenizer, scorer="exact",
                          max_new_tokens=12)
    assert exact.scorer == "exact" and [r["correct"] for r in exact.rows] == [1.0, 0.0]
    assert exact.score == 50.0


def test_a_score_outside_0_1_is_refused(embedded_tokenizer):
    with pytest.raises(ValueError, match=r"float in \[0, 1\]"):
        evaluate_gguf(embedded_gguf(), [ask(FRANCE, "Paris")], CHATML, embedded_tokenizer,
                      scorer=lambda expected, answer: 3, max_new_tokens=2)


@pytest.mark.parametrize("run", ["torch", "gguf"])
def test_no_rows_and_unknown_scorers_are_explained_before_any_model_runs(run, tmp_path):
    missing = tmp_path / "missing.gguf"  # neither function may get as far as loading a model

    def score(rows, scorer="exact"):
        if run == "torch":
            return evaluate(None, None, rows, scorer, chat_format=CHATML)
        return evaluate_gguf(missing, rows, CHATML, None, scorer=scorer)

    with pytest.raises(ValueError, match="no held-out rows to score.*Fix: "):
        score([])
    with pytest.raises(ValueError, match="scorer .fuzzy. is unknown"):
        score([ask(FRANCE, "Paris")], scorer="fuzzy")
    with pytest.raises(ValueError, match="eval row 0"):
        score([[{"role": "user", "content": FRANCE}]])
