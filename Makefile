# The few commands people type. Every target sets up .venv first (CPU torch pinned first, so
# pip never pulls a CUDA build), so each works on a fresh clone.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: setup train test bench lint
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,launchers,optuna,mujoco,dmc,sb3]"
	touch $@

train: setup  ## a real training run on the default env (state gimbal, DrQ-v2, constant LR)
	$(BIN)/python train_curriculum.py $(ARGS)

test: setup  ## the whole suite, two workers (most tests are subprocess runs of the CLI)
	$(BIN)/python -m pytest -q -n 2 $(ARGS)

bench: setup
	$(BIN)/python benchmarks/schedule_overhead.py
	$(BIN)/python benchmarks/loop_overhead.py
	$(BIN)/python benchmarks/sweep_scaling.py

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
