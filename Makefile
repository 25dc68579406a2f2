# Two commands do everything on a fresh machine:
#   make demo   set up, then fine-tune the embedded model, export, verify and register it
#   make test   set up (with test tools), then run every test, notebooks included
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup setup-dev demo test lint bench clean

setup:
	@bash scripts/setup.sh

setup-dev:
	@bash scripts/setup.sh --dev

demo: setup
	$(PY) -m lorahelpers demo

test: setup-dev
	$(PY) -m pytest --nbmake --nbmake-timeout=600 $(PYTEST_ARGS)

lint: setup-dev
	$(PY) -m ruff check lorahelpers tests bench

bench: setup-dev
	$(PY) bench/train_speed.py
	$(PY) bench/export.py

clean:
	rm -rf $(VENV) .pytest_cache
