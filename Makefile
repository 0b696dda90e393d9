# edgegw — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= gateway.yaml.example

.PHONY: run test lint typecheck unit filters bench install system-deps clean

$(STAMP): pyproject.toml setup.py edgegw/wasm/_fastcall.c edgegw/wasm/_phase.c \
	edgegw/wasm/_phase_types.c edgegw/wasm/_phase_chain.c edgegw/wasm/_phase.h
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

filters: $(STAMP)
	$(PY) -m edgegw filters build

# Starts the demo microservices and the gateway in front of them; Ctrl-C stops both.
run: filters
	@$(PY) -m edgegw check -c $(CONFIG)
	@$(PY) -m edgegw demo & DEMO=$$!; trap "kill $$DEMO 2>/dev/null" EXIT INT TERM; \
	echo ""; \
	echo "edgegw is starting with $(CONFIG). Try:"; \
	echo "  curl -i http://127.0.0.1:8080/users/42"; \
	echo "  curl -i http://127.0.0.1:8080/orders?user=42"; \
	echo "  curl -i http://127.0.0.1:8080/shop/cart"; \
	echo "  curl -i http://127.0.0.1:8080/api/profile/42"; \
	echo "  curl -i -H \"Authorization: Bearer \$$($(PY) -m edgegw demo --token 42)\" http://127.0.0.1:8080/account/users/42"; \
	echo "  curl -s http://127.0.0.1:9901/metrics | grep edgegw_"; \
	echo "  curl -s http://127.0.0.1:9901/admin/config"; \
	echo ""; \
	$(PY) -m edgegw serve -c $(CONFIG)

# redis-server is needed by the store tests; install it when missing and we may.
system-deps:
	@if ! command -v redis-server >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -qq redis-server >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)); \
	  else echo "redis-server missing: install it (apt-get install redis-server)"; exit 1; fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check edgegw tests bench
	$(VENV)/bin/ruff format --check edgegw tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP) system-deps filters
	$(VENV)/bin/pytest -q

test: lint typecheck unit

# Side by side with Envoy (proxying, trivial and bundled filters), then call overheads,
# the store, fan-out and reload. Figures go to docs/benchmarks.md.
bench: filters
	$(PY) bench/run.py
	$(PY) bench/wasm_calls.py
	$(PY) bench/chain.py
	$(PY) bench/clients.py
	$(PY) bench/filters.py
	$(PY) bench/store.py
	$(PY) bench/aggregate.py
	$(PY) bench/reload.py

clean:
	rm -rf $(VENV) filters/dist .mypy_cache .ruff_cache .pytest_cache
