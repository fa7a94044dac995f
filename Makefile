# The user's entry points. `make help` lists them; every setting below can be
# overridden on the command line (`make test PYTEST_ARGS="-k gates"`).
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

##@ Settings
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
MODEL_NAME ?= breast-cancer
MLFLOW_PORT ?= 5000

##@ General
.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	  /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

# The stamp depends on pyproject.toml, so a changed dependency list reinstalls.
$(VENV)/.installed: pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create .venv and install the project with its test extras (skipped when up to date).

##@ Development
.PHONY: test
test: venv ## Run the whole suite: unit, integration (real local servers), chart; e2e skips without a cluster.
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: venv ## Run only the tests that need no outside process.
	$(PY) -m pytest -m "not integration and not e2e" $(PYTEST_ARGS)

.PHONY: lint
lint: venv ## ruff (lint + format check) and mypy.
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

.PHONY: fmt
fmt: venv ## Format the code with ruff.
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

.PHONY: bench
bench: venv ## Benchmarks with numbers for the README (training time; serving throughput when present).
	$(PY) -m benchmarks

##@ Local (no cluster)
.PHONY: train-local
train-local: venv ## Run one training job against MLFLOW_TRACKING_URI (default: the local demo server).
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-http://127.0.0.1:$(MLFLOW_PORT)} \
	  $(PY) -m training --model-name $(MODEL_NAME) $(TRAIN_ARGS)

.PHONY: clean
clean: ## Remove caches and build output (keeps .venv and demo data).
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info

##@ Rollout (kind)
# `python -m serving.rollout` reaches the cluster through your kubeconfig (kind sets the
# current context), MLflow and Prometheus through URLs: port-forward both first (README,
# "Canary rollouts"). Exit codes: 0 ok/pass/promoted, 1 fail/rolled back, 2 refused or
# bad flags, 3 inconclusive, 4 Kubernetes/MLflow/Prometheus error, 5 rollback failed.
ISVC_NAME ?= $(MODEL_NAME)
# Empty: the kubeconfig context's namespace.
ROLLOUT_NAMESPACE ?= $(NAMESPACE)
KUBE_CONTEXT ?=
MLFLOW_URL ?= $(or $(MLFLOW_TRACKING_URI),http://127.0.0.1:$(MLFLOW_PORT))
PROMETHEUS_URL ?= http://127.0.0.1:9090
# Which version `canary` and `rollout` roll out: a number, else the alias.
CANARY_VERSION ?=
CANARY_ALIAS ?= challenger
CANARY_PERCENT ?= 10
ANALYSIS_WINDOW ?= 5m
ROLLOUT_STEPS ?= 10,50,100
ROLLOUT_SOAK ?= 120
ROLLOUT_INTERVAL ?= 30
ROLLOUT_STEP_TIMEOUT ?= 600
ROLLBACK_REASON ?= rolled back by the operator
# Extra flags for every rollout command, e.g. --dry-run or --min-requests 200.
ROLLOUT_ARGS ?=

ROLLOUT := $(PY) -m serving.rollout
ROLLOUT_WHERE = --model-name $(MODEL_NAME) --isvc $(ISVC_NAME) \
  --tracking-uri $(MLFLOW_URL) --prometheus-url $(PROMETHEUS_URL) \
  $(if $(ROLLOUT_NAMESPACE),--namespace $(ROLLOUT_NAMESPACE)) \
  $(if $(KUBE_CONTEXT),--context $(KUBE_CONTEXT))
CANARY_WHICH = $(if $(CANARY_VERSION),--version $(CANARY_VERSION),--alias $(CANARY_ALIAS))

.PHONY: rollout-status
rollout-status: venv ## Show stable and canary versions, the traffic split and the registry aliases.
	$(ROLLOUT) status $(ROLLOUT_WHERE) $(ROLLOUT_ARGS)

.PHONY: canary
canary: venv ## Start a canary: CANARY_VERSION (else @CANARY_ALIAS) takes CANARY_PERCENT % of traffic.
	$(ROLLOUT) start $(ROLLOUT_WHERE) $(CANARY_WHICH) --percent $(CANARY_PERCENT) $(ROLLOUT_ARGS)
	@echo "next: send traffic, then 'make analyze'; then 'make promote' or 'make rollback'"

.PHONY: analyze
analyze: venv ## Judge the canary against stable on Prometheus over ANALYSIS_WINDOW (exit 0/1/3).
	$(ROLLOUT) analyze $(ROLLOUT_WHERE) --window $(ANALYSIS_WINDOW) $(ROLLOUT_ARGS)

.PHONY: promote
promote: venv ## Send the canary 100 % (remove canaryTrafficPercent) and move @champion to it.
	$(ROLLOUT) promote $(ROLLOUT_WHERE) $(ROLLOUT_ARGS)

.PHONY: rollback
rollback: venv ## Send the canary 0 %, restore stable in the spec, tag the version rejected.
	$(ROLLOUT) rollback $(ROLLOUT_WHERE) --reason "$(ROLLBACK_REASON)" $(ROLLOUT_ARGS)

.PHONY: rollout
rollout: venv ## Canary through ROLLOUT_STEPS with an analysis after each; ends promoted or rolled back.
	$(ROLLOUT) auto $(ROLLOUT_WHERE) $(CANARY_WHICH) --steps $(ROLLOUT_STEPS) \
	  --soak $(ROLLOUT_SOAK) --interval $(ROLLOUT_INTERVAL) \
	  --step-timeout $(ROLLOUT_STEP_TIMEOUT) $(ROLLOUT_ARGS)
