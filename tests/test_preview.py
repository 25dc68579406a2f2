"""The preview of what is trained (lorahelpers.preview): the rows as the model sees them with
exactly the tokens that carry the loss marked, the token lengths against max_seq_length, the
cut and dropped rows, in text, HTML and the train command's summary. Embedded tokenizer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lorahelpers.batches import IGNORE, tokenize_conversations
from lorahelpers.chat import get_chat_format
from lorahelpers.data import to_conversations
from lorahelpers.preview import CLOSE, OPEN, training_preview


@pytest.fixture(scope="module")
def fmt(embedded_tokenizer):
    return get_chat_format("chatml", eos=embedded_tokenizer.eos_token)


def rows(n: int, words: int = 3) -> list:
    convs, _ = to_conversations([{"instruction": "Tag the review. " + "very good " * (i * words),
                                  "output": "POS" if i % 2 else "NEG"} for i in range(n)])
    return convs


def test_the_marked_tokens_are_exactly_those_that_carry_the_loss(embedded_tokenizer, fmt):
    tok = embedded_tokenizer
    convs = rows(4) + [[{"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Say hi"},
                        {"role": "assistant", "content": "hi there"},
                        {"role": "user", "content": "Again"},
                        {"role": "assistant", "content": "hi"}]]
    preview = training_preview(convs, tok, fmt, 512, rows=5)
    examples, _ = tokenize_conversations(tok, convs, fmt, 512)
    for shown, example, conv in zip(preview.shown, examples, convs, strict=True):
        ids, labels = example["input_ids"], example["labels"]
        assert "".join(text for text, _ in shown.pieces) == fmt.render(conv)  # as the model sees
        learnt = [t for i, (t, label) in enumerate(zip(ids, labels, strict=True))
                  if i > 0 and label != IGNORE]
        marked = "".join(text for text, loss in shown.pieces if loss)
        assert marked == tok.decode(learnt) and tok(marked, add_special_tokens=False)[
            "input_ids"] == learnt
    assert [t for t, loss in preview.shown[-1].pieces if loss] == ["hi there<|im_end|>",
                                                                  "hi<|im_end|>"]
    assert f"assistant\n{OPEN}NEG<|im_end|>{CLOSE}" in str(preview)


def test_lengths_cuts_and_drops_are_those_of_training(embedded_tokenizer, fmt):
    convs = rows(12, words=4)
    full, _ = tokenize_conversations(embedded_tokenizer, convs, fmt, 10_000)
    lengths = [len(e["input_ids"]) for e in full]
    limit = sorted(lengths)[6] - 1  # row 7 loses its last token (the newline after the
    # answer's eos), the longer rows their answers too
    _, dropped = tokenize_conversations(embedded_tokenizer, convs, fmt, limit)
    preview = training_preview(convs, embedded_tokenizer, fmt, limit, rows=12)
    assert preview.lengths == lengths
    assert preview.cut == [n - limit for n in lengths if n > limit] and preview.cut
    assert preview.dropped_for_length == dropped > 0  # the answer sits past the cut
    assert len(preview.shown) == 12 - dropped
    assert [(row.tokens, row.cut) for row in preview.shown if row.cut] == [(limit, 1)]
    assert "[... 1 more tokens cut]" in str(preview)
    summary = preview.summary()
    assert f"max_seq_length {limit}: {len(preview.cut)} cut" in summary
    assert f"{dropped} keep no answer token and are left out of training" in summary


def test_text_html_and_histogram(embedded_tokenizer, fmt):
    convs, report = to_conversations([{"instruction": "a", "output": "x"},
                                      {"instruction": "a", "output": "x"},
                                      {"instruction": "b", "output": ""}])
    preview = training_preview(convs, embedded_tokenizer, fmt, 256, report=report, rows=1)
    assert preview.summary().splitlines() == [
        f"2 training rows: {min(preview.lengths)}-{max(preview.lengths)} tokens, median "
        f"{max(preview.lengths)}; max_seq_length 256: none cut",
        "data: 3 rows read, dropped empty output 1, 1 duplicate(s)"]
    page = preview._repr_html_()
    assert "<span style='background:#fde68a;border-radius:2px'>x&lt;|im_end|&gt;</span>" in page
    assert "<img src='data:image/png;base64,iVBOR" in page  # the histogram
    axes = preview.figure().axes[0]
    assert axes.get_xlabel() == "tokens per training row"
    assert [line.get_xdata()[0] for line in axes.get_lines()] == [256]  # max_seq_length


def test_the_notebook_step_previews_the_rows_the_run_reaches(embedded_tokenizer, fmt):
    from lorahelpers.params import Params
    from lorahelpers.pipeline import DataBundle, preview_training

    data = DataBundle(rows(50), [], None)
    params = Params(max_steps=2, batch_size=2, grad_accum=2, max_seq_length=128)
    preview = preview_training(params, data, embedded_tokenizer, fmt, rows=2)
    assert len(preview.lengths) == 10 and preview.rows_total == 50  # 2 x 2 x 2 x 1.25
    assert preview.summary().startswith("10 training rows of 50 (those the run reaches)")


def test_the_train_command_prints_the_summary(monkeypatch, tmp_path, embedded_tokenizer, fmt):
    import lorahelpers.models
    import lorahelpers.pipeline
    import lorahelpers.training
    from lorahelpers.params import Params
    from lorahelpers.runner import run_pipeline

    convs, report = to_conversations([{"instruction": f"q{i}", "output": "a"}
                                      for i in range(6)])
    data = SimpleNamespace(train=convs, eval=[], report=report)
    result = SimpleNamespace(adapter_dir=tmp_path / "adapter", steps=1, final_loss=1.0,
                             interrupted=False, elapsed_s=1.0,
                             history=SimpleNamespace(records=[]))
    monkeypatch.setattr(lorahelpers.pipeline, "prepare_data", lambda params: data)
    monkeypatch.setattr(lorahelpers.pipeline, "load",
                        lambda params: ("model", embedded_tokenizer, fmt))
    monkeypatch.setattr(lorahelpers.models, "add_lora", lambda model, settings: model)
    monkeypatch.setattr(lorahelpers.training, "train", lambda *args, **kwargs: result)
    said = []
    run_pipeline(Params(max_steps=1, batch_size=2, grad_accum=1, max_seq_length=64,
                        output_dir=str(tmp_path), keep_dir="off"), export=False,
                 progress=said.append)
    assert any(line.startswith("3 training rows of 6 (those the run reaches)") and
               "max_seq_length 64: none cut" in line for line in said), said
