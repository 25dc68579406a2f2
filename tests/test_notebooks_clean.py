"""Committed notebooks carry no outputs or execution counts, and each has the parts a Colab user
needs: the badge, the set-up cell, the runtime report and one parameters cell."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"alpaca_to_ollama.ipynb", "table_to_ollama.ipynb", "two_adapters.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_outputs_or_execution_counts(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; run scripts/build_notebooks.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_ready(path):
    nb = json.loads(path.read_text())
    text = ["".join(c["source"]) for c in nb["cells"]]
    assert "colab.research.google.com/github/" in text[0] and path.name in text[0]
    code = [t for c, t in zip(nb["cells"], text, strict=True) if c["cell_type"] == "code"]
    assert any("colab_setup.sh" in t and "google.colab" in t for t in code)
    assert any("runtime_report()" in t for t in code)
    made = [t for t in code if re.search(r"^params = (default|two_adapter)_params\(", t, re.M)]
    assert len(made) == 1, "exactly one parameters cell"
