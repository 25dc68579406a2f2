"""The held-out rows through Ollama (the test double, as two releases): greedy answers equal the
GGUF's, the prompt Ollama builds is the ChatFormat's, the `ollama run` options are the release's
defaults under the model's parameters; and registrations broken as users break them (a Modelfile
without a stop, a wrong template) fail the check, naming what differs.

No training: the embedded SmolLM2 GGUF answers held-out reviews in a "B: ... / A: ..." format,
and its own greedy answers (llama.cpp, cut at the stops) are taken as the expected ones, so the
GGUF scores 100 %. The base model goes on after its answer with "B: 2", "C: 3", ...: the stop
string "B:" is what ends its answers, so a model registered without it runs on.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from lorahelpers import ollama
from lorahelpers.chat import get_chat_format
from lorahelpers.heldout import (
    OLLAMA_GREEDY,
    OllamaCheckError,
    compare,
    score_ollama,
)
from tests.ollama_double import OllamaDouble, Release

pytestmark = pytest.mark.slow
ROWS, BUDGET = 6, 12  # answers of at most 12 tokens: the exact scorer's budget for "POS"
quiet = {"progress": lambda line: None}


@pytest.fixture(scope="module")
def task(embedded_tokenizer):
    """(format, GGUF, held-out rows whose expected answers are the GGUF's, its report)."""
    from lorahelpers.data import to_conversations
    from lorahelpers.inference import evaluate_gguf
    from lorahelpers.models import embedded_gguf
    from tests.fixtures_training import DATA

    fmt = get_chat_format("B: {INPUT}\nA: {OUTPUT}", eos=embedded_tokenizer.eos_token)
    assert fmt.stop == (embedded_tokenizer.eos_token, "B:")
    gguf = embedded_gguf()
    rows = to_conversations(DATA / "alpaca_eval.jsonl")[0][:ROWS]
    first = evaluate_gguf(gguf, rows, fmt, embedded_tokenizer, max_new_tokens=BUDGET)
    rows = [row[:-1] + [{"role": "assistant", "content": r["answer"]}]
            for row, r in zip(rows, first.rows, strict=True)]
    reference = evaluate_gguf(gguf, rows, fmt, embedded_tokenizer, max_new_tokens=BUDGET)
    assert reference.score == 100.0, reference.to_frame()
    return fmt, gguf, rows, reference


def scored(double, task, tokenizer, registered_format):
    fmt, gguf, rows, reference = task
    ollama.register("tagger", gguf, registered_format, host=double.url, max_seq_length=256,
                    **quiet)
    return score_ollama("tagger", rows, fmt, tokenizer, scorer="exact", max_new_tokens=BUDGET,
                        gguf=gguf,
                        gguf_report=reference, quant="q4_1", host=double.url, **quiet)


@pytest.mark.parametrize("version", ["0.12.6", "0.34.2"])
def test_greedy_through_ollama_keeps_the_gguf_score(version, task, embedded_tokenizer):
    fmt, gguf, rows, reference = task
    with OllamaDouble(version) as double:
        scores = scored(double, task, embedded_tokenizer, fmt)
        # the last request (the run options' last row): the prompt Ollama built is the row's
        assert double.last_prompt == scores.run.rows[-1]["chat_prompt"] \
            == fmt.generation_prefix(rows[-1][:-1])
        sampled = double.last_options
    print(f"\n{version}:\n{compare(None, reference, {'q4_1': reference}, scores)}")
    assert scores.check.passed and scores.check.differences == [], str(scores.check)
    assert [r["answer"] for r in scores.greedy.rows] == [r["answer"] for r in reference.rows]
    # what the table says `ollama run` samples with is what the server sampled with
    defaults = Release(version).default_options
    assert {k: sampled[k] for k in defaults} == {k: scores.run_options[k] for k in defaults}
    # the Modelfile's repeat_penalty 1 over the release's default (1.1 in 0.12.6)
    assert (sampled["temperature"], sampled["repeat_penalty"]) == (0.8, 1.0)
    assert (sampled["seed"], sampled["num_predict"]) == (3407, BUDGET)


def test_a_modelfile_without_the_stop_fails_the_check(task, embedded_tokenizer):
    fmt, *_ = task
    without = dataclasses.replace(fmt, stop=(embedded_tokenizer.eos_token,))  # no "B:"
    with OllamaDouble() as double:
        scores = scored(double, task, embedded_tokenizer, without)
    check = scores.check
    assert not check.passed and check.gguf_right - check.ollama_right > 1, str(check)
    assert check.differences == ["stops: the Ollama model lacks the stop string 'B:': answers "
                                 "run on past it, where the GGUF's and PyTorch's stop"]
    assert any("B:" in r["answer"] for r in scores.greedy.rows)  # ran on into the next turn
    with pytest.raises(OllamaCheckError, match=r"FAILED .* What differs: stops: .* Fix: "):
        check.raise_if_failed()


def test_a_wrong_template_fails_the_check(task, embedded_tokenizer):
    fmt, *_ = task
    chatml = get_chat_format("chatml")
    wrong = dataclasses.replace(chatml, stop=fmt.stop)  # only the template differs
    with OllamaDouble() as double:
        scores = scored(double, task, embedded_tokenizer, wrong)
    table = compare(None, task[3], {"q4_1": task[3]}, scores)
    print(f"\n{table}")
    check = scores.check
    assert not check.passed, str(check)
    assert [d.split(":")[0] for d in check.differences] == ["template"]
    # the side-by-side view shows the answer and the prompt of the first row that differs
    first = table.first_disagreement()
    assert first is not None and first["answers"][OLLAMA_GREEDY] != first["answers"][
        "PyTorch after training"]
    assert json.loads(json.dumps(table.as_dict()))["ollama_check"]["passed"] is False
