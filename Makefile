# The commands a newcomer needs: `make serve` and `make test`. Each builds .venv itself.
# `make test-matrix` (the test command CI runs, .ci/run) runs mypy and pytest on every supported
# CPython it finds (noxfile.py), after ruff and the docs check once.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test test-matrix lint typecheck docs-check pytest bench autobahn clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test,matrix]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/hypercorn --bind 127.0.0.1:8000 examples.hello:app

lint: $(STAMP)
	$(BIN)/ruff format --check hypercorn tests bench scripts examples noxfile.py
	$(BIN)/ruff check hypercorn tests bench scripts examples noxfile.py

typecheck: $(STAMP)
	$(BIN)/mypy

docs-check: $(STAMP)
	$(BIN)/python scripts/gen_settings_docs.py --check

pytest: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test: lint typecheck docs-check pytest

# Lint and the docs check once (they do not depend on the interpreter), then one nox venv per
# interpreter. Arguments for nox: make test-matrix NOX_ARGS="-p 3.13 -- -k driver"
test-matrix: lint docs-check
	$(BIN)/nox $(NOX_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py

# Every Autobahn|Testsuite case against the WebSockets (Python 2.7 needed); report in autobahn/.
autobahn: $(STAMP)
	$(BIN)/python scripts/autobahn_suite.py

clean:
	rm -rf $(VENV) .nox .mypy_cache .ruff_cache .pytest_cache .hypothesis
