#!/usr/bin/env bash
# Build the bundle that benchmarks/device/setup.sh installs on the lent GPU machine (Python 3.12,
# no package index): onnxruntime-gpu's wheel contents as a tar compressed with zstd -19
# --long=27, then a tar of GPUX's other locked dependencies (the webgpu extra's wgpu and WebGPU
# EP included, for benchmarks/webgpu.py) as cp312 manylinux wheels (minus
# those the image has, and onnxruntime, which the first part brings; with the CUDA build of
# onnxruntime-genai in place of the CPU one, as the [cuda] extra pairs them), split into parts of
# 56 MiB (a call carries at most 64 MiB, the working tree's 4 MiB included). Writes
# device-bundle/ (gitignored): part00.., manifest (ORT_BYTES, BUNDLE_SHA256) and a zstd binary.
#   bash benchmarks/device/make_bundle.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=device-bundle
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
UV=${UV:-$(command -v uv || echo "$HOME/.local/bin/uv")}
ORT_VERSION=${ORT_VERSION:-1.31.1}
rm -rf "$OUT" && mkdir -p "$OUT"

# The locked versions of the runtime dependencies, for Python 3.12 on Linux x86_64, minus what
# the lent image has in versions GPUX accepts (its pip list: ../shared and the device README).
# Leaving those out (39 MB) makes the bundle four calls instead of five, at 15-20 s each.
IMAGE_HAS="onnxruntime|onnxruntime-genai|numpy|onnx|pillow|sympy|mpmath|ml-dtypes|hf-xet|tokenizers"
IMAGE_HAS="$IMAGE_HAS|pygments|pyyaml|rich|huggingface-hub"
"$UV" export --frozen --no-dev --no-hashes --no-emit-project --extra cpu --extra webgpu --format requirements-txt \
  | grep -v -E "^($IMAGE_HAS)[=<> ]|^ *#|^-e" > "$WORK/requirements.txt"
# onnxruntime-genai links the ONNX Runtime of its build: the CUDA one goes with onnxruntime-gpu.
GENAI_VERSION=$("$UV" export --frozen --no-dev --no-hashes --no-emit-project --extra cuda \
  --format requirements-txt | sed -n -E 's/^onnxruntime-genai-cuda==([^ ;]+).*/\1/p')
echo "onnxruntime-genai-cuda==$GENAI_VERSION" >> "$WORK/requirements.txt"
python3 -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_34_x86_64 --platform linux_x86_64 --implementation cp \
  -d "$WORK/wheels" -r "$WORK/requirements.txt"
python3 -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 \
  --platform manylinux_2_28_x86_64 --implementation cp -d "$WORK/ort" "onnxruntime-gpu==$ORT_VERSION"

mkdir -p "$WORK/ort-site"
python3 -m zipfile -e "$WORK"/ort/*.whl "$WORK/ort-site"
tar cf - -C "$WORK/ort-site" . | zstd -q -19 --long=27 -T0 > "$WORK/ort.tar.zst"
tar cf "$WORK/wheels.tar" -C "$WORK/wheels" .
cat "$WORK/ort.tar.zst" "$WORK/wheels.tar" > "$WORK/bundle"
split -b 56M -d "$WORK/bundle" "$OUT/part"
{
  echo "ORT_BYTES=$(stat -c %s "$WORK/ort.tar.zst")"
  echo "BUNDLE_SHA256=$(sha256sum "$WORK/bundle" | cut -d' ' -f1)"
} > "$OUT/manifest"
cp "$(command -v zstd)" "$OUT/zstd"
ls -la "$OUT"

# perf_analyzer (tritonclient 2.51.0's binary, `make perf-analyzer`) for benchmarks/serve.py
# --perf-analyzer, with the two libraries it links that the lent image lacks (libcudart.so.12:
# the image's CUDA is 13; libb64), laid out as .venv-perf (benchmarks/perf_analyzer.py::find).
if [ -x .venv-perf/bin/perf_analyzer ]; then
  PERF=$(mktemp -d)
  mkdir -p "$PERF/bin" "$PERF/lib/python3.12/site-packages/nvidia/cuda_runtime/lib"
  cp .venv-perf/bin/perf_analyzer "$PERF/bin/"
  cp "$(readlink -f /usr/lib/x86_64-linux-gnu/libb64.so.0d)" "$PERF/lib/libb64.so.0d"
  cp .venv-perf/lib/python3*/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12 \
    "$PERF/lib/python3.12/site-packages/nvidia/cuda_runtime/lib/"
  tar cf - -C "$PERF" . | zstd -q -19 -T0 > "$OUT/perf.tar.zst"
  rm -rf "$PERF"
  ls -la "$OUT/perf.tar.zst"
fi
