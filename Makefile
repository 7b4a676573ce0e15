# The two commands a newcomer needs: `make serve` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck docs-check pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/hypercorn --bind 127.0.0.1:8000 examples.hello:app

lint: $(STAMP)
	$(BIN)/ruff format --check hypercorn tests bench scripts examples
	$(BIN)/ruff check hypercorn tests bench scripts examples

typecheck: $(STAMP)
	$(BIN)/mypy

docs-check: $(STAMP)
	$(BIN)/python scripts/gen_settings_docs.py --check

pytest: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test: lint typecheck docs-check pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
