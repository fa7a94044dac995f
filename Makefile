# The user's entry points. `make help` lists them; every setting below can be
# overridden on the command line (`make test PYTEST_ARGS="-k gates"`).
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# Settings: every `NAME ?= default` here can be set on the command line or in the
# environment; the `## ` line above each one is what `make help` prints for it.
## the Python that creates .venv (3.11 or newer)
PYTHON ?= python3
## the virtualenv every target runs in
VENV ?= .venv
PY := $(VENV)/bin/python
## extra pytest flags for `make test` / `make test-unit`, e.g. -k gates
PYTEST_ARGS ?=
## registered (and served) model name
MODEL_NAME ?= breast-cancer
## port of the local MLflow server (the demo's; MLFLOW_URL follows it)
MLFLOW_PORT ?= 5000

##@ General
.PHONY: help
help: ## Show this help: the targets, then every setting with its default.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m [NAME=value ...]\n"} \
	  /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)
	@printf "\n\033[1mSettings\033[0m (make NAME=value, or the environment)\n"
	@awk '/^## / { doc = substr($$0, 4); next } \
	  /^[A-Z0-9_]+ \?=/ { name = $$1; value = $$0; sub(/^[A-Z0-9_]+ \?= ?/, "", value); \
	    printf "  \033[36m%-29s\033[0m %s [%s]\n", name, doc, (value == "" ? "empty" : value) } \
	  { doc = "" }' $(MAKEFILE_LIST)

# The stamp depends on pyproject.toml, so a changed dependency list reinstalls.
$(VENV)/.installed: pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create .venv and install the project with its test extras (skipped when up to date).

# The demo's own stamp: the packages it runs (the `demo` extra), none of the test tools.
# A .venv that already has the test extras holds all of them, so it is only stamped.
$(VENV)/.installed-demo: pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@if [ -f $(VENV)/.installed ] && [ $(VENV)/.installed -nt pyproject.toml ]; then \
	  echo "==> $(VENV) already holds the test extras, which include everything the demo runs"; \
	else \
	  echo "==> First run: installing what the demo runs into $(VENV): MLflow, KServe, scikit-learn,"; \
	  echo "    ONNX Runtime and locust, about 1.2 GB. Roughly 2-6 minutes (docs/local-demo.md has the"; \
	  echo "    measured time); pip's progress follows. Later runs skip this step."; \
	  $(PY) -m pip install --upgrade pip; \
	  $(PY) -m pip install --progress-bar on -e '.[demo]'; \
	fi
	@touch $@

.PHONY: demo-venv
demo-venv: $(VENV)/.installed-demo ## Create .venv with only what `make demo` runs (skipped when up to date).

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
bench: venv ## Benchmarks with numbers for docs/performance.md (training time; serving throughput when present).
	$(PY) -m benchmarks

##@ Local (no cluster)
.PHONY: train-local
train-local: demo-venv ## Run one training job against MLFLOW_TRACKING_URI (default: the local demo server).
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-http://127.0.0.1:$(MLFLOW_PORT)} \
	  $(PY) -m training --model-name $(MODEL_NAME) $(TRAIN_ARGS)

.PHONY: clean
clean: ## Remove caches and build output (keeps .venv and demo data).
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info

##@ Local demo
# `make demo` runs the whole flow as local processes on 127.0.0.1 (docs/local-demo.md).
# State, logs and PID records live in DEMO_DIR; busy ports stop it before anything
# starts. Running it again reuses what still runs.
## state, logs and PID records of `make demo`
DEMO_DIR ?= .demo
## the demo InferenceService's HTTP port (the local router, split by traffic)
PREDICTOR_PORT ?= 8080
## the demo InferenceService's gRPC port (split per connection)
PREDICTOR_GRPC_PORT ?= 8081
## the demo's revision slot A, HTTP (stable and canary alternate between slots)
CANARY_PORT ?= 8082
## the demo's revision slot A, gRPC
CANARY_GRPC_PORT ?= 8083
## the demo's revision slot B, HTTP
SLOT_B_PORT ?= 8084
## the demo's revision slot B, gRPC
SLOT_B_GRPC_PORT ?= 8085
## the demo rollout controller's /metrics and /readyz port
CONTROLLER_PORT ?= 8086
## port of the local Prometheus (the demo's; PROMETHEUS_URL follows it)
PROMETHEUS_PORT ?= 9090
## the demo prediction log's throwaway PostgreSQL (when initdb is installed)
POSTGRES_PORT ?= 5433
## the demo's prediction log (python -m predictionlog: GET /predictions)
PREDICTIONLOG_PORT ?= 8087
# The demo's load tests and rollouts: users, seconds of the first run, soak of each rollout
# step, the schedule's first step (%).
## locust users of the demo's load tests
DEMO_USERS ?= 8
## seconds of the demo's first load test
DEMO_LOAD_SECONDS ?= 10
## seconds of traffic in each rollout step of the demo before its analysis
DEMO_CANARY_SECONDS ?= 12
## the demo rollout's first step (% of traffic to the canary)
DEMO_CANARY_WEIGHT ?= 10
# `make demo-down CLEAN=1` also deletes DEMO_DIR (the registry, artifacts, reports).
## `make demo-down CLEAN=1` also deletes DEMO_DIR
CLEAN ?=
# `make loadtest`: base URL, locust users, spawn rate (users/s), run time, report folder.
## `make loadtest`: base URL of the predictor
HOST ?= http://127.0.0.1:$(PREDICTOR_PORT)
## `make loadtest`: locust users
USERS ?= 10
## `make loadtest`: users started per second
SPAWN_RATE ?= $(USERS)
## `make loadtest`: run time
DURATION ?= 30s
## `make loadtest`: report folder (CSV, HTML, summary.json)
LOADTEST_OUT ?= $(DEMO_DIR)/loadtest/last
# More locust flags, e.g. --host-header breast-cancer-predictor.mlops.example.com --slo-p99-ms 200
# --slo-max-failure-ratio 0.001 --batch-size 32 --canary-host URL --canary-weight 10.
## more locust flags, e.g. --slo-p99-ms 200 --batch-size 32
LOADTEST_ARGS ?=

.PHONY: demo
demo: demo-venv ## Whole lifecycle locally: train, serve, load test, one version promoted and one rolled back by the rollout controller.
	$(PY) -m demo up --dir $(DEMO_DIR) --model-name $(MODEL_NAME) --mlflow-port $(MLFLOW_PORT) \
	  --predictor-port $(PREDICTOR_PORT) --predictor-grpc-port $(PREDICTOR_GRPC_PORT) \
	  --canary-port $(CANARY_PORT) --canary-grpc-port $(CANARY_GRPC_PORT) \
	  --slot-b-port $(SLOT_B_PORT) --slot-b-grpc-port $(SLOT_B_GRPC_PORT) \
	  --controller-port $(CONTROLLER_PORT) \
	  --postgres-port $(POSTGRES_PORT) --predictionlog-port $(PREDICTIONLOG_PORT) \
	  --prometheus-port $(PROMETHEUS_PORT) --users $(DEMO_USERS) \
	  --load-seconds $(DEMO_LOAD_SECONDS) --canary-seconds $(DEMO_CANARY_SECONDS) \
	  --canary-weight $(DEMO_CANARY_WEIGHT)

.PHONY: demo-down
demo-down: ## Stop every process `make demo` started (by PID); CLEAN=1 also deletes DEMO_DIR.
	$(PY) -m demo down --dir $(DEMO_DIR) $(if $(CLEAN),--clean)

.PHONY: loadtest
loadtest: demo-venv ## Headless locust against HOST (USERS, DURATION); CSV + HTML report in LOADTEST_OUT; SLOs set the exit code.
	@mkdir -p $(LOADTEST_OUT)
	$(PY) -m locust -f loadtest/locustfile.py --headless --only-summary \
	  --host $(HOST) -u $(USERS) -r $(SPAWN_RATE) -t $(DURATION) --model-name $(MODEL_NAME) \
	  --csv $(LOADTEST_OUT)/locust --html $(LOADTEST_OUT)/report.html \
	  --summary-json $(LOADTEST_OUT)/summary.json $(LOADTEST_ARGS)
	@echo "report: $(LOADTEST_OUT)/report.html  CSV: $(LOADTEST_OUT)/locust_*.csv  summary: $(LOADTEST_OUT)/summary.json"

##@ Rollout (kind, or the local demo with TARGET=local)
# `python -m rollout` reaches the cluster through your kubeconfig (kind sets the
# current context), MLflow and Prometheus through URLs: port-forward both first
# (docs/rollouts.md). With ROLLOUT_TARGET=local (TARGET=local for short) the same
# targets act on the local cluster `make demo` keeps in ROLLOUT_LOCAL_DIR. Exit codes: 0 ok/pass/promoted, 1 fail/rolled back, 2 refused or
# bad flags, 3 inconclusive, 4 Kubernetes/MLflow/Prometheus error, 5 rollback failed.
## where the rollout targets act: kubernetes (your kubeconfig) or local (`make demo`'s cluster); TARGET=local for short
ROLLOUT_TARGET ?= kubernetes
ifdef TARGET
ROLLOUT_TARGET := $(TARGET)
endif
## the local cluster's folder, with ROLLOUT_TARGET=local
ROLLOUT_LOCAL_DIR ?= $(DEMO_DIR)/cluster
## the InferenceService the rollout targets act on
ISVC_NAME ?= $(MODEL_NAME)
# Empty: the kubeconfig context's namespace.
## its namespace (empty: the kubeconfig context's)
ROLLOUT_NAMESPACE ?= $(NAMESPACE)
## kubeconfig context of the rollout targets (empty: the current one)
KUBE_CONTEXT ?=
## MLflow for the rollout targets (MLFLOW_TRACKING_URI if set)
MLFLOW_URL ?= $(or $(MLFLOW_TRACKING_URI),http://127.0.0.1:$(MLFLOW_PORT))
## Prometheus for `make analyze` and `make rollout`
PROMETHEUS_URL ?= http://127.0.0.1:$(PROMETHEUS_PORT)
# Which version `canary` and `rollout` roll out: a number, else the alias.
## version `make canary` / `make rollout` roll out (empty: CANARY_ALIAS)
CANARY_VERSION ?=
## alias rolled out when CANARY_VERSION is empty
CANARY_ALIAS ?= challenger
## `make canary`: the canary's traffic share (%)
CANARY_PERCENT ?= 10
## `make analyze`: range of the queries (a Prometheus duration)
ANALYSIS_WINDOW ?= 5m
# Extra PromQL label matchers when one Prometheus sees the model twice, e.g. namespace="mlops".
## extra PromQL label matchers, e.g. namespace="mlops"
ROLLOUT_MATCH ?=
## `make rollout`: traffic steps, the last 100 = promote
ROLLOUT_STEPS ?= 10,50,100
## `make rollout`: seconds after each step before its first analysis
ROLLOUT_SOAK ?= 120
## `make rollout`: seconds between analyses while inconclusive
ROLLOUT_INTERVAL ?= 30
## `make rollout`: seconds a step may stay inconclusive
ROLLOUT_STEP_TIMEOUT ?= 600
## `make rollback`: reason recorded on the rejected version
ROLLBACK_REASON ?= rolled back by the operator
# Extra flags for every rollout command, e.g. --dry-run or --min-requests 200.
## extra flags for every rollout command, e.g. --dry-run
ROLLOUT_ARGS ?=
# make answers 2 for any failing recipe, which would hide the tool's verdicts (1 fail,
# 3 inconclusive, 4 unreachable, 5 rollback failed): each rollout target writes the
# tool's own exit code to this file and says it on stderr, so a script runs
# `make analyze; code=$$(cat .rollout/exit-code)`, or calls `python -m rollout` itself.
## where the rollout targets write the tool's exit code (make's own is 2)
ROLLOUT_EXIT_FILE ?= .rollout/exit-code

ROLLOUT := $(PY) -m rollout
# $(call run_rollout,ARGS): the tool, its exit code kept in ROLLOUT_EXIT_FILE.
run_rollout = code=0; $(ROLLOUT) $(1) || code=$$?; mkdir -p $(dir $(ROLLOUT_EXIT_FILE)); \
  echo $$code > $(ROLLOUT_EXIT_FILE); \
  if [ $$code -ne 0 ]; then echo "python -m rollout exited $$code (make reports 2;" \
    "the tool's code is in $(ROLLOUT_EXIT_FILE))" >&2; fi; exit $$code
# Locally there is no kubeconfig: one folder, one namespace (the one its objects name).
ROLLOUT_CLUSTER = $(if $(filter local,$(ROLLOUT_TARGET)),--local-dir $(ROLLOUT_LOCAL_DIR), \
  $(if $(ROLLOUT_NAMESPACE),--namespace $(ROLLOUT_NAMESPACE)) \
  $(if $(KUBE_CONTEXT),--context $(KUBE_CONTEXT)))
ROLLOUT_WHERE = --model-name $(MODEL_NAME) --isvc $(ISVC_NAME) \
  --tracking-uri $(MLFLOW_URL) --prometheus-url $(PROMETHEUS_URL) \
  --target $(ROLLOUT_TARGET) $(ROLLOUT_CLUSTER)
ROLLOUT_JUDGE = $(if $(ROLLOUT_MATCH),--match '$(ROLLOUT_MATCH)')
CANARY_WHICH = $(if $(CANARY_VERSION),--version $(CANARY_VERSION),--alias $(CANARY_ALIAS))

.PHONY: rollout-status
rollout-status: venv ## Show stable and canary versions, the traffic split and the registry aliases.
	@$(call run_rollout,status $(ROLLOUT_WHERE) $(ROLLOUT_ARGS))

.PHONY: canary
canary: venv ## Start a canary: CANARY_VERSION (else @CANARY_ALIAS) takes CANARY_PERCENT % of traffic.
	@$(call run_rollout,start $(ROLLOUT_WHERE) $(CANARY_WHICH) --percent $(CANARY_PERCENT) $(ROLLOUT_ARGS))
	@echo "next: send traffic, then 'make analyze'; then 'make promote' or 'make rollback'"

.PHONY: analyze
analyze: venv ## Judge the canary against stable on Prometheus over ANALYSIS_WINDOW (exit 0/1/3).
	@$(call run_rollout,analyze $(ROLLOUT_WHERE) --window $(ANALYSIS_WINDOW) $(ROLLOUT_JUDGE) $(ROLLOUT_ARGS))

.PHONY: promote
promote: venv ## Send the canary 100 % (remove canaryTrafficPercent) and move @champion to it.
	@$(call run_rollout,promote $(ROLLOUT_WHERE) $(ROLLOUT_ARGS))

.PHONY: rollback
rollback: venv ## Send the canary 0 %, restore stable in the spec, tag the version rejected.
	@$(call run_rollout,rollback $(ROLLOUT_WHERE) --reason "$(ROLLBACK_REASON)" $(ROLLOUT_ARGS))

.PHONY: rollout
rollout: venv ## Canary through ROLLOUT_STEPS with an analysis after each; ends promoted or rolled back.
	@$(call run_rollout,auto $(ROLLOUT_WHERE) $(CANARY_WHICH) --steps $(ROLLOUT_STEPS) \
	  --soak $(ROLLOUT_SOAK) --interval $(ROLLOUT_INTERVAL) \
	  --step-timeout $(ROLLOUT_STEP_TIMEOUT) $(ROLLOUT_JUDGE) $(ROLLOUT_ARGS))

##@ Cluster (kind)
# The whole stack on a local kind cluster (docs/kubernetes.md):
#   make kind-up images deploy smoke    ...    make kind-down
# Every version is pinned here; each target is safe to re-run.
## the kind cluster's name
CLUSTER_NAME ?= mlops
## namespace of the Helm release
NAMESPACE ?= mlops
## the Helm release's name
RELEASE ?= mlops
## the kind binary
KIND ?= kind
## the kubectl binary
KUBECTL ?= kubectl
## the helm binary
HELM ?= helm
# docker, or podman (with KIND_EXPERIMENTAL_PROVIDER=podman for kind).
## docker, or podman (with KIND_EXPERIMENTAL_PROVIDER=podman)
CONTAINER_TOOL ?= docker
# kind v0.30.0's node image for Kubernetes 1.34 (Knative 1.21 needs 1.33 or newer).
## kind's node image (pinned by digest)
KIND_NODE_IMAGE ?= kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a
# The versions KServe 0.21 is tested with.
## cert-manager that `make kind-up` installs
CERT_MANAGER_VERSION ?= v1.17.0
## Knative Serving that `make kind-up` installs
KNATIVE_VERSION ?= v1.21.1
## Kourier (Knative's network layer) that `make kind-up` installs
KOURIER_VERSION ?= v1.21.0
## KServe that `make kind-up` installs
KSERVE_VERSION ?= v0.21.0
## kube-prometheus-stack chart that `make kind-up` installs
KUBE_PROMETHEUS_STACK_VERSION ?= 83.4.0
# One image for training, serving and MLflow; `kind.local/` is on Knative's list of
# registries whose tags it does not resolve (manifests/cluster/).
## the one image's repository (training, serving, MLflow)
IMAGE_REPO ?= kind.local/mlops-kserve
## its tag (default: the version in pyproject.toml)
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# Pin a digest for reproducible builds: python:3.11-slim-bookworm@sha256:...
## base image of the build; pin a digest for reproducible builds
BASE_IMAGE ?= python:3.11-slim-bookworm
# A pip configuration file handed to the build as a secret (custom index, CA bundle).
## a pip configuration file handed to the build as a secret
PIP_CONF ?=
# The kind profile: CPU requests that fit kind's 4-CPU node (empty: the chart's defaults).
## Helm values of the kind profile (empty: the chart's defaults)
KIND_VALUES ?= charts/mlops/ci/kind-values.yaml
# Extra flags for `helm upgrade --install`, e.g. --set training.settings.smoke=true.
## extra flags for `helm upgrade --install`
HELM_ARGS ?=
# Extra flags for the render of `make train`'s Job, e.g. -f values-with-another-dataset.yaml.
## extra flags for the Job `make train` renders (e.g. -f VALUES)
TRAIN_HELM_ARGS ?=
## how long `make deploy` waits for the release
DEPLOY_TIMEOUT ?= 20m
# Local port of the port-forward to Kourier that `make smoke` uses.
## local port of the port-forward to Kourier (`make smoke`)
INGRESS_PORT ?= 8088
KIND_CONTEXT := kind-$(CLUSTER_NAME)
KIND_ENV := CLUSTER_NAME=$(CLUSTER_NAME) KIND=$(KIND) KUBECTL=$(KUBECTL) HELM=$(HELM) \
  KIND_NODE_IMAGE=$(KIND_NODE_IMAGE) CERT_MANAGER_VERSION=$(CERT_MANAGER_VERSION) \
  KNATIVE_VERSION=$(KNATIVE_VERSION) KOURIER_VERSION=$(KOURIER_VERSION) \
  KSERVE_VERSION=$(KSERVE_VERSION) KUBE_PROMETHEUS_STACK_VERSION=$(KUBE_PROMETHEUS_STACK_VERSION) \
  RELEASE=$(RELEASE) NAMESPACE=$(NAMESPACE) KUBE_CONTEXT=$(KIND_CONTEXT) \
  ISVC_NAME=$(MODEL_NAME) MODEL_NAME=$(MODEL_NAME) INGRESS_PORT=$(INGRESS_PORT) PYTHON=$(PYTHON)

.PHONY: kind-up
kind-up: ## Create the kind cluster (if absent) and install cert-manager, Knative + Kourier, KServe, kube-prometheus-stack.
	$(KIND_ENV) scripts/kind-up.sh

.PHONY: images
images: ## Build the image (IMAGE_REPO:IMAGE_TAG) and `kind load` it into the cluster.
	$(CONTAINER_TOOL) build --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	  $(if $(PIP_CONF),--secret id=pipconf,src=$(PIP_CONF)) -t $(IMAGE_REPO):$(IMAGE_TAG) .
	$(KIND) load docker-image $(IMAGE_REPO):$(IMAGE_TAG) --name $(CLUSTER_NAME)
	@echo "next: make deploy"

.PHONY: deploy
deploy: ## helm upgrade --install the chart (the first install trains the first model) and wait for the InferenceService.
	$(HELM) --kube-context $(KIND_CONTEXT) upgrade --install $(RELEASE) charts/mlops \
	  --namespace $(NAMESPACE) --create-namespace --reset-then-reuse-values \
	  --set image.repository=$(IMAGE_REPO) --set-string image.tag=$(IMAGE_TAG) \
	  $(if $(KIND_VALUES),-f $(KIND_VALUES)) \
	  --set modelName=$(MODEL_NAME) --timeout $(DEPLOY_TIMEOUT) $(HELM_ARGS)
	$(KUBECTL) --context $(KIND_CONTEXT) -n $(NAMESPACE) wait inferenceservice/$(MODEL_NAME) \
	  --for=condition=Ready --timeout=$(DEPLOY_TIMEOUT)
	@echo "next: make smoke; helm test $(RELEASE) -n $(NAMESPACE) --logs; make train"

.PHONY: train
train: ## Run one more training Job on the cluster (registers a new version, moves @challenger).
	$(KIND_ENV) TRAIN_HELM_ARGS="$(TRAIN_HELM_ARGS)" scripts/kind-train.sh

.PHONY: smoke
smoke: ## One V2 request to the InferenceService through Kourier (a port-forward), printed.
	$(KIND_ENV) scripts/kind-smoke.sh

.PHONY: kind-down
kind-down: ## Delete the kind cluster and everything in it.
	$(KIND) delete cluster --name $(CLUSTER_NAME)

.PHONY: container-check
container-check: venv ## Build the image with podman (local Debian stand-in base) and run the chart's workloads as containers from their rendered pod specs (CI).
	IMAGE=$(IMAGE_REPO):$(IMAGE_TAG) PYTHON=$(PY) scripts/container-check.sh

.PHONY: image-check
image-check: container-check ## Former name of container-check.

.PHONY: test-e2e
test-e2e: venv ## The e2e tier on the kind cluster: kind-up, images, deploy, V2, canary, promote, rollback.
	$(PY) -m pytest -m e2e tests/e2e $(PYTEST_ARGS)
