# Two commands do everything on a fresh machine: `make up` and `make test`.
# Every tool comes from the Python packages in pyproject.toml, installed into .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help bootstrap gen up test lint fmt breaking render lock image unit integration clean

help:
	@echo "make up        bootstrap, generate code, start the mesh and say where to reach it"
	@echo "make test      bootstrap, generate code, then every check: lint, buf lint, buf breaking, tests"
	@echo "make gen       generate the Python package and descriptor set from protos/"
	@echo "make lint      ruff, mypy and buf lint"
	@echo "make fmt       format the code"
	@echo "make render    write docker-compose.yml, .env, envoy/, deploy/compose/ and deploy/k8s/ from mesh.yaml"
	@echo "make lock      re-pin constraints.txt (the image's and the tests' packages)"
	@echo "make image     build the container image (needs a Docker engine)"
	@echo "make clean     remove generated code and the virtual environment"

# The environment is rebuilt whenever pyproject.toml or constraints.txt changes. The
# packages the services run on are pinned by constraints.txt, as in the container image,
# so the tests run what the image runs.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev]'
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
	$(BIN)/lint-imports
	$(BIN)/meshctl proto lint

# Against the released contracts (contracts/released.binpb), not a commit: a break stays
# refused however many commits follow it, in CI's clean clone as anywhere.
breaking: bootstrap
	$(BIN)/meshctl proto breaking

render: gen
	$(BIN)/meshctl render compose
	$(BIN)/meshctl render k8s
	$(BIN)/meshctl render envoy

lock:
	scripts/lock-constraints

image:
	docker build --build-arg IMAGE_REVISION=$$(git rev-parse HEAD) \
		-t shop-mesh:$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) .

fmt: bootstrap
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint breaking
	$(BIN)/pytest

clean:
	rm -rf gen $(VENV) .pytest_cache .mypy_cache .ruff_cache
