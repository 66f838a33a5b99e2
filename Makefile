# Two set-up commands from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Build requirements installed into the venv so the package builds without isolation
# (faster, and incremental through build/{wheel_tag}).
BUILD_DEPS := "scikit-build-core>=0.10" "nanobind>=2.0" "pyarrow==26.0.1" cmake ninja

.PHONY: demo test install install-test bench clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	touch $@

install: $(VENV)/.created
	$(PIP) install --quiet $(BUILD_DEPS)
	$(PIP) install --quiet --no-build-isolation .

install-test: $(VENV)/.created
	$(PIP) install --quiet $(BUILD_DEPS)
	$(PIP) install --quiet --no-build-isolation ".[test]"

demo: install
	$(PY) -m arrowquant.demo

test: install-test
	$(PY) -m pytest -q tests

bench: install
	$(PY) bench/bench_engine.py

clean:
	rm -rf build $(VENV) .pytest_cache
