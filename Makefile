# WattsUp: two commands on a fresh machine.
#   make demo   - venv, install, fetch Kafka with Maven, start the whole pipeline (Ctrl-C stops it)
#   make test   - the same set-up, then the unit and real-broker integration tests
# DEMO_SECONDS=N make demo runs N seconds and exits 0.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install system-packages kafka-jars registry dashboard-assets demo test unit bench clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests drive: headless Chromium (dashboard end-to-end test; the browser is never
# downloaded by a test tool), promtool and prometheus (Prometheus configuration checks; the Grafana panel
# test runs a real Prometheus), docker-compose (validates docker-compose.yml; no engine needed) and
# PostgreSQL's server (the dashboard replica tests start their own server with initdb and pg_ctl in a temp
# dir; Debian keeps those under /usr/lib/postgresql/<version>/bin, and is told not to create and start
# a system cluster of its own). Installed only when missing.
SYSTEM_TOOLS := chromium:chromium promtool:prometheus prometheus:prometheus docker-compose:docker-compose
system-packages:
	@missing=$$(for pair in $(SYSTEM_TOOLS); do command -v $${pair%%:*} >/dev/null || echo $${pair##*:}; done); \
	if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then missing="$$missing postgresql"; fi; \
	missing=$$(echo $$missing); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		command -v apt-get >/dev/null || { echo "error: need $$missing (apt-get not found)" >&2; exit 1; }; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		case " $$missing " in *" postgresql "*) $$SUDO mkdir -p /etc/postgresql-common/createcluster.d && \
			echo "create_main_cluster = false" | $$SUDO tee /etc/postgresql-common/createcluster.d/wattsup-no-main-cluster.conf >/dev/null;; esac; \
		$$SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

kafka-jars: install
	$(BIN)/wattsup broker fetch

registry: install
	$(BIN)/wattsup registry fetch

# The dashboard page: npm packages pinned in package-lock.json, bundled by esbuild into dashboard/static
# (committed, so the service works without Node). Rebuilt only when a source is newer than the output;
# without npm the committed build is kept (with a warning).
FRONTEND := dashboard/frontend
FRONTEND_SOURCES := $(shell find $(FRONTEND)/src -type f 2>/dev/null) $(FRONTEND)/build.mjs $(FRONTEND)/package.json
NPM_MISSING := echo "warning: npm not found (install Node.js 20 and npm); keeping the committed dashboard/static" >&2
$(FRONTEND)/node_modules/.package-lock.json: $(FRONTEND)/package-lock.json
	@if command -v npm >/dev/null; then cd $(FRONTEND) && npm ci --no-audit --no-fund; else $(NPM_MISSING); fi
dashboard/static/app.js: $(FRONTEND_SOURCES) $(FRONTEND)/node_modules/.package-lock.json
	@if command -v npm >/dev/null; then cd $(FRONTEND) && npm run --silent build; \
	elif [ -f dashboard/static/index.html ]; then $(NPM_MISSING); \
	else echo "error: npm not found and dashboard/static is not built; install Node.js 20 and npm" >&2; exit 1; fi
	touch $@
dashboard-assets: dashboard/static/app.js

demo: kafka-jars dashboard-assets
	$(BIN)/wattsup demo

# The layer contract (pyproject.toml [tool.importlinter]) first: an import that runs upward fails the build.
# Three pytest-xdist workers, a module's tests in one worker, the slowest modules first and the tests that
# bound a wall-clock duration alone (tests/conftest.py). Most of an integration test is waiting for brokers
# and services, so on 2 cores a third worker still shortens the run (README "Tests");
# PYTEST_XDIST="-n 0" runs everything in one process.
PYTEST_XDIST ?= -n 3
test: kafka-jars registry system-packages dashboard-assets
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

unit: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_XDIST) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .cache var .pytest_cache test-artifacts
