"""nbmake runs every cell of the notebooks with fewer training steps than their defaults: what
the defaults learn is asserted in tests/test_learning_effect.py (the demo runs the Alpaca
notebook's steps, and the table notebook's CPU defaults are trained there), so here the point
is that each cell works. A LORAHELPERS_MAX_STEPS already set wins."""

from __future__ import annotations

import os

KEY, STEPS = "LORAHELPERS_MAX_STEPS", "8"
_saved: dict[str, str | None] = {}


def pytest_runtest_setup(item):
    # The notebook's kernel starts during the test and inherits this environment.
    _saved[item.nodeid] = os.environ.get(KEY)
    os.environ.setdefault(KEY, STEPS)


def pytest_runtest_teardown(item):
    before = _saved.pop(item.nodeid, None)
    if before is None:
        os.environ.pop(KEY, None)
    else:
        os.environ[KEY] = before
