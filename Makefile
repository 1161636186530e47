# Two commands do everything on a fresh machine: `make up` and `make test`.
# Every tool comes from the Python packages in pyproject.toml, installed into .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help bootstrap gen up test lint fmt breaking unit integration clean

help:
	@echo "make up        bootstrap, generate code, start the mesh and say where to reach it"
	@echo "make test      bootstrap, generate code, then every check: lint, buf lint, buf breaking, tests"
	@echo "make gen       generate the Python package and descriptor set from protos/"
	@echo "make lint      ruff, mypy and buf lint"
	@echo "make fmt       format the code"
	@echo "make clean     remove generated code and the virtual environment"

# The environment is rebuilt whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[dev]'
	touch $@

bootstrap: $(STAMP)

gen: bootstrap
	$(BIN)/meshctl proto gen

up: gen
	$(BIN)/meshctl up

lint: gen
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/meshctl proto lint

breaking: bootstrap
	$(BIN)/meshctl proto breaking

fmt: bootstrap
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint breaking
	$(BIN)/pytest

clean:
	rm -rf gen $(VENV) .pytest_cache .mypy_cache .ruff_cache
