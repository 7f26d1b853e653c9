"""Where a batched GPU call's time goes: the host-to-device copy, and calls in flight.

Issue 15's serving runs on an H100 stopped near 2,200 ResNet-50 requests/s (0.49x of in-process
at the best batch size) whatever the number of processes. This separates the suspects, bare
ONNX Runtime on the CUDA EP, no GPUX:

- ``numpy``: ``session.run`` with a numpy batch (what a server does today: ONNX Runtime copies
  it to the GPU from pageable memory, staged through the driver's own pinned buffer);
- ``pinned``: the same numpy array after ``cudaHostRegister`` (page-locked once, as a batcher
  could do with buffers it reuses), so the copy is one DMA;
- ``on-device``: IOBinding of an input already on the GPU: the model alone, no copy;
- then images/s with 1, 2 and 4 threads calling ``run`` on one session at once.

    python benchmarks/gpu_input_copy.py --model resnet50_dyn.onnx [--sizes 8,16,32] [--json F]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cudart() -> Any:
    from gpux.runtime import libraries

    found = libraries.find("cuda-runtime")  # loads it from the nvidia-* wheels if need be
    if found.found is None:
        raise SystemExit("no libcudart found (after onnxruntime.preload_dlls)")
    return ctypes.CDLL(found.found)


def median_ms(call: Any, runs: int) -> float:
    for _ in range(5):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def threaded_rate(
    session: Any, name: str, batch: np.ndarray, threads: int, seconds: float
) -> float:
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def worker(index: int) -> None:
        while time.perf_counter() < stop:
            session.run(None, {name: batch})
            done[index] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(done) * len(batch) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--sizes", default="8,16,32,64")
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import onnxruntime as ort

    ort.preload_dlls()
    lib = cudart()
    session = ort.InferenceSession(
        str(args.model), providers=[("CUDAExecutionProvider", {}), "CPUExecutionProvider"]
    )
    meta = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in meta.shape]
    found: dict[str, Any] = {"model": args.model.name, "sizes": {}}
    rng = np.random.default_rng(0)
    print(f"{args.model.name}: ms per call (median of {args.runs})")
    print(f"{'batch':>6} {'numpy':>9} {'pinned':>9} {'on-device':>10} {'MB':>7}")
    for size in [int(s) for s in args.sizes.split(",")]:
        batch = rng.standard_normal([size, *shape[1:]]).astype(np.float32)
        plain = median_ms(partial(session.run, None, {meta.name: batch}), args.runs)
        pinned_batch = np.array(batch)  # its own buffer, registered below
        code = lib.cudaHostRegister(
            ctypes.c_void_p(pinned_batch.ctypes.data), ctypes.c_size_t(pinned_batch.nbytes), 0
        )
        pinned = (
            median_ms(partial(session.run, None, {meta.name: pinned_batch}), args.runs)
            if code == 0
            else float("nan")
        )
        if code == 0:
            lib.cudaHostUnregister(ctypes.c_void_p(pinned_batch.ctypes.data))
        on_device_value = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0)
        binding = session.io_binding()
        binding.bind_ortvalue_input(meta.name, on_device_value)
        for output in session.get_outputs():
            binding.bind_output(output.name, "cuda")
        on_device = median_ms(partial(session.run_with_iobinding, binding), args.runs)
        found["sizes"][size] = {"numpy_ms": plain, "pinned_ms": pinned, "on_device_ms": on_device}
        print(
            f"{size:>6} {plain:>9.2f} {pinned:>9.2f} {on_device:>10.2f} {batch.nbytes / 1e6:>7.1f}"
            + ("" if code == 0 else f"  (cudaHostRegister returned {code})")
        )
    size = 16 if 16 in found["sizes"] else next(iter(found["sizes"]))
    batch = rng.standard_normal([size, *shape[1:]]).astype(np.float32)
    print(f"b{size}, images/s with N threads calling run on one session:")
    found["threads"] = {}
    for threads in (1, 2, 4):
        rate = threaded_rate(session, meta.name, batch, threads, args.seconds)
        found["threads"][threads] = rate
        print(f"  {threads} thread(s): {rate:8.0f}")
    if args.json:
        args.json.write_text(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
