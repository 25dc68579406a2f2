"""The README's main command end to end on the embedded model: it learns (held-out exact-match
score up by at least 40 points), the q8_0 GGUF run by llama.cpp keeps what was learned (within
10 points), every export is verified, and the Modelfile is one Ollama accepts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lorahelpers.chat import get_chat_format
from tests.modelfile_check import check


@pytest.mark.slow
def test_demo_learns_and_the_gguf_keeps_it(tmp_path):
    out = tmp_path / "demo"
    env = os.environ | {"OLLAMA_HOST": "http://127.0.0.1:9"}  # nothing listens there
    proc = subprocess.run(
        [sys.executable, "-m", "lorahelpers", "demo", "--output-dir", str(out)],
        capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    print(json.dumps(summary, indent=2))

    assert summary["after"] - summary["before"] >= 40, summary
    assert abs(summary["gguf_scores"]["q8_0"] - summary["after"]) <= 10, summary
    assert all(summary["verified"].values()), summary["verification"]
    modelfile = (out / "gguf" / "Modelfile").read_text()
    parsed = check(modelfile)
    assert parsed.one("template") == get_chat_format("chatml").go_template
    assert set(parsed.parameters["stop"]) >= {"<|im_end|>"}
    assert summary["ollama"].startswith("skipped: no Ollama server answers")
    assert (out / "loss.png").stat().st_size > 10_000
    assert "held-out score after training" in proc.stdout  # the summary table is printed
