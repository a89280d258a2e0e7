# Two commands a newcomer needs: `make up` (run the service) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv up test lint clean protos

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[all,dev]'
	touch $@

venv: $(VENV)/.installed

test: venv
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# ARGS passes options through, e.g. `make up ARGS="--port 9000 --config my.json"`
up: venv
	$(BIN)/tunescout up $(ARGS)

# Regenerates the gRPC code (tunescout/{fingerprinter,matcher,results}/v1/) from protos/. Never edit it by hand.
protos: venv
	$(BIN)/python protos/generate.py
