# Two commands for a fresh machine (see README): `make repro` and `make test`.
# Both create .venv from the lock file first if it is missing or older than the lock.
VENV ?= .venv
EXTRAS ?= cpu,dev          # EXTRAS=gpu,dev on a CUDA machine (tensorflow[and-cuda])
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
# EXTRAS picks the lock: requirements/cpu.lock (.[cpu,dev,jax]) or requirements/gpu.lock (.[gpu,dev]).
comma := ,
TF_EXTRA := $(filter cpu gpu,$(subst $(comma), ,$(strip $(EXTRAS))))
LOCK := requirements/$(TF_EXTRA).lock
ifneq ($(words $(TF_EXTRA)),1)
$(error EXTRAS=$(strip $(EXTRAS)) must name exactly one of cpu, gpu (e.g. EXTRAS=gpu,dev))
endif

# Stages run `python stages/...`: put the venv first so DVC's shell finds its interpreter.
export PATH := $(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup lock lock-check repro test lint bench clean

setup: $(STAMP)

# Exactly the locked versions, each checked against its hash; then cxr itself, without deps.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# Recompile both locks after editing pyproject's dependencies (needs the package index).
# Keeps every pin that still fits; LOCK_ARGS=--upgrade (or --upgrade-package NAME) moves on.
lock: | $(STAMP)
	$(BIN)/python tools/lock.py compile $(LOCK_ARGS)

# Fails when a lock and pyproject.toml disagree (offline: the digest; online: also the pins).
lock-check: | $(STAMP)
	$(BIN)/python tools/lock.py check

# The params file and the inputs it names are checked first: a missing key or file is one
# clear error instead of DVC's.
repro: setup
	$(BIN)/python -m cxr.params params.yaml
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
	$(BIN)/python benchmarks/full_size.py

clean:
	rm -rf data models predictions .checkpoints mlflow.db mlartifacts
