#!/usr/bin/env bash
# Issue 15's serving figures on the lent GPU machine: benchmarks/serve.py for ResNet-50 and
# BERT-base (symbolic batch, fp32) on the CUDA EP, gpux serve with 1 and with N workers, HTTP
# binary and gRPC (JSON too), against in-process ONNX Runtime in the same run. After the bundle
# parts are in $CARRY (benchmarks/device/setup.sh):
#   bash benchmarks/device/serving.sh "resnet50_dyn:1 resnet50_dyn:4 bert_dyn:1 resnet50_dyn:4e"
# (N workers; "Ne": N front-end workers and one shared engine process, --shared-engine; a third
# field sets GPUX_INFERENCE_THREADS, the model calls in flight: "resnet50_dyn:4e:4"; a fourth,
# "g", builds the image with runtime.cuda.cuda_graphs, a CUDA graph per batch size: "...:4e:4:g";
# a fifth sets GPUX_SWITCH_INTERVAL_US, the interpreter's switch interval: "...:8e:2:g:500";
# a sixth the batcher's delay in ms, 2 if not given: "...:8e:2:g::0.5"; other GPUX_ settings
# exported before it reach the servers, e.g. GPUX_GRAPH_COPIES=2)
# writes $OUT/serve-<model>-w<N>.json and .txt per run; each run is bounded by RUN_LIMIT seconds
# so that a slow one leaves the others' figures (the machine's minutes are counted).
# CODE=<folder with another checkout's gpux, benchmarks and tools> runs that code instead (an A/B
# in one call: `git archive HEAD gpux benchmarks tools | tar x -C device-bundle/old`, carried),
# TAG=<word> is added to the file names; PROTOCOLS="HTTP binary,gRPC" leaves out the other rows
# (benchmarks/serve.py --protocols).
# PERF_ANALYZER=1 adds benchmarks/serve.py --perf-analyzer: HTTP binary and gRPC again with
# Triton's perf_analyzer as the client (carried as perf.tar.zst, see make_bundle.sh).
# PY_SPY=<path of a py-spy binary> adds benchmarks/serve.py --profile: every server process's
# GIL-holding samples during the HTTP binary rows, as <name>-prof.tgz (the call brings back
# at most 8 files).
set -euo pipefail
RUNS=${1:-"resnet50_dyn:1 resnet50_dyn:4"}
. benchmarks/device/setup.sh
mkdir -p /root/models
[ -f /root/models/bert_dyn.onnx ] ||
  python3 benchmarks/export_reference_models.py /root/models --dynamic-only > /dev/null
export GPUX_HOME=/root/gpux-home
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for run in $RUNS; do
  IFS=: read -r model n threads graphs switch delay <<< "$run"
  name="${OUT:-/tmp}/serve-$model-w$n${threads:+-t$threads}${graphs:+-g}${switch:+-s$switch}"
  name="$name${delay:+-d$delay}${TAG:+-$TAG}"
  code=$(cd "${CODE:-.}" && pwd)
  # perf_analyzer is looked for in the code's own folder: another checkout (CODE) uses this one's
  if [ -d .venv-perf ] && [ ! -e "$code/.venv-perf" ]; then ln -s "$PWD/.venv-perf" "$code/.venv-perf"; fi
  args="--workers ${n%e}"
  [ "${n%e}" = "$n" ] || args="$args --shared-engine"
  (cd "$code" && PYTHONPATH="$SITE:$code" GPUX_INFERENCE_THREADS=${threads:-0} \
    GPUX_SWITCH_INTERVAL_US=${switch:-0} timeout -s TERM "${RUN_LIMIT:-150}" python3 benchmarks/serve.py \
    --model /root/models/$model.onnx --backend cuda --skip-peers \
    --sequence 128 --batch-sizes 1,8,16,32,64,128 --duration "${DURATION:-4}" \
    --concurrency "${LEVELS:-1,32,64}" --client-processes 4 --gpux-args "$args" \
    --batch-delay-ms "${delay:-2}" ${PROTOCOLS:+--protocols "$PROTOCOLS"} \
    ${graphs:+--cuda-graphs} ${PERF_ANALYZER:+--perf-analyzer} ${PY_SPY:+--profile "$name-prof" --py-spy "$PY_SPY"} \
    --json "$name.json" 2>&1) | grep -v "^ *$" | tee "$name.txt" || echo "run $run: exit $?"
  if [ -d "$name-prof" ]; then
    tar czf "$name-prof.tgz" -C "$name-prof" . && rm -rf "$name-prof"
  fi
done
