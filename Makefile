# GPUX developer entry points. `make demo` and `make test` work on a fresh machine:
# they install uv if it is missing, then the locked environment.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
STAMP := $(VENV)/.synced-$(shell cat uv.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: help setup demo test check bench clean system-deps

help:
	@echo "make demo    install everything and run a real model end to end"
	@echo "make test    lint, type-check and run the test suite"
	@echo "make check   ruff + mypy only"
	@echo "make bench   overhead and preprocessing benchmarks against their baselines"

$(UV):
	python3 -m pip install --user --quiet uv

# Bytecode is compiled at install, as pip does: start-up time of every gpux command depends
# on it (and PYTHONDONTWRITEBYTECODE=1 would otherwise recompile everything on each run).
$(STAMP): uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --quiet --compile-bytecode --extra cpu --extra webgpu
	$(VENV)/bin/python -m compileall -q gpux tools
	rm -f $(VENV)/.synced-* && touch $@

setup: $(STAMP)

demo: setup
	$(UV) run --frozen --quiet --extra cpu --extra webgpu python -m tools.demo

check: setup
	$(UV) run --frozen --quiet --extra cpu --extra webgpu ruff check gpux tests tools benchmarks
	$(UV) run --frozen --quiet --extra cpu --extra webgpu ruff format --check gpux tests tools benchmarks
	$(UV) run --frozen --quiet --extra cpu --extra webgpu mypy

# lavapipe (software Vulkan) lets the WebGPU and GPU-discovery code run without a GPU;
# espeak-ng speaks test sentences for the audio pipeline and voice-activity tests;
# chromium is the headless browser that drives the server's playground page in its tests.
# docker-registry (the CNCF distribution registry) and htpasswd (apache2-utils) give the push/pull
# tests a real OCI registry on loopback, with and without authentication.
SYSTEM_PACKAGES := mesa-vulkan-drivers espeak-ng chromium docker-registry apache2-utils

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	[ -z "$$missing" ] || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; }

test: check system-deps
	$(UV) run --frozen --quiet --extra cpu --extra webgpu pytest -n 2 --dist loadfile

bench: setup
	$(UV) run --frozen --quiet --extra cpu --extra webgpu python benchmarks/overhead.py
	$(UV) run --frozen --quiet --extra cpu --extra webgpu python benchmarks/preprocess.py
	$(UV) run --frozen --quiet --extra cpu --extra webgpu python benchmarks/serve.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
