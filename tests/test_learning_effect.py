"""The learning effect, asserted outside the notebooks. The README's main command end to end on
the embedded model: it learns (held-out exact-match score up by at least 40 points), the q8_0
GGUF run by llama.cpp keeps what was learned (within 10 points), every export is verified, the
Modelfile is one Ollama accepts, and the model registered with Ollama (the test double) keeps
it too: greedily within one row of the GGUF, and with the options `ollama run` uses. And the
CSV/Excel notebook's CPU defaults learn the sample workbook's shipping rule."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from lorahelpers.chat import get_chat_format
from tests.modelfile_check import check


@pytest.mark.slow
def test_demo_learns_and_the_gguf_and_ollama_keep_it(tmp_path):
    """The demo against the Ollama double: registered, the held-out rows scored through it
    greedily (the check against the GGUF passes) and with `ollama run`'s options."""
    from tests.ollama_double import OllamaDouble

    out = tmp_path / "demo"
    with OllamaDouble() as double:
        proc = subprocess.run(
            [sys.executable, "-m", "lorahelpers", "demo", "--output-dir", str(out)],
            capture_output=True, text=True, env=os.environ | {"OLLAMA_HOST": double.url},
            timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    print(proc.stdout[proc.stdout.index("\nheld-out rows:"):])

    assert summary["after"] - summary["before"] >= 40, summary
    assert abs(summary["gguf_scores"]["q8_0"] - summary["after"]) <= 10, summary
    assert all(summary["verified"].values()), summary["verification"]
    modelfile = (out / "gguf" / "Modelfile").read_text()
    parsed = check(modelfile)
    assert parsed.one("template") == get_chat_format("chatml").go_template
    assert set(parsed.parameters["stop"]) >= {"<|im_end|>"}
    assert summary["ollama"].startswith("registered as 'lorahelpers-alpaca' (model) with "
                                        f"Ollama {double.version}")
    ollama = summary["ollama_scores"]
    assert ollama["check"]["passed"] and ollama["check"]["differences"] == [], ollama
    assert abs(ollama["greedy"] - summary["gguf_scores"]["q8_0"]) <= 100 / summary["held_out_rows"]
    assert ollama["run_options"] >= summary["after"] - 10, ollama  # `ollama run`'s sampling
    columns = summary["comparison"]["columns"]
    assert list(columns) == ["base (before training)", "PyTorch after training",
                             "q8_0 GGUF (llama.cpp)", "Ollama greedy",
                             "Ollama, `ollama run` options"]
    assert (out / "loss.png").stat().st_size > 10_000
    assert "held-out score through Ollama (greedy)" in proc.stdout  # the summary table
    assert "Ollama greedy against the q8_0 GGUF (llama.cpp): " in proc.stdout


@pytest.mark.slow
def test_table_notebook_defaults_learn_the_shipping_rule(tmp_path):
    # The CPU defaults of the CSV/Excel notebook on the sample workbook: the held-out score
    # (a number within 0.5 of the true cost) rises clearly.
    from lorahelpers.inference import evaluate
    from lorahelpers.models import add_lora
    from lorahelpers.params import default_params
    from lorahelpers.pipeline import load, lora_settings, prepare_data, train_settings
    from lorahelpers.runtime import runtime_report
    from lorahelpers.training import train

    params = default_params("table", runtime=runtime_report(), env={},
                            output_dir=str(tmp_path / "table"))
    data = prepare_data(params)
    model, tokenizer, fmt = load(params)

    def same_amount(expected: str, answer: str) -> bool:
        found = re.search(r"-?\d+(?:\.\d+)?", answer)
        return found is not None and abs(float(found.group()) - float(expected)) <= 0.5

    before = evaluate(model, tokenizer, data.eval, same_amount, chat_format=fmt, max_new_tokens=8)
    model = add_lora(model, lora_settings(params))
    train(model, tokenizer, data.train, data.eval, chat_format=fmt, settings=train_settings(params))
    after = evaluate(model, tokenizer, data.eval, same_amount, chat_format=fmt, max_new_tokens=8)
    print(f"table: before {before.score:.1f} %, after {after.score:.1f} % of {after.n}")
    assert after.score - before.score >= 40, (before, after)
