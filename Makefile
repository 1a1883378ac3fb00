# maerak — the user's verbs. `make help` lists them.
# `make reproduce` and `make test` create the environment themselves when it is missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
RUN := ./run.sh
# Empty PROFILE lets ./run.sh choose (competition with data/raw + a GPU, else sample).
PROFILE ?=
PROFILE_ARG := $(if $(PROFILE),--profile $(PROFILE),)
GPUS ?= 1

.DEFAULT_GOAL := help
.PHONY: help setup lock model validate prepare train-stage1 merge train-stage2 submit evaluate \
        reproduce verify test test-e2e bench lint clean

help: ## list the verbs
	@awk 'BEGIN{FS=":.*## "} /^[a-z0-9-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: PROFILE=sample|competition (default: auto), GPUS=N (stage 2 launcher)"

$(STAMP): requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (the torch==2.13.0 CPU build on this disk is for 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -r requirements.lock
	touch $@

setup: $(STAMP) ## create .venv with the pinned environment (done for you by reproduce and test)

lock: ## re-resolve requirements.in into requirements.lock (torch stays out of the lock)
	rm -rf /tmp/maerak-lock && $(PYTHON) -m venv /tmp/maerak-lock
	/tmp/maerak-lock/bin/pip install --quiet torch==2.13.0 -r requirements.in
	( echo "# Exact versions resolved from requirements.in with torch==2.13.0 on Python 3.11 (see Makefile: lock)."; \
	  /tmp/maerak-lock/bin/pip freeze | grep -v '^torch==' ) > requirements.lock

model: $(STAMP) ## build the embedded default model under models/ (offline, once)
	$(RUN) model

validate: $(STAMP) ## validate the profile's official-format files
	$(RUN) validate $(PROFILE_ARG)

prepare: $(STAMP) ## data in -> stage-1/stage-2 training files + report
	$(RUN) prepare $(PROFILE_ARG)

train-stage1: $(STAMP) ## Axolotl stage 1 (QLoRA)
	$(RUN) train --stage 1 $(PROFILE_ARG)

merge: $(STAMP) ## merge the stage-1 LoRA into the base model
	$(RUN) merge $(PROFILE_ARG)

train-stage2: $(STAMP) ## Axolotl stage 2 (full fine-tune of the merged model); GPUS=N for several GPUs
	$(RUN) train --stage 2 --gpus $(GPUS) $(PROFILE_ARG)

submit: $(STAMP) ## score test with the stage-2 checkpoint, write the submission
	$(RUN) submit $(PROFILE_ARG)

evaluate: $(STAMP) ## dev accuracy overall and per category, with the report
	$(RUN) evaluate $(PROFILE_ARG)

reproduce: $(STAMP) ## everything: validate, prepare, stage 1, merge, stage 2, submit, evaluate, manifest
	$(RUN) reproduce $(PROFILE_ARG)

verify: $(STAMP) ## judges: recompute hashes, re-run submit, compare with the manifest
	$(RUN) verify $(PROFILE_ARG)

test: $(STAMP) ## the test suite (what CI runs)
	$(VENV)/bin/python -m pytest -q tests

test-e2e: $(STAMP) ## slow end-to-end checks on the embedded model (not in `make test`)
	$(VENV)/bin/python -m pytest -q -m e2e -o addopts="" tests

bench: $(STAMP) ## benchmarks: dedup, inference and training-step throughput ratios
	$(VENV)/bin/python bench/dedup.py
	$(VENV)/bin/python bench/inference.py
	$(VENV)/bin/python bench/train_step.py

lint: $(STAMP) ## ruff and hadolint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint Dockerfile

clean: ## remove outputs (keeps .venv, models and data)
	rm -rf outputs/*
