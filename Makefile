# Two commands do everything on a fresh machine:
#   make demo   set up, then fine-tune the embedded model, export, verify and register it
#   make test   set up (with test tools), then run every test, notebooks included
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup setup-dev demo test test-fast test-no-bf16 test-colab-set lint bench clean

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

# The training tests again as on a CPU without bf16 (LORAHELPERS_CPU_BF16=0: the runtime picks
# float32 where it would pick bf16 autocast), so that a suite passing here passes on every CPU.
TRAINING_TESTS := tests/test_training.py tests/test_train_command.py tests/test_loss_path.py \
	tests/test_keep.py tests/test_learning_effect.py
test-no-bf16: setup-dev
	LORAHELPERS_CPU_BF16=0 $(PY) -m pytest -n 2 --dist loadgroup $(TRAINING_TESTS) $(PYTEST_ARGS)

# The non-slow tier under the versions Colab's GPU runtime resolves beside Unsloth
# (transformers 5.17, trl 1.15, ...), in .venv-colab; CI runs it after `make test`.
test-colab-set:
	@bash scripts/colab_set_tests.sh

lint: setup-dev
	$(PY) -m ruff check lorahelpers tests bench scripts

bench: setup-dev
	$(PY) bench/train_speed.py
	$(PY) bench/export.py
	$(PY) bench/data_speed.py

clean:
	rm -rf $(VENV) .venv-colab .pytest_cache
