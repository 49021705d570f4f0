# Two commands for a fresh machine (see README): `make repro` and `make test`.
# Both create .venv from pyproject.toml first if it is missing or older than pyproject.toml.
VENV ?= .venv
EXTRAS ?= cpu,dev          # EXTRAS=gpu,dev on a CUDA machine (tensorflow[and-cuda])
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

# Stages run `python stages/...`: put the venv first so DVC's shell finds its interpreter.
export PATH := $(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup repro test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(strip $(EXTRAS))]"
	touch $@

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/phantom_difficulty.py
	$(BIN)/python benchmarks/input_pipeline.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/mc_dropout.py
	$(BIN)/python benchmarks/gradcam.py

clean:
	rm -rf data models predictions .checkpoints mlflow.db mlartifacts
