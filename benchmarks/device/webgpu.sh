#!/usr/bin/env bash
# Issue 19 step 1 on the lent GPU machine: ONNX Runtime's WebGPU EP under its own options
# (layout, graph capture, fp16, nodes off the device) beside the CUDA EP, in one process
# (benchmarks/device/webgpu_options.py). After the bundle parts are in $CARRY
# (benchmarks/device/setup.sh), with the call carrying `.gl` (the Vulkan loader's .deb, as the
# device README says) and device-bundle/webgpu-ep.tar.zst (onnxruntime-ep-webgpu's wheel
# contents):
#   bash benchmarks/device/webgpu.sh [MODEL_NAMES]
# writes $OUT/webgpu-options.json and .txt.
set -euo pipefail
NAMES=${1:-resnet50_b1,resnet50_b32,bert_b1,bert_b32}
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
. benchmarks/device/setup.sh
ZSTD=$(command -v zstd || echo "$CARRY/zstd")
[ -d "$SITE/onnxruntime_ep_webgpu" ] ||
  "$ZSTD" -dc "$(ls "$CARRY"/webgpu-ep.tar.zst device-bundle/webgpu-ep.tar.zst 2>/dev/null | head -1)" | tar xf - -C "$SITE"
mkdir -p /root/models
[ -f /root/models/bert_b32.onnx ] ||
  python3 benchmarks/export_reference_models.py /root/models > /dev/null
timeout -s TERM "${RUN_LIMIT:-400}" python3 benchmarks/device/webgpu_options.py \
  --models /root/models --names "$NAMES" --seconds "${SECONDS_PER:-3}" \
  --json "${OUT:-/tmp}/webgpu-options.json" 2>&1 | tee "${OUT:-/tmp}/webgpu-options.txt"
