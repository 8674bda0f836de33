# Every target works from a fresh clone: the first one creates .venv and installs the project.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install run test lint ui sweep report bench clean
EXPERIMENT ?= approaches

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# The CPU wheel of torch lies on disk; installing it first keeps pip from fetching a CUDA build.
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## The main job: build (or reuse) the embedded demo and run one steering evaluation.
run: $(STAMP)
	$(PY) -m steering.run

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check steering tests benchmarks
	$(PY) -m ruff format --check steering tests benchmarks

ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

## A preset sweep (experiments/*.yaml) and its table rebuilt from MLflow.
sweep: $(STAMP)
	$(PY) -m steering.run -m +experiment=$(EXPERIMENT)

report: $(STAMP)
	$(PY) -m steering.report preset=$(EXPERIMENT)

bench: $(STAMP)
	$(PY) benchmarks/sweep.py

clean:
	rm -rf outputs multirun .pytest_cache
