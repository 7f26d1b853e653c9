"""What a batch bucket costs on the wgpu engine: building its executor against a call once it
is built (and the first call, which may pay the driver's shader compilation), per bucket, and
the load itself.

    python benchmarks/wgpu_buckets.py MODEL.onnx [--buckets 1,2,4,8] [--length 16] [--software]

Float inputs are random, integer inputs ones (valid token ids and masks); symbols other than
the batch are ``--length``. The ratio build/call says whether building every bucket at load
pays: a server builds them in its warm-up anyway, a one-off call builds only the one it needs.
``--software`` allows lavapipe, the only adapter on a CPU machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def feed(model: Any, batch: str, rows: int, length: int) -> dict[str, np.ndarray[Any, Any]]:
    from onnx import helper

    rng = np.random.default_rng(rows)
    initializers = {t.name for t in model.graph.initializer}
    arrays = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        shape = [
            d.dim_value if d.HasField("dim_value") else rows if d.dim_param == batch else length
            for d in value.type.tensor_type.shape.dim
        ]
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            arrays[value.name] = rng.standard_normal(shape).astype(dtype)
        else:
            arrays[value.name] = np.ones(shape, dtype)
    return arrays


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--buckets", default="1,2,4,8")
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--software", action="store_true")
    args = parser.parse_args()
    if args.software:
        os.environ["GPUX_WGPU_ALLOW_SOFTWARE"] = "1"

    import onnx

    from gpux.config.schema import Runtime
    from gpux.runtime.wgpu.backend import WgpuBackend
    from gpux.runtime.wgpu.buckets import batch_symbol

    model = onnx.load(str(args.model))
    batch = batch_symbol(model, {})
    if batch is None:
        print("no batch symbol on every input's and output's axis 0: no buckets")
        return 1
    sizes = [int(n) for n in args.buckets.split(",")]
    started = time.perf_counter()
    backend = WgpuBackend.load(args.model, Runtime(backend="wgpu"))
    print(f"{backend.placement.device}; load {time.perf_counter() - started:.2f} s")
    backend.use_batch_buckets(sizes)
    try:
        for size in sizes:
            inputs = feed(model, batch, size, args.length)
            started = time.perf_counter()
            backend.executor_for(inputs)  # the bucket's executor, built here if it is new
            build = time.perf_counter() - started
            started = time.perf_counter()
            backend.run(inputs)
            first = time.perf_counter() - started
            calls = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                backend.run(inputs)
                calls.append(time.perf_counter() - started)
            call = statistics.median(calls)
            print(
                f"bucket {size:>3}: build {build * 1e3:7.1f} ms, first call {first * 1e3:7.1f} ms,"
                f" then {call * 1e3:7.1f} ms (build = {build / call:4.1f} calls)"
            )
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
