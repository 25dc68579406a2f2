"""GGUFRunner.greedy on a scripted stand-in for llama.cpp's Llama (no model): it stops at the
first stop token, keeps it, evaluates nothing after it, and ends after n tokens."""

from __future__ import annotations

import numpy as np
import pytest

from lorahelpers.llamacpp import GGUFRunner

VOCAB = 10


class ScriptedLlama:
    """Answers the tokens of `script` one after another, whatever it is given, the way
    llama_cpp.Llama exposes them: the logits of the evaluated positions in scores."""

    def __init__(self, script):
        self.script, self.evaluated, self.resets = list(script), [], 0
        self.prompt_length = self.n_tokens = 0
        self.scores = np.zeros((0, VOCAB))

    def reset(self):
        self.resets += 1
        self.n_tokens, self.evaluated = 0, []

    def eval(self, ids):
        if not self.n_tokens:
            self.prompt_length = len(ids)
        self.evaluated += list(ids)
        self.n_tokens += len(ids)
        self.scores = np.zeros((self.n_tokens, VOCAB))
        self.scores[-1, self.script[self.n_tokens - self.prompt_length]] = 1.0


def _runner(script) -> GGUFRunner:
    runner = GGUFRunner.__new__(GGUFRunner)  # no GGUF loaded: the stand-in answers
    runner.llm = ScriptedLlama(script)
    return runner


@pytest.mark.parametrize("stop", [{2}, {2, 9}])
def test_greedy_stops_at_the_first_stop_token_and_keeps_it(stop):
    runner = _runner([5, 6, 2, 7, 8, 9, 3])
    assert runner.greedy([1, 4], 6, stop) == [5, 6, 2]
    assert runner.llm.evaluated == [1, 4, 5, 6]  # the stop token is not fed back
    assert runner.llm.resets == 1


def test_greedy_without_a_stop_token_ends_after_n_tokens():
    runner = _runner([5, 6, 7, 8, 9, 3])
    assert runner.greedy([1], 4, {2}) == [5, 6, 7, 8]
    assert runner.llm.evaluated == [1, 5, 6, 7]  # nor is the last one
    assert _runner([2]).greedy([1], 4, {2}) == [2]
