#!/usr/bin/env bash
# Issue 16's GPU figures on the lent GPU: benchmarks/generate.py on the CUDA
# provider with onnxruntime-genai-cuda, single stream (GPUX's Python API and gpux serve against a
# bare genai loop) and 32 concurrent streamed chats through gpux serve (batched by
# gpux/runtime/generative_batch.py) against the same chats in process and as one static genai batch.
# After the bundle parts are in $CARRY (benchmarks/device/setup.sh; make_bundle.sh carries
# onnxruntime-genai-cuda in place of the CPU build):
#   bash benchmarks/device/generate.sh [MODEL_DIR]
# MODEL_DIR: a genai folder made for CUDA, e.g. SmolLM2-135M-Instruct converted here with
#   GPUX_CONVERT_PYTHON=.venv-convert/bin/python python -m tools.smollm2 --target cuda
# and carried in parts; without it, a random Llama of SmolLM2-135M's sizes (fp32) is made on the
# machine (tools/make_tiny_llm.py), whose ratios carry over but not its tokens/s.
# Writes $OUT/generate-single.json|.txt and $OUT/generate-32.json|.txt; each run is bounded by
# RUN_LIMIT seconds so that a slow one leaves the other's figures.
set -euo pipefail
MODEL_DIR=${1:-}
. benchmarks/device/setup.sh
python3 -c "import onnxruntime_genai as og; print('onnxruntime-genai', og.__version__, 'cuda', og.is_cuda_available())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ -z "$MODEL_DIR" ]; then
  MODEL_DIR=/root/models/random-llama-smollm2-shape
  [ -f "$MODEL_DIR/genai_config.json" ] || python3 -m tools.make_tiny_llm "$MODEL_DIR" \
    --hidden 576 --heads 9 --intermediate 1536 --layers 30 --context 2048 --vocab 49152
fi
export GPUX_HOME=/root/gpux-home
# GEN_RUNS: "NAME CONCURRENCY TOKENS" runs, comma-separated (default both).
IFS=, read -ra RUNS <<< "${GEN_RUNS:-single 1 256,32 32 128}"
for run in "${RUNS[@]}"; do
  set -- $run
  name="${OUT:-/tmp}/generate-$1"
  timeout -s TERM "${RUN_LIMIT:-300}" python3 benchmarks/generate.py --model "$MODEL_DIR" \
    --backend cuda --skip-llama --rounds "${ROUNDS:-3}" --tokens "$3" \
    --concurrency "$2" --chat-tokens "$3" --json "$name.json" 2>&1 | tee "$name.txt" ||
    echo "run $1: exit $?"
done
