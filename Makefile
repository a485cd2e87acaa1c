# EMR Guard: `make run` starts the gateway for development, `make test` runs every test.
# Both set up what they need first (Python venv, Medplum dev server, OPA binary).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OPA = $(shell scripts/ensure-opa.sh)
# HAPI FHIR JPA (devserver/hapi): the reference server, a second real upstream for the tests.
HAPI_JAR = $(shell scripts/ensure-hapi.sh)

.PHONY: setup run test lint policy-test bench token clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

devserver/node_modules/.installed: devserver/package.json devserver/package-lock.json
	cd devserver && npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed devserver/node_modules/.installed
	@scripts/ensure-opa.sh >/dev/null

# make run [UPSTREAM=medplum|hapi]: the gateway in front of a local FHIR server with synthetic patients.
run: setup
	UPSTREAM_KIND=$(or $(UPSTREAM),medplum) scripts/dev-run.sh

PY_SOURCES := gateway plugins opa_policies devtools bench tests

lint: setup
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)
	$(VENV)/bin/mypy

policy-test: setup
	$(OPA) fmt --fail --list opa_policies
	$(OPA) check --strict opa_policies
	$(OPA) test opa_policies --coverage --threshold 90 --format json > /tmp/emrguard-opa-coverage.json || \
	  { $(OPA) test opa_policies -v; echo "opa test: failing tests or coverage under 90%"; exit 1; }
	@$(PY) -c "import json;print('opa test: policy coverage %.1f%%' % json.load(open('/tmp/emrguard-opa-coverage.json'))['coverage'])"

test: setup lint policy-test
	EMRGUARD_OPA_BIN=$(OPA) EMRGUARD_HAPI_JAR=$(HAPI_JAR) $(VENV)/bin/pytest -q

# make bench [UPSTREAM=medplum|hapi] [BENCH_ARGS="--seconds 3 --workloads mix"]: bench/README.md
bench: setup
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	EMRGUARD_OPA_BIN=$(OPA) $(PY) -m bench.run --upstream $(or $(UPSTREAM),medplum) $(BENCH_ARGS)

# A development token for `make run`: make token ROLE=nurse [DEPT=cardiology] [SUB=...]
token: $(VENV)/.installed
	@$(PY) -m devtools.tokens --role $(or $(ROLE),physician) $(if $(DEPT),--dept $(DEPT)) $(if $(SUB),--sub $(SUB))

clean:
	rm -rf $(VENV) devserver/node_modules var .pytest_cache
