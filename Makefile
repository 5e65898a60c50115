PY ?= python3
LOCAL_VENV := .venv
VENV := $(LOCAL_VENV)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser repro icu-full pull test bench clean

# `make <target> VENV=/path/to/env` runs in an environment you already have, as it is: it is never
# created, upgraded or reinstalled here (tests use it to run `make pull` in a copy of the repo).
ifeq ($(origin VENV),command line)
setup:
	@test -x $(BIN)/python || { echo "error: VENV=$(VENV) has no $(BIN)/python" >&2; exit 2; }
else
setup: $(STAMP)
endif

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

# ICU-Bench's paper scale (1000 profiles, 100 sequential forget tasks; about 3 h on 2 cores) as a
# DVC experiment, then its small results into results/icu-full (mmunlearn/release.py).
icu-full: setup
	. $(BIN)/activate && dvc exp run -S scale=full && \
	python -m mmunlearn.release results/icu-full --command "make icu-full (dvc exp run -S scale=full)"

# Checks the default remote's endpoint, credentials and bucket first (one line and exit 2 if any
# is missing), so no download starts without access; then fetches every output of dvc.lock, or
# with TARGETS="finetune oracle" those stages' outputs and everything they depend on.
pull: setup
	. $(BIN)/activate && python -m mmunlearn.remote check && dvc pull $(if $(TARGETS),--with-deps $(TARGETS))

# The report's browser test drives the distribution's headless Chromium (root, as on CI).
browser:
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: setup browser
	. $(BIN)/activate && python -m pytest

bench: setup
	. $(BIN)/activate && python benchmarks/assemble.py

# Only this checkout's own .venv, never an environment given as VENV=.
clean:
	rm -rf $(LOCAL_VENV)
