# Two commands do everything on a fresh machine:
#   make demo   set up, then fine-tune the embedded model, export, verify and register it
#   make test   set up (with test tools), then run every test, notebooks included
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup setup-dev demo test test-fast lint bench clean

setup:
	@bash scripts/setup.sh

setup-dev:
	@bash scripts/setup.sh --dev

demo: setup
	$(PY) -m lorahelpers demo

# Every test, the notebooks included, in two worker processes (one per core here; each test
# file stays in one worker); the 25 slowest are listed at the end. PYTEST_ARGS="-n 0" runs
# them in one process.
test: setup-dev
	$(PY) -m pytest --nbmake --nbmake-timeout=600 -n 2 --dist loadgroup --durations=25 $(PYTEST_ARGS)

# The tier to run while editing: no notebook, no test marked slow (a few minutes).
test-fast: setup-dev
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

lint: setup-dev
	$(PY) -m ruff check lorahelpers tests bench scripts

bench: setup-dev
	$(PY) bench/train_speed.py
	$(PY) bench/export.py

clean:
	rm -rf $(VENV) .pytest_cache
