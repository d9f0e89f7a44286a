# One Makefile whose targets CI calls unchanged. `make demo` and `make test` are the two
# set-up commands the README promises: each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: help demo test lint typecheck bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)  ## simulate a shop into ./demo-workspace and run the whole pipeline
	$(BIN)/clm demo --workspace demo-workspace

test: $(STAMP)  ## lint, type-check and run the whole test suite (Spark included)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench: $(STAMP)  ## the benchmarks behind docs/benchmarks.md
	$(BIN)/python bench/bench_pipeline.py

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-workspace

screenshots: $(STAMP)  ## PNGs of every dashboard page (Debian's chromium) into docs/screenshots/
	$(BIN)/python bench/screenshots.py --out docs/screenshots
.PHONY: screenshots
