"""A name with a leading underscore is private to its module: no other lorahelpers module
imports it or reaches it as `module._name`."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lorahelpers"
# files.py is being folded into the data stage, which removes its use of tables._check_header.
PENDING: set[str] = set()


def private_uses(source: str, filename: str) -> list[str]:
    """`from lorahelpers.x import _y`, `from .x import _y` and `x._y` for a lorahelpers module
    x imported in `source`."""
    tree = ast.parse(source, filename)
    modules: set[str] = set()  # local names bound to lorahelpers modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            ours = node.level > 0 or (node.module or "").split(".")[0] == "lorahelpers"
            for alias in node.names if ours else ():
                if alias.name.startswith("_"):
                    found.append(f"{filename}:{node.lineno} imports {alias.name}")
                elif node.module in (None, "lorahelpers"):
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lorahelpers."):
                    modules.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                and node.value.id in modules):
            found.append(f"{filename}:{node.lineno} uses {node.value.id}.{node.attr}")
    return sorted(found, key=lambda use: int(use.split(":")[1].split()[0]))


def test_the_checker_finds_each_kind_of_crossing():
    source = ("from lorahelpers.verify import _Stats, verify\nfrom .inference import _scorer\n"
              "from lorahelpers import models\nimport lorahelpers.plots as plots\n"
              "models._materialize(1)\nplots._as_history\nmodels.cache_dir()\n"
              "self._x\nfrom llama_cpp import _logger\n")
    assert private_uses(source, "m.py") == [
        "m.py:1 imports _Stats", "m.py:2 imports _scorer",
        "m.py:5 uses models._materialize", "m.py:6 uses plots._as_history"]


def test_no_private_name_crosses_a_module():
    found = [use for path in sorted(PACKAGE.glob("*.py")) if path.name not in PENDING
             for use in private_uses(path.read_text(encoding="utf-8"), path.name)]
    assert found == []
