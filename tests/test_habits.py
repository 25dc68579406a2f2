"""Habits that keep the code base easy to find one's way in: every docstring example runs, the
notebooks are built from their sources, and the modules import each other without a cycle
(tests/test_module_boundaries.py keeps private names inside their modules)."""

from __future__ import annotations

import ast
import doctest
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lorahelpers"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    """Examples marked `# doctest: +SKIP` need a trained model, a server or the network; all
    others run here, in an empty working directory."""
    module = importlib.import_module(f"lorahelpers.{name}")
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, f"lorahelpers.{name}"):
        runner.run(test, out=lambda text: print(text, end=""))
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of lorahelpers.{name} failed"
    if name in ("chat", "data", "tables"):  # the data layer's examples need no model: all run
        assert result.attempted > 0, f"lorahelpers.{name} has no docstring example that runs"


def test_notebooks_are_built_from_their_sources():
    done = subprocess.run([sys.executable, "scripts/build_notebooks.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _parse(path: Path) -> ast.Module:
    """The module, or the notebook source with its shell (`!`) and magic (`%`) lines blanked."""
    lines = path.read_text().splitlines()
    return ast.parse("\n".join(line[:len(line) - len(line.lstrip())] + "pass"
                               if line.lstrip().startswith(("!", "%")) else line
                               for line in lines))


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported lorahelpers module, names taken from it) for every import in `path`, lazy
    imports inside functions included."""
    out = []
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.ImportFrom):
            # `from .x import y` inside the package reads as `from lorahelpers.x import y`
            module = node.module or ""
            if node.level == 1:
                module = "lorahelpers" + ("." + module if module else "")
            if module == "lorahelpers":
                out += [(a.name, []) for a in node.names if a.name in MODULES]
            elif module.startswith("lorahelpers."):
                out.append((module.split(".")[1], [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name.split(".")[1], []) for a in node.names
                    if a.name.startswith("lorahelpers.")]
    return out


def _graph() -> dict[str, set[str]]:
    return {name: {m for m, _ in _imports(PACKAGE / f"{name}.py")} - {name} for name in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node], _ = 2, path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_modules_import_each_other_without_a_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
