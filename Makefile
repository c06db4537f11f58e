# The README's commands. Each works on a fresh machine with Python 3.11 and pip: it creates .venv if missing,
# installs the pinned dependencies (torch==2.13.0 first, and kept pinned in every pip call so that pip never swaps in
# a CUDA build), registers the Jupyter kernel `trading-lib`, then runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: install run test gates nbdev-test pytest dashboard lab bench clean-venv browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python requirements.txt pyproject.toml
	$(PIP) $(TORCH)
	$(PIP) $(TORCH) -r requirements.txt
	$(PIP) $(TORCH) --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name trading-lib --display-name "Python (trading-lib)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

## make run: walk-forward training of the forecasting models, then the backtest, on the embedded real data (CPU).
run: install
	$(BIN)/trading-lib run train --no-progress
	$(BIN)/trading-lib run backtest --no-progress

## make test: the nbdev gates (clean, export in sync, notebooks run), then pytest's integration tests.
test: install browser gates nbdev-test pytest

## browser: Debian's chromium for the Playwright dashboard tests (Playwright cannot download its own browser offline).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi

gates: install
	@before="$$(git status --porcelain; git diff | sha1sum)"; \
	$(BIN)/nbdev-clean; \
	after="$$(git status --porcelain; git diff | sha1sum)"; \
	if [ "$$before" != "$$after" ]; then echo "GATE FAILED: nbdev-clean changed notebooks; run it and commit:"; git status --porcelain; exit 1; fi; \
	$(BIN)/nbdev-export; \
	after2="$$(git status --porcelain; git diff | sha1sum)"; \
	if [ "$$before" != "$$after2" ]; then echo "GATE FAILED: trading_lib/ is out of sync with nbs/; run nbdev-export and commit:"; git status --porcelain; exit 1; fi; \
	echo "nbdev gates: clean and in sync"

nbdev-test: install
	$(BIN)/nbdev-test --timing

pytest: install
	$(BIN)/python -m pytest tests -q -p no:cacheprovider -p no:nbval

## make dashboard: the Voila dashboards on 127.0.0.1 (port from settings.ini), token-protected.
dashboard: install
	$(BIN)/python -m trading_lib.oversight.server

lab: install
	$(BIN)/jupyter lab --ip=127.0.0.1

## make bench: the figures behind the speed targets (printed, not tests); run on one core: taskset -c 0 make bench
bench: install
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/pretrade.py
	$(BIN)/python bench/models.py
	$(BIN)/python bench/risk.py
	$(BIN)/python bench/sweep.py

clean-venv:
	rm -rf $(VENV)
