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


# Cells that may hold more than one call, and why: the set-up cell runs Colab's shell commands
# (it cannot import lorahelpers before installing it), and the table notebook's scorer cell is
# the user's own code, there to be edited (a function that says when an answer is right).
SEVERAL_CALLS = {"set-up": "colab_setup.sh", "your scorer": "def same_amount("}


def calls_per_statement(source: str) -> list[int]:
    """For each top-level statement of a cell that calls something, the line it starts on;
    imports, `del`, plain assignments and a last bare name (the value shown) are not calls.
    Shell (`!`) and magic (`%`) lines count as calls."""
    import ast

    lines = source.splitlines()
    magic = [i + 1 for i, line in enumerate(lines) if line.lstrip().startswith(("!", "%"))]
    tree = ast.parse("\n".join("pass" if i + 1 in magic else line
                               for i, line in enumerate(lines)))
    calling = [node.lineno for node in tree.body
               if any(isinstance(n, ast.Call) for n in ast.walk(node))]
    return sorted(calling + magic)


def test_the_call_counter_sees_two_calls_and_ignores_the_rest():
    one = ("from lorahelpers.pipeline import load\n\nquant = params.quants[0]\n"
           "model, tok, fmt = load(params)\ndel base\nmodel\n")
    assert calls_per_statement(one) == [4]
    two = "after = evaluate(model)\ndisplay(compare(before, after))\n"
    assert calls_per_statement(two) == [1, 2]
    branch = "if runtime.colab:\n    mount_drive()\nkeep_dir = keep_folder(params)\n"
    assert calls_per_statement(branch) == [1, 3]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_code_cell_is_one_call(path):
    """A notebook cell calls one lorahelpers function and shows its result; anything more is
    logic that belongs in the package, where it is tested (SEVERAL_CALLS lists the
    exceptions)."""
    nb = json.loads(path.read_text())
    crowded = []
    for i, cell in enumerate(nb["cells"]):
        text = "".join(cell["source"])
        if cell["cell_type"] != "code" or any(m in text for m in SEVERAL_CALLS.values()):
            continue
        if len(calls_per_statement(text)) > 1:
            crowded.append(f"cell {i}: {text.splitlines()[0]!r}...")
    assert crowded == [], f"{path.name}: cells with more than one call: {crowded}"
