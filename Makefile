# Two commands on a fresh clone:  make demo  |  make test
# Each creates .venv if missing and installs the pinned toolchain (pyproject.toml) before it runs.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out/demo
PYTEST_ARGS ?=

.PHONY: install demo test doctor clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the pins change. torch==2.13.0 is the CPU build on this machine's disk (docs/toolchain.md).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	$(BIN)/slmops doctor
	touch $(STAMP)

install: $(STAMP)

doctor: $(STAMP)
	$(BIN)/slmops doctor

demo: $(STAMP)
	$(BIN)/slmops demo --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf out .slmops
