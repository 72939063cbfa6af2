# tradefleet: `make run` replays a real recorded day through the fleet; `make test` runs lint and tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv browser qemu web test-web run test test-unit test-integration test-ib-smoke test-deploy lint fmt bench schemas clean

# torch==2.13.0 (the CPU build) goes in first, alone: anything that depends on torch then finds it
# installed instead of resolving a CUDA build. Every package is pinned through constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,ml,ib,sentiment,rl]'
	@touch $(STAMP)

venv: $(STAMP)

# --- the dashboard (web/): built with npm from its lock, served by the control service at / ---
WEB_SRC := $(shell find web/src -type f) web/index.html web/package.json web/vite.config.ts web/tsconfig.json
WEB_DIST := web/dist/index.html
WEB_DEPS := web/node_modules/.package-lock.json

$(WEB_DEPS): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	@touch $(WEB_DEPS)

# Rebuilt only when a source is newer than the build (or there is none).
$(WEB_DIST): $(WEB_DEPS) $(WEB_SRC)
	cd web && npm run build
	@touch $(WEB_DIST)

web: $(WEB_DIST)

# The dashboard's own tests (vitest in jsdom) and its type check.
test-web: $(WEB_DEPS)
	cd web && npm run typecheck && npm test

run: $(STAMP) web
	@mkdir -p var
	$(VENV)/bin/tradefleet up --speed 0 --summary var/run-summary.json

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The backtest report test opens report.html in Debian's Chromium (Playwright drives it; no
# browser download). Without root or apt the test skips locally and fails under CI.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium could not be installed: the report rendering test will skip"

# The int8 sentiment model's AVX2 check runs it under qemu's Haswell CPU (qemu-user); without
# root or apt the test skips locally and fails under CI.
qemu:
	@command -v qemu-x86_64 >/dev/null || { apt-get update -qq && apt-get install -y -qq qemu-user >/dev/null; } \
		|| echo "qemu-user could not be installed: the AVX2 int8 test will skip"

# Two workers (pytest-xdist), each test to whichever is free: most integration tests wait on
# processes, NATS and PostgreSQL, so two share the 2-core machines without starving each other.
TEST_WORKERS ?= 2

test: lint browser qemu web test-web
	$(VENV)/bin/tradefleet schemas export --check
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

# Against a real paper TWS / IB Gateway (never in CI): TRADEFLEET_IB_SMOKE=127.0.0.1:4002 make test-ib-smoke
test-ib-smoke: $(STAMP)
	$(PY) -m pytest -q -rs tests/integration/test_ib_paper_smoke.py

# The fleet as containers (tests/deploy/run.sh): the engine (installed and started if missing),
# a local debootstrap base (once, cached), the image from the Dockerfile on that base, then the
# compose stack with deploy/docker/compose.test.yml (tests only) replaying the sample day; all
# removed afterwards. Skips, saying why, where no container engine can start.
test-deploy: web
	tests/deploy/run.sh

bench: $(STAMP)
	$(PY) -m bench.run_all

schemas: $(STAMP)
	$(VENV)/bin/tradefleet schemas export

clean:
	rm -rf var .mypy_cache .ruff_cache web/dist
