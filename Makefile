# edgegw — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# uv installs from uv.lock; it is itself pinned and lives inside the venv, apart from the
# packages it manages (docs/architecture.md, "Installs").
UV_VERSION := 0.13.9
UV := $(VENV)/uv/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
SOURCES := pyproject.toml uv.lock setup.py $(wildcard edgegw/wasm/native/*.c edgegw/wasm/native/*.h)
RUN_STAMP := $(VENV)/.run-stamp
DEV_STAMP := $(VENV)/.dev-stamp
CONFIG ?= gateway.yaml.example

.PHONY: run test test-fast lint typecheck unit filters bench install lock lock-check system-deps \
	bench-deps clean

$(UV):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --target $(VENV)/uv uv==$(UV_VERSION)

# What running needs: [project] dependencies only. --inexact keeps a test install's extras.
$(RUN_STAMP): $(SOURCES) | $(UV)
	$(UV) sync --locked --inexact --no-default-groups
	touch $@

# Everything: runtime, tests and dev tools, exactly as locked.
$(DEV_STAMP): $(SOURCES) | $(UV)
	$(UV) sync --locked --group dev
	touch $@ $(RUN_STAMP)

install: $(DEV_STAMP)

# Re-resolve uv.lock from pyproject.toml's ranges (commit the result on purpose).
lock: | $(UV)
	$(UV) lock

# Fails when pyproject.toml and uv.lock disagree.
lock-check: | $(UV)
	$(UV) lock --check

filters: $(RUN_STAMP)
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
	echo "  the admin web UI: http://127.0.0.1:9901/ui/"; \
	echo ""; \
	$(PY) -m edgegw serve -c $(CONFIG)

# Debian packages a target needs: installed when missing and we are root, else named.
# $(1): commands to look for; $(2): the packages that provide them.
define apt_need
	@missing=""; for c in $(1); do command -v $$c >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -qq $(2) >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq $(2) >/dev/null)); \
	  else echo "missing: $(1); install them (apt-get install $(2))"; exit 1; fi; \
	fi
endef

# redis-server is needed by the store tests, systemd-analyze by tests/test_deploy.py,
# chromium by tests/ui (the admin UI in a browser, driven by Playwright).
system-deps:
	$(call apt_need,redis-server systemd-analyze chromium,redis-server systemd chromium)

# wrk drives the load (h2load the HTTP/2 load) and nginx is the backend in bench/.
bench-deps:
	$(call apt_need,wrk nginx h2load,wrk nginx-light nghttp2-client)

lint: $(DEV_STAMP) lock-check
	$(VENV)/bin/ruff check edgegw tests bench
	$(VENV)/bin/ruff format --check edgegw tests bench

typecheck: $(DEV_STAMP)
	$(VENV)/bin/mypy

# The suite on PYTEST_WORKERS pytest-xdist workers (most tests wait on processes and
# sockets, not the CPU); --dist loadfile keeps each test file on one worker, in file
# order: module fixtures start once, and tests/ui and tests/conformance rely on the
# order. PYTEST_WORKERS=0 runs it in this process (docs/contributing.md).
PYTEST_WORKERS ?= 4
unit: $(DEV_STAMP) system-deps filters
	$(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) --dist loadfile

test: lint typecheck unit

# The quick loop: in-process tests only (tests/unit), well under a minute.
test-fast: $(DEV_STAMP) filters
	$(VENV)/bin/pytest -q -m unit

# Side by side with Envoy (proxying, trivial and bundled filters), then call overheads,
# the store, fan-out and reload. Figures go to docs/benchmarks.md.
bench: $(DEV_STAMP) bench-deps filters
	$(PY) bench/run.py
	$(PY) bench/access_log.py
	$(PY) bench/wasm_calls.py
	$(PY) bench/chain.py
	$(PY) bench/clients.py
	$(PY) bench/balance.py
	$(PY) bench/filters.py
	$(PY) bench/rate_limit.py
	$(PY) bench/store.py
	$(PY) bench/aggregate.py
	$(PY) bench/reload.py
	$(PY) bench/tracing.py

clean:
	rm -rf $(VENV) filters/dist .mypy_cache .ruff_cache .pytest_cache
