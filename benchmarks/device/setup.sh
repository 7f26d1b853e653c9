#!/usr/bin/env bash
# Install GPUX's GPU stack on the lent GPU machine, which has Python 3.12 with torch (and the
# CUDA 13 / cuDNN 9 libraries in its nvidia-* packages) but no package index.
#
# The bundle is carried in parts (a call carries at most 64 MiB), each copied to $CARRY by the
# call that carried it: cat part* = onnxruntime-gpu 1.31.1's wheel contents as a tar compressed
# with zstd -19 --long=27 (ORT_BYTES long), then a tar of GPUX's other dependencies as cp312
# wheels (minus numpy and what torch's image has). `manifest` gives ORT_BYTES and the sha256.
# The image has no zstd: a zstd binary is carried beside the parts.
#   . benchmarks/device/setup.sh     # then python3 -c "import gpux" runs on onnxruntime-gpu
set -euo pipefail
CARRY=${CARRY:-/root/carry}
SITE=${SITE:-/root/gpux-site}
if [ ! -f "$SITE/.ready" ]; then
  . "$CARRY/manifest"
  cat "$CARRY"/part0* > /root/bundle
  echo "$BUNDLE_SHA256  /root/bundle" | sha256sum -c -
  mkdir -p "$SITE" /root/wheels
  ZSTD=$(command -v zstd || echo "$CARRY/zstd")  # the lent image has none: carry /usr/bin/zstd
  head -c "$ORT_BYTES" /root/bundle | "$ZSTD" -dc --long=27 | tar xf - -C "$SITE"
  tail -c +"$((ORT_BYTES + 1))" /root/bundle | tar xf - -C /root/wheels
  python3 -m pip install -q --no-index --no-deps --target "$SITE" /root/wheels/*.whl
  # preload_dlls() looks beside the onnxruntime package for nvidia/: the image's torch has it.
  ln -sfn "$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])')" "$SITE/nvidia"
  python3 -m pip uninstall -y -q onnxruntime 2>/dev/null || true  # the image's CPU build
  touch "$SITE/.ready"
fi
# perf_analyzer, when carried (benchmarks/device/make_bundle.sh): .venv-perf in the checkout.
if [ -f "$CARRY/perf.tar.zst" ] && [ ! -x .venv-perf/bin/perf_analyzer ]; then
  mkdir -p .venv-perf
  "$(command -v zstd || echo "$CARRY/zstd")" -dc "$CARRY/perf.tar.zst" | tar xf - -C .venv-perf
fi
export PYTHONPATH="$SITE:$PWD"
python3 -c "import onnxruntime as o; o.preload_dlls(); print('onnxruntime', o.__version__, o.get_available_providers())"
