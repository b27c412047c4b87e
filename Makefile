# The README's two commands: `make demo` and `make test`. Both create .venv when missing and
# install everything the project needs (idempotent; a stamp file skips it when nothing changed).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
# Jobs run `python -m seesaw_lvis ...`: the venv comes first on PATH for every recipe.
export PATH := $(BIN):$(PATH)
PYTEST_ARGS ?=

.PHONY: demo test install dag clean-results help

help:
	@echo "make demo   install, then run the pipeline on the embedded synthetic dataset"
	@echo "make test   install, then run the test suite"

install: $(STAMP)

# torch first (the CPU wheel on this machine's disk), then mmcv 2.1.0 from its sdist with
# ops: no wheel exists for torch 2.13; its setup.py imports pkg_resources and torch, so it
# builds with --no-build-isolation and setuptools<70 (~14 min on 2 cores; pip caches the
# wheel, later installs take seconds). Finally the package itself, editable, with pins.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0 numpy==1.26.4
	if ! $(BIN)/python -c "import mmcv.ops" 2>/dev/null; then \
	  $(BIN)/pip install --quiet "setuptools<70" wheel && \
	  MMCV_WITH_OPS=1 MAX_JOBS=2 $(BIN)/pip install --no-build-isolation mmcv==2.1.0 numpy==1.26.4; \
	fi
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip check
	touch $(STAMP)

demo: install
	@echo "== seesaw_lvis demo: the whole pipeline on the embedded synthetic dataset =="
	@echo "== (dataset, scale and rows from params/; the default scale is 'mini') =="
	snakemake --cores all all
	python -m seesaw_lvis bench jobs || echo "(no Snakemake run that completed on record: reports/bench/jobs.json not written)"
	snakemake --cores 1 report --report reports/report.html
	@echo
	@echo "Tables:       reports/tables/table{1,2}.{md,csv,tex}"
	@echo "Plots:        reports/figures/*.{png,svg}   (HTML report: reports/report.html)"
	@echo "Metrics:      results/eval/<row>/metrics.json; headline numbers of every row: dvc metrics show"
	@echo "MLflow runs:  mlflow ui --backend-store-uri sqlite:///mlflow.db"
	@echo "Job times:    reports/bench/jobs.json"

test: install
	python -m pytest $(PYTEST_ARGS)

dag: install
	snakemake -n all
	dvc dag

clean-results:
	rm -rf data results logs reports/figures reports/tables .snakemake
