"""Build notebooks/*.ipynb from their sources in notebooks/src/*.py (percent format: a line
`# %%` starts a code cell, `# %% [markdown]` a markdown cell whose lines start with '# ').
The .ipynb files are committed without outputs; edit the sources and run this script.

    python scripts/build_notebooks.py          # write every notebook
    python scripts/build_notebooks.py --check  # fail if a notebook differs from its source
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lorahelpers.atomic import write_atomic  # noqa: E402

SRC = ROOT / "notebooks" / "src"


def cells_of(source: str) -> list[dict]:
    cells: list[dict] = []
    kind, lines = None, []

    def flush():
        if kind is None:
            return
        body = list(lines)
        while body and not body[-1].strip():
            body.pop()
        if kind == "markdown":
            body = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in body]
        text = "\n".join(body)
        cell = {"cell_type": kind, "metadata": {}, "source": text.splitlines(keepends=True)}
        if kind == "code":
            cell |= {"execution_count": None, "outputs": []}
        cells.append(cell)

    for line in source.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def notebook(source: str) -> str:
    nb = {"cells": cells_of(source), "metadata": {
        "accelerator": "GPU", "colab": {"provenance": []},
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    for i, cell in enumerate(nb["cells"]):
        cell["id"] = f"cell-{i}"
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for src in sorted(SRC.glob("*.py")):
        target = ROOT / "notebooks" / f"{src.stem}.ipynb"
        text = notebook(src.read_text())
        if "--check" in argv:
            if not target.exists() or target.read_text() != text:
                stale.append(target.name)
            continue
        write_atomic(target, text)
        print(f"wrote {target.relative_to(ROOT)}")
    if stale:
        print(f"out of date (run python scripts/build_notebooks.py): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
