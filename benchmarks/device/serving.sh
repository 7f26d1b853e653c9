#!/usr/bin/env bash
# Issue 15's serving figures on the lent GPU machine: benchmarks/serve.py for ResNet-50 and
# BERT-base (symbolic batch, fp32) on the CUDA EP, gpux serve with 1 and with N workers, HTTP
# binary and gRPC (JSON too), against in-process ONNX Runtime in the same run. After the bundle
# parts are in $CARRY (benchmarks/device/setup.sh):
#   bash benchmarks/device/serving.sh resnet50_dyn "1 4"   # writes $OUT/serve-<model>-w<N>.json
set -euo pipefail
MODEL=${1:-resnet50_dyn}
WORKERS=${2:-"1 4"}
. benchmarks/device/setup.sh
mkdir -p /root/models
[ -f /root/models/$MODEL.onnx ] || python3 benchmarks/export_reference_models.py /root/models > /dev/null
export GPUX_HOME=/root/gpux-home
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for n in $WORKERS; do
  python3 benchmarks/serve.py --model /root/models/$MODEL.onnx --backend cuda --skip-peers \
    --sequence 128 --batch-sizes 1,8,16,32,64,128 --duration ${DURATION:-5} \
    --concurrency ${LEVELS:-1,8,32,64} --client-processes 4 --gpux-args "--workers $n" \
    --json "${OUT:-/tmp}/serve-$MODEL-w$n.json" 2>&1 | grep -v "^ *$"
done
