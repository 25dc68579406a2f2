"""Generation stops where the ChatFormat says, streams what it returns, and evaluation scores
answers with each scorer; batched generation gives the same answers as one at a time."""

from __future__ import annotations

import io

import pytest

from lorahelpers.chat import ChatFormat, get_chat_format
from lorahelpers.inference import (
    EvalReport,
    StopStreamer,
    cut_at_stop,
    eval_mode,
    evaluate,
    generate,
    normalize,
)
from lorahelpers.models import load_model

CHATML = get_chat_format("chatml")
FRANCE = "What is the capital of France?"


def ask(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def test_eval_mode_turns_dropout_and_gradients_off_and_restores_the_mode():
    """The one eval switch, for generation here and verification's reference runs."""
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.9)).train()
    x = torch.ones(1, 4)
    with eval_mode(model):
        assert not model.training and not torch.is_grad_enabled()
        assert torch.equal(model(x), model(x))  # no dropout
    assert model.training and torch.is_grad_enabled()
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training


@pytest.fixture(scope="module")
def base(embedded_path):
    return load_model(embedded_path, chat_format=CHATML)


def test_cut_at_stop_and_normalize():
    assert cut_at_stop("Paris.<|im_end|>\n<|im_start|>", ["<|im_start|>", "<|im_end|>"]) == "Paris."
    assert cut_at_stop("no stop here", ["###"]) == "no stop here"
    assert normalize("  POS.\n") == "pos"
    assert normalize("The  answer\tis 42!") == "the answer is 42"


def stream(tokenizer, text: str, stops) -> tuple[str, list[str]]:
    out = io.StringIO()
    streamer = StopStreamer(tokenizer, stops, file=out)
    streamer.put(None)  # the prompt, skipped
    seen = []
    import torch

    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        streamer.put(torch.tensor([token]))
        seen.append(out.getvalue())
    streamer.end()
    return out.getvalue(), seen


def test_streamer_prints_up_to_the_eos_token(embedded_tokenizer):
    printed, _ = stream(embedded_tokenizer, "Hello world.<|im_end|>\nmore text", CHATML.stop)
    assert printed == "Hello world.\n"


def test_streamer_holds_back_the_start_of_a_text_stop(embedded_tokenizer):
    stops = ["</s>", "### Instruction:"]
    printed, seen = stream(embedded_tokenizer, "Answer: yes.\n\n### Instruction:\nNext", stops)
    assert printed == "Answer: yes.\n\n\n"
    assert not any("#" in partial for partial in seen)
    # Text that only looks like a stop for a while is printed once it is clear.
    printed, _ = stream(embedded_tokenizer, "Use ## headings", stops)
    assert printed == "Use ## headings\n"


def test_generate_stops_at_the_eos_and_streams_what_it_returns(base):
    model, tokenizer = base
    out = io.StringIO()
    answer = generate(model, tokenizer, FRANCE, CHATML, max_new_tokens=64, file=out)
    assert "Paris" in answer and "<|im_end|>" not in answer
    assert out.getvalue() == answer + "\n"
    assert len(tokenizer(answer)["input_ids"]) < 32  # it stopped itself, not at max_new_tokens
    quiet = io.StringIO()
    again = generate(model, tokenizer, [{"role": "user", "content": FRANCE}], "chatml",
                     stream=False, file=quiet)
    assert again == answer and quiet.getvalue() == ""


def test_generate_stops_at_a_text_stop_string(base):
    model, tokenizer = base
    fmt = ChatFormat("test", CHATML.eos, (CHATML.eos, " Paris"), CHATML.turns)
    out = io.StringIO()
    answer = generate(model, tokenizer, FRANCE, fmt, max_new_tokens=64, file=out)
    assert answer == "The capital of France is"
    assert out.getvalue() == answer + "\n"


def test_each_scorer_scores_known_answers(base):
    model, tokenizer = base
    rows = [ask(FRANCE, "The capital of France is Paris"),  # the model's exact answer
            ask(FRANCE, "Paris")]
    assert evaluate(model, tokenizer, rows, "exact", chat_format=CHATML).score == 50.0
    contains = evaluate(model, tokenizer, rows, "contains", chat_format=CHATML)
    assert contains.score == 100.0 and contains.scorer == "contains"

    def starts_with_the(expected, answer):
        return answer.startswith("The")

    custom = evaluate(model, tokenizer, [{"messages": r} for r in rows], starts_with_the,
                      chat_format=CHATML)
    assert custom.score == 100.0 and custom.scorer == "starts_with_the"
    table = contains.to_frame()
    assert list(table.columns) == ["prompt", "expected", "answer", "correct"]
    assert table["prompt"].tolist() == [FRANCE, FRANCE]
    assert table["answer"].tolist() == ["The capital of France is Paris."] * 2


def test_batched_answers_equal_one_at_a_time(base):
    model, tokenizer = base
    questions = ["What is 2 + 2?", FRANCE, "Name a colour.", "Say hello in French, please.",
                 "What is the largest planet in our solar system?"]
    rows = [ask(q, "-") for q in questions]
    batched = evaluate(model, tokenizer, rows, "f1", chat_format=CHATML, batch_size=3,
                       max_new_tokens=12)
    single = [generate(model, tokenizer, q, CHATML, max_new_tokens=12, stream=False)
              for q in questions]
    assert [r["answer"] for r in batched.rows] == single


def test_exact_scoring_stops_once_an_answer_cannot_match(base):
    # Short expected answers: "exact" generates only as far as a match is still possible, and
    # scores exactly what the full-length answers would score.
    from lorahelpers.inference import answer_budget, normalize

    model, tokenizer = base
    questions = [FRANCE, "Name a colour.", "What is 2 + 2?", "Say hello in French, please."]
    rows = [ask(q, a) for q, a in zip(questions, ["Paris", "Blue", "4", "Bonjour"], strict=True)]
    budget = answer_budget(tokenizer, [(r[:-1], r[-1]["content"]) for r in rows], "exact", 64)
    assert 8 < budget < 64
    capped = evaluate(model, tokenizer, rows, "exact", chat_format=CHATML, max_new_tokens=64)
    full = evaluate(model, tokenizer, rows, "contains", chat_format=CHATML, max_new_tokens=64)
    assert any(len(r["answer"]) > len(c["answer"]) for r, c in zip(full.rows, capped.rows, strict=True))
    for c, f in zip(capped.rows, full.rows, strict=True):
        assert len(tokenizer(c["answer"], add_special_tokens=False)["input_ids"]) <= budget
        assert f["answer"].startswith(c["answer"])
        assert c["correct"] == float(normalize(f["answer"]) == normalize(f["expected"]))


def test_bad_rows_and_scorers_are_explained(base):
    model, tokenizer = base
    with pytest.raises(ValueError, match="eval row 1"):
        evaluate(model, tokenizer, [ask(FRANCE, "Paris"), [{"role": "user", "content": "Hi"}]])
    with pytest.raises(ValueError, match="scorer .* is unknown. Fix: use"):
        evaluate(model, tokenizer, [ask(FRANCE, "Paris")], scorer="fuzzy")
    with pytest.raises(ValueError, match="float in"):
        evaluate(model, tokenizer, [ask(FRANCE, "Paris")], lambda e, a: 3, chat_format=CHATML,
                 max_new_tokens=4)


def test_report_renders_as_an_escaped_table():
    report = EvalReport(50.0, [{"prompt": "<b>x</b>", "expected": "1", "answer": "2",
                                "correct": 0.0}], "exact")
    page = report._repr_html_()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "Score: 50.0%" in page and str(report) == "50.0% (exact, 1 rows)"


@pytest.mark.slow
def test_the_finetuned_model_answers_the_held_out_reviews(finetuned, base):
    rows = finetuned.eval_conversations[:16]
    after = evaluate(finetuned.model, finetuned.tokenizer, rows, "exact",
                     chat_format=finetuned.chat_format,
                     max_new_tokens=8)
    before = evaluate(*base, rows, "exact", chat_format=CHATML, max_new_tokens=8)
    assert after.score >= before.score + 40, (before.score, after.score)
    assert {r["answer"] for r in after.rows} <= {"POS", "NEG"}
