"""Habits that keep the code base easy to find one's way in: every docstring example runs, the
notebooks are built from their sources, and the modules import each other without a cycle and
never from a layer above their own (tests/test_module_boundaries.py keeps private names inside
their modules)."""

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

# The layers, bottom up. A module imports modules of its own layer or below, lazy imports
# inside functions included; data flows up, nothing reaches back down. A new module is placed
# here (a mapped module need not exist yet).
LAYERS = {
    # 0 foundation: errors, atomic files, pinned versions, processes, the machine, the loss
    # history, the one table of GGUF types
    "errors": 0, "atomic": 0, "pins": 0, "distributed": 0, "runtime": 0, "history": 0,
    "quants": 0,
    # 1 data, no torch: tables read as a person reads them, rows -> conversations, chat
    # formats, Modelfile text
    "cells": 1, "header": 1, "datareport": 1, "delimited": 1, "workbook": 1, "tables": 1,
    "data": 1, "chat": 1, "modelfile": 1,
    # 2 stages: model, tokens, training, merge, GGUF, verify, Ollama, and the reports on them
    "models": 2, "batches": 2, "stops": 2, "keep": 2, "training": 2, "plots": 2, "preview": 2,
    "inference": 2, "checkpoint": 2, "merge": 2, "llamacpp": 2, "export": 2, "verify": 2,
    "ollama": 2,
    "heldout": 2, "sidebyside": 2, "compare": 2, "hub": 2,
    # 3 notebooks and commands: parameters, the pipeline's steps, the command line
    "params": 3, "config": 3, "pipeline": 3, "runner": 3, "notebook": 3, "two_adapters": 3,
    "demo": 3, "train_command": 3, "cli": 3, "__init__": 3, "__main__": 3,
}
# Imports that still point up a layer ("module imports other"), each being moved.
PENDING_LAYERS: set[str] = set()


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


def _imported(tree: ast.Module) -> list[tuple[int, str, list[str]]]:
    """(line, imported lorahelpers module, names taken from it) for every import in `tree`,
    lazy imports inside functions included."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            # `from .x import y` inside the package reads as `from lorahelpers.x import y`
            module = node.module or ""
            if node.level == 1:
                module = "lorahelpers" + ("." + module if module else "")
            if module == "lorahelpers":
                out += [(node.lineno, a.name, []) for a in node.names
                        if a.name in MODULES or a.name in LAYERS]
            elif module.startswith("lorahelpers."):
                out.append((node.lineno, module.split(".")[1], [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[1], []) for a in node.names
                    if a.name.startswith("lorahelpers.")]
    return out


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported lorahelpers module, names taken from it) for every import in `path`."""
    return [(module, names) for _, module, names in _imported(_parse(path))]


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


def imports_from_above(source: str, name: str) -> list[str]:
    """`name:line imports other` for each import in module `name`'s `source`, at its top or
    inside a function, of a module in a layer above `name`'s."""
    return [f"{name}:{line} imports {module}" for line, module, _ in _imported(ast.parse(source))
            if LAYERS.get(module, -1) > LAYERS[name]]


def test_the_layer_checker_finds_an_import_from_above_inside_a_function():
    source = ("from lorahelpers.errors import DataError\n"
              "from .cells import render_value\n"
              "def load(path):\n"
              "    from lorahelpers.params import Params\n"
              "    from lorahelpers import chat, pipeline\n"
              "    import lorahelpers.training as training\n"
              "    if path:\n"
              "        from .models import load_model\n")
    assert imports_from_above(source, "data") == [
        "data:4 imports params", "data:5 imports pipeline", "data:6 imports training",
        "data:8 imports models"]
    assert imports_from_above(source, "pipeline") == []


def test_every_module_has_a_layer():
    """A new module is placed in LAYERS, so the layer test sees it."""
    assert sorted({p.stem for p in PACKAGE.glob("*.py")} - set(LAYERS)) == []


def test_no_module_imports_from_a_layer_above_its_own():
    found = [use for path in sorted(PACKAGE.glob("*.py"))
             for use in imports_from_above(path.read_text(encoding="utf-8"), path.stem)]
    pending = [use for use in found
               if f"{use.split(':')[0]} imports {use.split()[-1]}" in PENDING_LAYERS]
    assert [use for use in found if use not in pending] == []


# The whole pipeline runs one way: runner.run_pipeline calls the notebook steps; the demo and
# the train command call the runner and none of the steps themselves.
RUNNER_CALLERS = {"demo": {"params", "runner"}, "train_command": {"config", "distributed", "runner"}}


def test_the_demo_and_the_train_command_run_the_pipeline_through_the_runner():
    for name, allowed in RUNNER_CALLERS.items():
        used = {m for m, _ in _imports(PACKAGE / f"{name}.py")}
        assert "runner" in used and used <= allowed, f"{name} imports {sorted(used - allowed)}"


def test_the_runner_calls_the_notebook_steps():
    steps = {n for m, names in _imports(PACKAGE / "runner.py") if m == "pipeline" for n in names}
    assert {"prepare_data", "load", "preview_training", "train_adapter", "export_and_verify",
            "register_or_skip"} <= steps
    scoring = {n for m, names in _imports(PACKAGE / "runner.py") if m == "heldout" for n in names}
    assert {"score_ggufs", "score_ollama", "compare"} <= scoring


def test_the_demo_is_the_runner_on_the_embedded_defaults(monkeypatch):
    import lorahelpers.runner
    from lorahelpers.demo import run_demo

    calls = []
    monkeypatch.setattr(lorahelpers.runner, "run_pipeline",
                        lambda params, **kw: calls.append((params, kw)) or "run")
    monkeypatch.setenv("LORAHELPERS_MAX_STEPS", "7")
    assert run_demo(output_dir="elsewhere", quants=None) == "run"
    (params, kw), = calls
    assert (params.kind, params.max_steps, params.output_dir) == ("alpaca", 7, "elsewhere")
    assert kw == {"export": True, "register": True, "progress": print}


# ---- at most four positional parameters ---------------------------------------------------


def positional_heavy(source: str, filename: str) -> list[str]:
    """Public module-level functions that take more than four parameters by position: past
    the fourth, a caller names what it passes (an argument-order bug on a nine-argument call
    was fixed once already)."""
    found = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            positional = node.args.posonlyargs + node.args.args
            if len(positional) > 4:
                found.append(f"{filename}:{node.lineno} {node.name} takes "
                             f"{len(positional)} by position")
    return found


def test_the_positional_checker_counts_past_four():
    source = ("def ok(a, b, c, d, *, e=1):\n    pass\n\ndef bad(a, b, c, d, e=1):\n    pass\n\n"
              "def _private(a, b, c, d, e):\n    pass\n")
    assert positional_heavy(source, "m.py") == ["m.py:4 bad takes 5 by position"]


def test_public_functions_take_at_most_four_arguments_by_position():
    found = [f for path in sorted(PACKAGE.glob("*.py"))
             for f in positional_heavy(path.read_text(), path.name)]
    assert found == []
