PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser repro test bench clean

setup: $(STAMP)

# Idempotent: the venv is rebuilt only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip check
	touch $(STAMP)

repro: setup
	. $(BIN)/activate && dvc repro

# The report's browser test drives the distribution's headless Chromium (root, as on CI).
browser:
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: setup browser
	. $(BIN)/activate && python -m pytest

bench: setup
	. $(BIN)/activate && python benchmarks/assemble.py

clean:
	rm -rf $(VENV)
