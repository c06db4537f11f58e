# The README's commands. Each works on a fresh machine with Python 3.11 and pip: it creates .venv if missing,
# installs the pinned dependencies (torch==2.13.0 first, and kept pinned in every pip call so that pip never swaps in
# a CUDA build), registers the Jupyter kernel `trading-lib`, then runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: install run test gates nbdev-test pytest dashboard lab bench clean-venv browser prometheus image image-test docker-tools compose-config

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
test: install browser prometheus gates nbdev-test pytest

## browser: Debian's chromium for the Playwright dashboard tests (Playwright cannot download its own browser offline).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi

## prometheus: Debian's prometheus + promtool for the rule checks in `gates` and the Prometheus test (as chromium above).
prometheus:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus; \
	fi

gates: install prometheus
	promtool check config ops/prometheus/prometheus.yml
	promtool check rules ops/prometheus/alerts.yml
	promtool test rules ops/prometheus/alerts_test.yml
	@before="$$(git status --porcelain; git diff | sha1sum)"; \
	$(BIN)/nbdev-clean; \
	after="$$(git status --porcelain; git diff | sha1sum)"; \
	if [ "$$before" != "$$after" ]; then echo "GATE FAILED: nbdev-clean changed notebooks; run it and commit:"; git status --porcelain; exit 1; fi; \
	$(BIN)/nbdev-export; \
	after2="$$(git status --porcelain; git diff | sha1sum)"; \
	if [ "$$before" != "$$after2" ]; then echo "GATE FAILED: trading_lib/ is out of sync with nbs/; run nbdev-export and commit:"; git status --porcelain; exit 1; fi; \
	echo "nbdev gates: clean and in sync"
	$(BIN)/ruff check nbs tests bench
	$(BIN)/python -m pytest tests/test_layout.py -q -p no:cacheprovider -p no:nbval -k "cycle or flow or private or readme"

nbdev-test: install
	$(BIN)/nbdev-test --timing

pytest: install
	$(BIN)/python -m pytest tests -q -p no:cacheprovider -p no:nbval

## make dashboard: the Voila dashboards on 127.0.0.1 (port from settings.ini), token-protected.
dashboard: install
	$(BIN)/python -m trading_lib.oversight.server

## make lab: JupyterLab on 127.0.0.1, notebooks on the `trading-lib` kernel (--allow-root only when run as root).
LAB_PORT ?= 8888
lab: install
	$(BIN)/jupyter lab --ip=127.0.0.1 --port=$(LAB_PORT) --no-browser --MappingKernelManager.default_kernel_name=trading-lib \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

## make image: the deployable image (JupyterLab, Voila, the package, the trading-lib kernel; non-root user `trader`).
## Default base: a CUDA runtime image (GPU hosts); CPU hosts: make image BASE=python:3.11-slim-bookworm IMAGE=trading-lib:cpu
IMAGE ?= trading-lib
BASE  ?=
image:
	docker build $(if $(BASE),--build-arg BASE=$(BASE),) -t $(IMAGE) .

## make image-test: build on a Debian base made with debootstrap (no registry of images needed), then run a short
## train job and the dashboard health check inside the container (not part of make test; see README "Docker image").
docker-tools:
	@if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || ! command -v docker-compose >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap docker-compose; \
	fi

image-test: docker-tools
	./docker/image-test.sh

## make compose-config: validate docker-compose.yml (`docker compose config`, or docker-compose v1 where v2 is absent)
compose-config: docker-tools
	@export JUPYTER_TOKEN=$${JUPYTER_TOKEN:-validate-only} TRADING_DASHBOARD_TOKEN=$${TRADING_DASHBOARD_TOKEN:-validate-only}; \
	if docker compose version >/dev/null 2>&1; then docker compose config -q; else docker-compose config -q; fi \
	  && echo "docker-compose.yml: valid"

## make bench: the figures behind the speed targets (printed, not tests); run on one core: taskset -c 0 make bench
bench: install
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/pretrade.py
	$(BIN)/python bench/models.py
	$(BIN)/python bench/risk.py
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/replay.py
	$(BIN)/python bench/decision.py

clean-venv:
	rm -rf $(VENV)
