"""The held-out comparison (lorahelpers.heldout) without a model: flips between neighbouring
columns, the first row where PyTorch and Ollama answer differently, the Ollama check and what
it names as differing; Ollama's default sampling options per release, read twice (the package
and the test double) from Ollama's sources."""

from __future__ import annotations

import pytest

from lorahelpers.chat import get_chat_format
from lorahelpers.heldout import (
    BASE,
    OLLAMA_GREEDY,
    OLLAMA_RUN,
    PYTORCH,
    Comparison,
    OllamaCheckError,
    OllamaScores,
    check_ollama,
    compare,
    gguf_column,
    ollama_differences,
    ollama_rows,
)
from lorahelpers.inference import EvalReport
from lorahelpers.modelfile import ollama_default_options, run_options
from lorahelpers.ollama import parse_show_parameters
from tests.ollama_double import VERSIONS, Release

CHATML = get_chat_format("chatml")


def report(right, answers=None, system=""):
    """An EvalReport over len(right) rows: row i right or not, its answer "POS"/"NEG" unless
    `answers` says otherwise."""
    rows = []
    for i, ok in enumerate(right):
        messages = [{"role": "user", "content": f"review {i}"}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        rows.append({"prompt": f"review {i}", "expected": "POS", "correct": float(ok),
                     "answer": (answers or {}).get(i, "POS" if ok else "NEG"),
                     "chat_prompt": CHATML.generation_prefix(messages)})
    return EvalReport(100.0 * sum(right) / len(right), rows)


def scores(greedy, run, gguf, differences=()):
    return OllamaScores("scored through Ollama 0.34.2", greedy, run,
                        run_options("0.34.2") | {"seed": 3407}, "0.34.2",
                        check_ollama(greedy, gguf, gguf_column("q8_0"), differences))


def test_flips_count_rows_against_the_scored_column_before():
    table = compare(report([0, 0, 0, 0]), report([1, 1, 1, 0]), {"q8_0": report([1, 0, 1, 1])},
                    scores(report([1, 0, 1, 1]), report([1, 0, 0, 1]), report([1, 0, 1, 1])))
    flips = {(f.before, f.after): (f.to_wrong, f.to_right) for f in table.flips()}
    assert flips == {(BASE, PYTORCH): ([], [0, 1, 2]),
                     (PYTORCH, gguf_column("q8_0")): ([1], [3]),
                     (gguf_column("q8_0"), OLLAMA_GREEDY): ([], []),
                     (OLLAMA_GREEDY, OLLAMA_RUN): ([2], [])}
    text = str(table)
    assert "Ollama greedy -> Ollama, `ollama run` options: right->wrong rows [2]" in text
    assert "q8_0 GGUF (llama.cpp): right->wrong rows [1], wrong->right rows [3]" in text
    assert table.as_dict()["flips"][3] == {"from": OLLAMA_GREEDY, "to": OLLAMA_RUN, "rows": 4,
                                           "right_to_wrong": [2], "wrong_to_right": []}


def test_the_first_disagreement_shows_both_answers_and_the_prompt_ollama_built():
    run = report([1, 1, 0, 1], answers={2: "POSITIVE, clearly"})
    table = compare(None, report([1, 1, 1, 1]), {"q8_0": report([1, 1, 1, 1])},
                    scores(report([1, 1, 1, 1]), run, report([1, 1, 1, 1])))
    first = table.first_disagreement()
    assert first == {"row": 2, "expected": "POS", "prompt": run.rows[2]["chat_prompt"],
                     "answers": {PYTORCH: "POS", OLLAMA_GREEDY: "POS",
                                 OLLAMA_RUN: "POSITIVE, clearly"}}
    text = str(table)
    assert "First row where PyTorch and Ollama answer differently: row 2" in text
    assert "    <|im_start|>user\n    review 2<|im_end|>\n    <|im_start|>assistant" in text
    html = table._repr_html_()
    assert "POSITIVE, clearly" in html and "&lt;|im_start|&gt;user" in html


def test_greedy_one_row_below_the_gguf_passes_two_rows_fail_with_what_differs():
    gguf = report([1, 1, 1, 1, 1])
    assert check_ollama(report([1, 1, 1, 1, 0]), gguf, "q8_0 GGUF (llama.cpp)").passed
    failed = check_ollama(report([1, 1, 1, 0, 0]), gguf, "q8_0 GGUF (llama.cpp)",
                          ["template: differs"])
    assert not failed.passed and (failed.gguf_right, failed.ollama_right) == (5, 3)
    with pytest.raises(OllamaCheckError) as e:
        failed.raise_if_failed()
    message = str(e.value)
    assert message.startswith("Ollama greedy against the q8_0 GGUF (llama.cpp): 3 of 5 rows "
                              "right, the GGUF 5: FAILED (more than one row fewer). What "
                              "differs: template: differs.")
    assert " Fix: register the model with lorahelpers.ollama.register" in message
    ollama = scores(report([1, 1, 1, 0, 0]), gguf, gguf, ["template: differs"])
    table = compare(None, gguf, {"q8_0": gguf}, ollama)
    assert "FAILED" in str(table) and "color:red" in table._repr_html_()
    assert dict(ollama_rows(ollama))["Ollama check"] == "FAILED: template: differs"
    assert ollama.as_dict()["check"]["passed"] is False


def test_only_the_rows_both_scored_are_compared():
    # a GGUF scored on its first 2 rows only (a GPU runtime without offload)
    check = check_ollama(report([1, 1, 0, 0]), report([1, 1]), "q8_0 GGUF (llama.cpp)")
    assert check.passed and check.rows == 2


def test_a_skipped_ollama_keeps_its_columns_with_the_reason():
    table = compare(report([0, 0]), report([1, 1]), {},
                    OllamaScores("skipped: no Ollama server answers"))
    assert table.rows()[-2:] == [(OLLAMA_GREEDY, "-"), (OLLAMA_RUN, "-")]
    assert "skipped: no Ollama server answers" in str(table)
    assert table.first_disagreement() is None and table.check is None
    assert table.as_dict()["columns"][OLLAMA_RUN] == {
        "score": None, "note": "skipped: no Ollama server answers"}


def test_plain_scores_still_make_a_table():
    table = Comparison({"before training": 0.0, "after training": 92.5}, 40)
    assert table.rows() == [("before training", "0.0"), ("after training", "92.5")]
    assert table.flips() == [] and "<table>" in table._repr_html_()


# ---- what differs between the Ollama model and the training format ---------------------------


def registered(**changes):
    """ollama.show's answer for a model registered as lorahelpers registers it."""
    info = {"template": CHATML.go_template, "system": "",
            "options": {"stop": list(CHATML.stop), "num_ctx": 2048, "repeat_penalty": 1.0}}
    info["options"] |= changes.pop("options", {})
    return info | changes


def test_a_model_registered_as_lorahelpers_does_differs_in_nothing(embedded_tokenizer):
    assert ollama_differences(registered(), CHATML, embedded_tokenizer, report([1, 1])) == []


def test_a_wrong_template_is_named_where_it_parts(embedded_tokenizer):
    llama3 = get_chat_format("llama3").go_template
    found = ollama_differences(registered(template=llama3), CHATML, embedded_tokenizer)
    assert len(found) == 1 and found[0].startswith(
        "template: the Ollama model's TEMPLATE is not chat format 'chatml''s: they part at "
        "character ")


def test_a_system_prompt_ollama_adds_is_named(embedded_tokenizer):
    ollama = report([1, 1], system="Be brief.")
    found = ollama_differences(registered(system="Be brief."), CHATML, embedded_tokenizer,
                               ollama, reference=report([1, 1]))
    assert found == ["system: Ollama adds the model's SYSTEM 'Be brief.' to 2 of 2 rows that "
                     "have no system message; the GGUF and PyTorch answered them without it"]


def test_stops_missing_or_extra_are_named(embedded_tokenizer):
    found = ollama_differences(registered(options={"stop": ["<|im_end|>", "POS"]}), CHATML,
                               embedded_tokenizer)
    assert found == ["stops: the Ollama model lacks the stop string '<|im_start|>': answers run "
                     "on past it, where the GGUF's and PyTorch's stop",
                     "stops: the Ollama model also stops at 'POS', which the training format "
                     "does not: answers are cut there"]


def test_a_missing_turn_end_stop_is_judged_by_the_stop_audit(embedded_tokenizer, tmp_path):
    """Harmless where the GGUF ends generation on the turn end (SmolLM2's <|im_end|>); an error
    where nothing else stops the model (the broken export of tests/test_stops.py)."""
    from lorahelpers.models import embedded_gguf
    from tests.llama3_tokenizer import vocab_only_gguf
    from tests.test_stops import RUNS_ON_END, runs_on_format

    found = ollama_differences(registered(options={"stop": ["<|im_start|>"]}), CHATML,
                               embedded_tokenizer, gguf=embedded_gguf())
    assert found == ["stops: the Ollama model lacks the stop string '<|im_end|>' (harmless: "
                     "the GGUF ends generation on it)"]
    tok, fmt = runs_on_format(embedded_tokenizer)
    gguf = vocab_only_gguf(tok, tmp_path)
    found = ollama_differences({"template": fmt.go_template, "options": {}}, fmt, tok,
                               gguf=gguf)
    assert found[0].startswith(f"stops: the Ollama model lacks the stop string {RUNS_ON_END!r}: "
                               f"stop strings none lack {RUNS_ON_END!r}")
    assert "it would run on past every answer" in found[0]


def test_a_num_ctx_below_prompt_and_answer_is_named(embedded_tokenizer):
    ollama = report([1, 1])
    longest = max(len(embedded_tokenizer(r["chat_prompt"])["input_ids"]) for r in ollama.rows)
    answer = len(embedded_tokenizer("POS", add_special_tokens=False)["input_ids"])
    enough = longest + answer
    assert ollama_differences(registered(options={"num_ctx": enough}), CHATML,
                              embedded_tokenizer, ollama) == []
    found = ollama_differences(registered(options={"num_ctx": enough - 1}), CHATML,
                               embedded_tokenizer, ollama)
    assert found == [f"num_ctx: the model's {enough - 1} tokens is less than the longest prompt "
                     f"({longest} tokens) and its answer ({answer}): Ollama cuts the history or "
                     "the prompt to fit"]


def test_sampling_parameters_the_model_sets_are_named(embedded_tokenizer):
    found = ollama_differences(registered(options={"temperature": 0.7, "repeat_penalty": 1.1}),
                               CHATML, embedded_tokenizer)
    assert found == ["options: the model sets repeat_penalty 1.1, temperature 0.7 (the greedy "
                     "requests override temperature and the penalties)"]


# ---- Ollama's defaults per release ------------------------------------------------------------


@pytest.mark.parametrize("version", [*VERSIONS, "0.5.5", "0.17.4", "0.17.5", "0.17.7", "0.18.0",
                                     "0.32.9", "0.32.10", "0.0.0"])
def test_the_package_and_the_double_read_the_same_defaults(version):
    """Two readings of api/types.go DefaultOptions (lorahelpers.modelfile for the table, the
    double for its sampler) must agree release by release."""
    ours = ollama_default_options(version)
    assert {k: ours[k] for k in Release(version).default_options} == \
        Release(version).default_options
    penalty = 1.0 if version in ("0.17.5", "0.17.7", "0.32.10", "0.32.15", "0.34.1", "0.34.2",
                                 "0.0.0") else 1.1
    assert ours["repeat_penalty"] == penalty
    assert (ours["temperature"], ours["top_k"], ours["top_p"], ours["seed"]) == (0.8, 40, 0.9, -1)


def test_run_options_are_the_model_parameters_over_the_defaults():
    options = run_options("0.12.6", {"stop": ["<|im_end|>"], "num_ctx": 2048,
                                     "temperature": 0.2})
    assert "stop" not in options and "num_ctx" not in options
    assert (options["temperature"], options["repeat_penalty"]) == (0.2, 1.1)
    shown = OllamaScores("", run_options=options | {"seed": 1}).options_text()
    assert shown == ("temperature 0.2, top_k 40, top_p 0.9, repeat_last_n 64, repeat_penalty 1.1, "
                     "seed 1")


def test_show_parameters_are_parsed_as_the_server_prints_them():
    text = ('stop                           "<|im_end|>"\n'
            'stop                           "<|im_start|>"\n'
            "num_ctx                        2048\n"
            "temperature                    0.7")
    assert parse_show_parameters(text) == {"stop": ["<|im_end|>", "<|im_start|>"],
                                           "num_ctx": 2048, "temperature": 0.7}
