# gradserve developer entry points. The README's two commands are `make serve` and `make test`;
# both create .venv on first use and reinstall whenever pyproject.toml changes.

PYTHON      ?= python3.11
VENV        ?= .venv
PYTEST_ARGS ?=
SERVE_ARGS  ?=

BIN   := $(VENV)/bin
STAMP := $(VENV)/.gradserve-installed

# `make serve HOST=... PORT=...` passes --host/--port; without them the service's own settings
# apply (GRADSERVE_HOST, GRADSERVE_PORT, else 127.0.0.1:8000), so `GRADSERVE_PORT=9001 make serve`
# works. Only values given on make's command line count: a HOST or PORT that merely happens to be
# in the environment (some shells and platforms set them) must not override GRADSERVE_*.
cli_var = $(if $(filter command line,$(origin $(1))),$(2) $($(1)))
SERVE_FLAGS = $(call cli_var,HOST,--host) $(call cli_var,PORT,--port)

# The first run's install is serialised with flock (util-linux), so that `make serve` and
# `make test` started together do not both run pip in the same .venv; the second one waits, then
# finds the stamp up to date. Without flock (macOS) the install runs unlocked.
LOCK := $(if $(shell command -v flock 2>/dev/null),flock $(VENV)/.install.lock,)

# Quieter, non-interactive pip (CI has no stdin and no terminal).
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

.DEFAULT_GOAL := help
.PHONY: help venv serve test openapi bench lint clean

help:
	@echo "make serve    run the service (GRADSERVE_* settings, default 127.0.0.1:8000; HOST=, PORT=, SERVE_ARGS= to override)"
	@echo "make test     run the test suite (PYTEST_ARGS= to pass options to pytest)"
	@echo "make openapi  regenerate openapi/openapi.json"
	@echo "make bench    run benchmarks/bench_*.py"
	@echo "make lint     ruff check"
	@echo "make clean    remove .venv and caches"

# (Re)install whenever the dependency source (pyproject.toml) is newer than the last install. Under
# the lock the stamp is checked again: another make may have finished the install meanwhile.
$(STAMP): pyproject.toml
	@mkdir -p $(VENV)
	@$(LOCK) sh -ec '\
	  if [ -f $@ ] && [ $@ -nt pyproject.toml ]; then exit 0; fi; \
	  if [ ! -x $(BIN)/python ]; then \
	    echo "$(PYTHON) -m venv $(VENV)"; $(PYTHON) -m venv $(VENV); \
	    $(BIN)/python -m pip install --upgrade pip; \
	  fi; \
	  echo "$(BIN)/python -m pip install -e .[dev]"; $(BIN)/python -m pip install -e ".[dev]"; \
	  touch $@'

venv: $(STAMP)

serve: $(STAMP)
	$(BIN)/gradserve serve $(strip $(SERVE_FLAGS) $(SERVE_ARGS))

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

openapi: $(STAMP)
	$(BIN)/python -m service.openapi_export

bench: $(STAMP)
	@set -e; found=0; \
	for f in benchmarks/bench_*.py; do \
		[ -e "$$f" ] || continue; \
		found=1; echo "== $$f"; $(BIN)/python "$$f"; \
	done; \
	[ $$found -eq 1 ] || echo "no benchmarks/bench_*.py found"

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# On a host with an NVIDIA GPU: the gpu-marked tests and the engine and service benchmarks on the
# GPU, with the card (deploy/gpu-check.sh; GPU_CHECK_ARGS=--record appends to docs/benchmarks.md).
# It refuses, before installing anything, where there is no GPU.
.PHONY: gpu-check
GPU_CHECK_ARGS ?=
gpu-check:
	VENV=$(VENV) deploy/gpu-check.sh $(GPU_CHECK_ARGS)
