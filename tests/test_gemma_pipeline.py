"""The whole pipeline on the second embedded base, Gemma 3 270M (another family, tokenizer and
chat format): chat_format="auto" picks gemma, a short run on the sample task, q8_0 export,
verify, and the Ollama double, whose rendered prompt is the training prompt byte for byte."""

from __future__ import annotations

import json

import pytest

from lorahelpers.inference import evaluate
from tests.test_ollama_e2e import greedy

pytestmark = pytest.mark.slow
ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def rows(name: str, n: int) -> list:
    from lorahelpers.data import to_conversations

    lines = (ROOT / "data" / name).read_text().splitlines()[:n]
    return to_conversations([json.loads(line) for line in lines], "alpaca")[0]


def test_gemma_trains_exports_verifies_and_chats_in_ollama(tmp_path, capsys):
    from lorahelpers import ollama
    from lorahelpers.batches import tokenize_conversations
    from lorahelpers.export import export_gguf
    from lorahelpers.merge import merge_lora
    from lorahelpers.models import LoraSettings, add_lora, embedded_gemma, load_model
    from lorahelpers.training import TrainSettings, train
    from lorahelpers.verify import verify
    from tests.ollama_double import OllamaDouble

    model, tok = load_model(embedded_gemma(), max_seq_length=128, chat_format="auto")
    assert "chat_format='auto': gemma" in capsys.readouterr().out
    from lorahelpers.chat import get_chat_format

    fmt = get_chat_format("auto", tokenizer=tok)
    assert fmt.name == "gemma" and tok.chat_template == fmt.jinja_template
    train_rows, eval_rows = rows("alpaca_train.jsonl", 160), rows("alpaca_eval.jsonl", 24)

    before = evaluate(model, tok, eval_rows, "exact", chat_format=fmt, max_new_tokens=4)
    model = add_lora(model, LoraSettings(r=16, alpha=32))
    train(model, tok, train_rows, None, chat_format=fmt, settings=TrainSettings(
        output_dir=tmp_path / "run", max_steps=20, batch_size=8, learning_rate=5e-4,
        warmup_steps=2, eval_steps=0, save_steps=1000, progress="none"))
    after = evaluate(model, tok, eval_rows, "exact", chat_format=fmt, max_new_tokens=4)
    print(f"\nGemma 3 270M held-out exact match: before {before.score:.1f} %, "
          f"after {after.score:.1f} % of {after.n}")
    assert after.score - before.score >= 30, (before.score, after.score)

    quiet = {"progress": lambda s: None}
    merged = merge_lora(tmp_path / "run" / "adapter", tmp_path / "merged", chat_format=fmt,
                        **quiet).out_dir
    q8 = export_gguf(merged, tmp_path / "gguf", "gemma", ("q8_0",), **quiet)["q8_0"]
    prompts = [m[:-1] for m in eval_rows[:4]]
    report = verify(q8, model, tok, prompts, max_new_tokens=4)
    print(report.table())
    assert report.tokens_match and report.template_match and report.passed, report.table()

    with OllamaDouble() as double:
        ollama.register("gemma-tuned", q8, fmt, host=double.url, **quiet)
        conversation = eval_rows[0][:-1]
        reply = ollama.chat("gemma-tuned", conversation, host=double.url, stream=False,
                            options=ollama.GREEDY_OPTIONS | {"num_predict": 8})
        training_text, spans = fmt.render_with_spans(eval_rows[0])
        assert double.last_prompt == training_text[:spans[-1][0]]  # byte for byte
        assert double.last_prompt == tok.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True)
        # llama.cpp tokenizes that prompt as training did
        (example,), _ = tokenize_conversations(tok, [eval_rows[0]], fmt)
        first_label = next(i for i, t in enumerate(example["labels"]) if t != -100)
        tokens, expected = greedy(q8, double.last_prompt, fmt.stop, n_predict=8)
        assert tokens == example["input_ids"][:first_label]
        assert reply == expected and reply.strip()
