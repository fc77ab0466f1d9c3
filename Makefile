# slo-autoscaler — every target documents itself: `make help`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
STAMP       := $(VENV)/.installed
TOOLS_BIN   := $(CURDIR)/.tools/bin
export PATH := $(TOOLS_BIN):$(CURDIR)/$(VENV)/bin:$(PATH)
PYTEST_ARGS ?=
QUICK       ?=

DISTRIBUTIONS := contract operator model_server bench
INSTALL_INPUTS := requirements/constraints.txt requirements/dev.txt $(foreach d,$(DISTRIBUTIONS),$(d)/pyproject.toml)

.PHONY: help
help: ## List the targets with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): $(INSTALL_INPUTS)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -c requirements/constraints.txt "setuptools>=68" pip
	$(PIP) install -q --disable-pip-version-check --no-build-isolation --config-settings editable_mode=compat -c requirements/constraints.txt \
		$(foreach d,$(DISTRIBUTIONS),-e ./$(d)) -r requirements/dev.txt
	@touch $@

.PHONY: install
install: $(STAMP) ## Create .venv with pinned packages (torch==2.13.0 CPU) and install prometheus and helm
	@scripts/install-prometheus.sh
	@if [ -x scripts/install-helm.sh ]; then scripts/install-helm.sh "$(TOOLS_BIN)"; fi

.PHONY: lock
lock: ## Re-pin requirements/constraints.txt from what .venv holds now
	@{ echo "# Pinned versions for development and CI: make install passes this file as pip's constraints."; \
	   echo "# Regenerate with: make lock"; \
	   $(PIP) freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+cpu/torch==\1/'; } > requirements/constraints.txt

.PHONY: lint
lint: install ## ruff, mypy (strict) and the import-linter layer contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: format
format: install ## Rewrite the code with ruff's formatter and import sorting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: test
test: install lint ## Lint, then run every test (unit, component, local loop; e2e only with `make e2e`)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected"; exit 0; fi; exit $$rc

.PHONY: crds
crds: install ## Generate crds/inferenceservice.yaml from the pydantic API models (and the chart's copy)
	$(PY) -m slo_operator.crdgen --output crds/inferenceservice.yaml
	cp crds/inferenceservice.yaml charts/slo-autoscaler/files/crds/inferenceservice.yaml

.PHONY: demo
demo: install ## Run the whole SLO loop locally: Prometheus, model servers, controller, load (QUICK=1: ~1 min)
	$(PY) -m slo_demo $(if $(QUICK),--quick,)

.PHONY: bench-server
bench-server: install ## Model server benchmark: raw model, no batching, dynamic batching, LitServe
	$(PY) -m model_server.bench

.PHONY: bench-policy
bench-policy: install ## Simulate every policy on every trace; print the table, write PNGs under bench-out/
	$(PY) -m slo_sim.bench

.PHONY: e2e
e2e: ## kind cluster end to end: e2e-up, e2e-test, e2e-down (needs Docker, kind, kubectl, helm)
	$(MAKE) e2e-up
	$(MAKE) e2e-test; rc=$$?; $(MAKE) e2e-down; exit $$rc

.PHONY: e2e-up
e2e-up: install ## Create the kind cluster, build and load images, install Prometheus, CRDs and the chart
	tests/e2e/up.sh

.PHONY: e2e-test
e2e-test: install ## Run the e2e tests against the running kind cluster
	$(PY) -m pytest tests/e2e --e2e $(PYTEST_ARGS)

.PHONY: e2e-down
e2e-down: ## Delete the kind cluster
	tests/e2e/down.sh

.PHONY: clean
clean: ## Remove the virtualenv, tool binaries and generated outputs
	rm -rf $(VENV) .tools build demo-out bench-out .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
