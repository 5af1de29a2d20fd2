# gradserve developer entry points. The README's two commands are `make serve` and `make test`;
# both create .venv on first use and reinstall whenever pyproject.toml changes.

PYTHON      ?= python3.11
VENV        ?= .venv
HOST        ?= 127.0.0.1
PORT        ?= 8000
PYTEST_ARGS ?=
SERVE_ARGS  ?=

BIN   := $(VENV)/bin
STAMP := $(VENV)/.gradserve-installed

# Quieter, non-interactive pip (CI has no stdin and no terminal).
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

.DEFAULT_GOAL := help
.PHONY: help venv serve test openapi bench lint clean

help:
	@echo "make serve    run the service on $(HOST):$(PORT) (HOST=, PORT=, SERVE_ARGS= to override)"
	@echo "make test     run the test suite (PYTEST_ARGS= to pass options to pytest)"
	@echo "make openapi  regenerate openapi/openapi.json"
	@echo "make bench    run benchmarks/bench_*.py"
	@echo "make lint     ruff check"
	@echo "make clean    remove .venv and caches"

# The interpreter is created once; its own mtime is irrelevant (order-only below).
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# Reinstall whenever the dependency source (pyproject.toml) is newer than the last install.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

venv: $(STAMP)

serve: $(STAMP)
	$(BIN)/gradserve serve --host $(HOST) --port $(PORT) $(SERVE_ARGS)

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
