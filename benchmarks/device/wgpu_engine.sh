#!/usr/bin/env bash
# Issue 19 on the lent GPU machine: benchmarks/webgpu.py — GPUX's wgpu engine against ONNX
# Runtime's WebGPU EP (GPUX's webgpu backend, with step 1's defaults: NHWC, graph capture, the
# IsNaN rewrite) and its CUDA EP, ResNet-50 and BERT-base at b1 and b32, one process, with the
# engine's per-op GPU times from timestamp queries. After the bundle parts are in $CARRY
# (benchmarks/device/setup.sh; make_bundle.sh includes the webgpu extra: wgpu and the EP), with
# the call carrying `.gl` (the Vulkan loader and GL vendor libraries: benchmarks/device/webgpu.sh):
#   bash benchmarks/device/wgpu_engine.sh
# writes $OUT/webgpu.json and $OUT/webgpu.txt.
set -euo pipefail
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
. benchmarks/device/setup.sh
mkdir -p /root/models
[ -f /root/models/bert_b32.onnx ] ||
  python3 benchmarks/export_reference_models.py /root/models > /dev/null
python3 -c "import wgpu; [print(a.summary) for a in wgpu.gpu.enumerate_adapters_sync()]"
timeout -s TERM "${RUN_LIMIT:-420}" python3 benchmarks/webgpu.py --models /root/models \
  --runs "${RUNS:-50}" --json "${OUT:-/tmp}/webgpu.json" 2>&1 | tee "${OUT:-/tmp}/webgpu.txt"
