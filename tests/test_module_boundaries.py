"""A name with a leading underscore is private to its module: no other lorahelpers module
imports it or reaches it as `module._name`. And a name lives in one module: another module
imports it from there, not from a module that only passes it on (a re-export), unless the
re-export is declared below with its reason."""

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


# Deliberate re-exports, "file:name" (a module __getattr__ as "file:__getattr__"): names a
# module imports only so that callers can import them from it too.
DECLARED = {
    "data.py:DataReport": "lorahelpers.data is the data layer's one entry point: loading lives "
                          "in tables.py and is importable from data (module docstring)",
    "data.py:save_upload": "the same; notebook.py and the tests import it from data",
    "data.py:sheet_names": "the same; notebook.py and the tests import it from data",
    "export.py:LlamaCppMissingError": "the errors export_gguf raises, importable from the "
                                      "stage a caller calls",
    "export.py:TokenizerNotRecognizedError": "the same",
    "export.py:UnsupportedArchitectureError": "the same",
    "export.py:converter_is_cached": "scripts/setup.sh and `doctor` ask export whether its "
                                    "converter is cached",
}
# Re-exports that only relay, waiting to be removed ("file:name").
PENDING_REEXPORTS: set[str] = set()


def _names_from_lorahelpers(node) -> list[str]:
    """The names an import binds to lorahelpers things ([] for another package's import)."""
    if isinstance(node, ast.ImportFrom):
        ours = node.level > 0 or (node.module or "").split(".")[0] == "lorahelpers"
        return [a.asname or a.name for a in node.names] if ours else []
    if isinstance(node, ast.Import):  # `import lorahelpers.x` binds lorahelpers
        return [a.asname or a.name.split(".")[0] for a in node.names
                if a.name.split(".")[0] == "lorahelpers"]
    return []


def reexports(source: str, filename: str) -> dict[str, int]:
    """{"file:name": line} for each lorahelpers name `source` imports and never uses, so it is
    there only to be imported from it (listing it in __all__ is no use), and
    {"file:__getattr__": line} for a module __getattr__ that hands out lorahelpers names."""
    tree = ast.parse(source, filename)
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    found = {f"{filename}:{name}": node.lineno for node in ast.walk(tree)
             for name in _names_from_lorahelpers(node) if name not in used}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and any(
                _names_from_lorahelpers(inner) for inner in ast.walk(node)):
            found[f"{filename}:__getattr__"] = node.lineno
    return found


def test_the_checker_finds_each_kind_of_re_export():
    source = ("from lorahelpers.tables import load_table, sheet_names\n"
              "from .cells import render_value as render\n"
              "import lorahelpers.plots\n"
              "from pandas import DataFrame\n"
              "__all__ = ['load_table', 'sheet_names']\n"
              "def read(path):\n"
              "    from lorahelpers.errors import DataError\n"
              "    return load_table(path)\n"
              "def __getattr__(name):\n"
              "    from lorahelpers import merge\n"
              "    return getattr(merge, name)\n")
    assert reexports(source, "m.py") == {
        "m.py:sheet_names": 1, "m.py:render": 2, "m.py:lorahelpers": 3, "m.py:DataError": 7,
        "m.py:__getattr__": 9}


def _reexports() -> dict[str, int]:
    return {key: line for path in sorted(PACKAGE.glob("*.py"))
            for key, line in reexports(path.read_text(encoding="utf-8"), path.name).items()}


def test_no_undeclared_re_export():
    """A re-export hides where a name lives: the importer imports it from its own module, or
    the re-export is declared in DECLARED with why."""
    found = _reexports()
    assert [f"{key} (line {line})" for key, line in found.items()
            if key not in DECLARED.keys() | PENDING_REEXPORTS] == []


def test_every_declared_re_export_is_still_there():
    found = _reexports()
    assert [key for key in [*DECLARED, *PENDING_REEXPORTS] if key not in found] == []
