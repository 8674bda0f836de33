# Every target works from a fresh clone: the first one creates .venv and installs the project.
# `make run` (and ui, sweep, report, bench) install the runtime dependencies only; `make test` and
# `make lint` add the dev extras (pytest, ruff, import-linter, librosa, playwright). Each has its own stamp.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install run test lint ui sweep report bench clean
EXPERIMENT ?= approaches

$(RUNTIME): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# The CPU wheel of torch lies on disk; installing it first keeps pip from fetching a CUDA build.
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e .
	touch $(RUNTIME)

$(DEV): $(RUNTIME)
	$(PY) -m pip install -e ".[dev]"
	touch $(DEV)

install: $(RUNTIME)

## The main job: build (or reuse) the embedded demo and run one steering evaluation.
run: $(RUNTIME)
	$(BIN)/steering-run

test: $(DEV)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(DEV)
	$(PY) -m ruff check steering tests benchmarks hydra_plugins setup.py
	$(PY) -m ruff format --check steering tests benchmarks hydra_plugins setup.py
	$(BIN)/lint-imports

## The MLflow UI over the local store; one worker (uvicorn kills busy workers of a pool on a loaded machine).
ui: $(RUNTIME)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
		--host 127.0.0.1 --port 5000 --workers 1

## A preset sweep (experiments/*.yaml; a preset runs as a sweep) and its table rebuilt from MLflow.
sweep: $(RUNTIME)
	$(BIN)/steering-run +experiment=$(EXPERIMENT)

report: $(RUNTIME)
	$(BIN)/steering-report preset=$(EXPERIMENT)

bench: $(RUNTIME)
	$(PY) benchmarks/sweep.py

## Removes what runs write into the working directory, but not the MLflow store (mlflow.db,
## mlartifacts/, mlruns/) nor the demo cache (.cache/).
clean:
	rm -rf outputs multirun reports build dist *.egg-info .pytest_cache .ruff_cache
