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

.PHONY: demo test install pipeline dag clean-results help

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
	@echo "== seesaw_lvis demo: embedded synthetic dataset, scale from params/pipeline.yaml =="
	@echo "== the pipeline so far: data -> stats (training, evaluation and tables land with issues 3-6) =="
	snakemake --cores all all
	@echo
	@echo "Dataset:        data/$$(python -c "import yaml;print(yaml.safe_load(open('params/pipeline.yaml'))['dataset'])")/"
	@echo "Class stats:    results/stats/class_freq.{csv,json}"
	@echo "Plots:          reports/figures/class_frequency.{png,svg}"

test: install
	python -m pytest $(PYTEST_ARGS)

dag: install
	snakemake -n all
	dvc dag

clean-results:
	rm -rf data results logs reports/figures reports/tables .snakemake
