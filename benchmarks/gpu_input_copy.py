"""Where a batched GPU call's time goes: the host-to-device copy, and calls in flight.

Issue 15's serving runs on an H100 stopped near 2,200 ResNet-50 requests/s (0.49x of in-process
at the best batch size) whatever the number of processes. This separates the suspects, bare
ONNX Runtime on the CUDA EP, no GPUX:

- ``numpy``: ``session.run`` with a numpy batch (what a server does today: ONNX Runtime copies
  it to the GPU from pageable memory, staged through the driver's own pinned buffer);
- ``pinned``: the same numpy array after ``cudaHostRegister`` (page-locked once, as a batcher
  could do with buffers it reuses), so the copy is one DMA;
- ``on-device``: IOBinding of an input already on the GPU: the model alone, no copy;
- ``graph``: a session of that fixed batch size replaying a CUDA graph (``enable_cuda_graph``),
  its input copied from the page-locked array into its device buffer each call, the output
  read back: what one graph per preferred batch size would cost;
- then images/s with 1, 2 and 4 threads calling ``run`` on one session at once, and with 1
  and 2 threads each replaying a graph session of its own.

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
from collections.abc import Callable
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


def rate(calls: list[Callable[[], object]], rows: int, seconds: float) -> float:
    """Rows per second with each of ``calls`` made over and over on a thread of its own."""
    done = [0] * len(calls)
    stop = time.perf_counter() + seconds

    def worker(index: int) -> None:
        while time.perf_counter() < stop:
            calls[index]()
            done[index] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(done) * rows / (time.perf_counter() - start)


class GraphCall:
    """One fixed-size session that replays a CUDA graph over its own device buffers."""

    def __init__(self, model: Path, size: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        probe = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        for meta in probe.get_inputs():
            if isinstance(meta.shape[0], str):
                options.add_free_dimension_override_by_name(meta.shape[0], size)
        self.session = ort.InferenceSession(
            str(model),
            sess_options=options,
            providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"})],
        )
        self.binding = self.session.io_binding()
        self.inputs = {}
        for meta in self.session.get_inputs():
            shape = [size, *meta.shape[1:]]
            value = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", 0)
            self.inputs[meta.name] = value
            self.binding.bind_ortvalue_input(meta.name, value)
        self.outputs = []
        for meta in self.session.get_outputs():
            shape = [size, *meta.shape[1:]]
            value = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", 0)
            self.outputs.append(value)
            self.binding.bind_ortvalue_output(meta.name, value)

    def __call__(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        for name, array in feed.items():
            self.inputs[name].update_inplace(array)
        self.session.run_with_iobinding(self.binding)
        return [value.numpy() for value in self.outputs]


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
    print(f"{'batch':>6} {'numpy':>9} {'pinned':>9} {'on-device':>10} {'graph':>9} {'MB':>7}")
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
        try:
            graph_call = GraphCall(args.model, size)
            graph = median_ms(partial(graph_call, {meta.name: pinned_batch}), args.runs)
            del graph_call
        except Exception as exc:  # a model a graph cannot capture: say so, measure the rest
            print(f"  b{size}: no CUDA graph: {str(exc).splitlines()[0][:120]}")
            graph = float("nan")
        if code == 0:
            lib.cudaHostUnregister(ctypes.c_void_p(pinned_batch.ctypes.data))
        on_device_value = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0)
        binding = session.io_binding()
        binding.bind_ortvalue_input(meta.name, on_device_value)
        for output in session.get_outputs():
            binding.bind_output(output.name, "cuda")
        on_device = median_ms(partial(session.run_with_iobinding, binding), args.runs)
        found["sizes"][size] = {
            "numpy_ms": plain,
            "pinned_ms": pinned,
            "on_device_ms": on_device,
            "graph_ms": graph,
        }
        print(
            f"{size:>6} {plain:>9.2f} {pinned:>9.2f} {on_device:>10.2f} {graph:>9.2f}"
            f" {batch.nbytes / 1e6:>7.1f}"
            + ("" if code == 0 else f"  (cudaHostRegister returned {code})")
        )
    size = 16 if 16 in found["sizes"] else next(iter(found["sizes"]))
    batch = rng.standard_normal([size, *shape[1:]]).astype(np.float32)
    print(f"b{size}, images/s with N threads calling run on one session:")
    found["threads"] = {}
    for threads in (1, 2, 4):
        call = partial(session.run, None, {meta.name: batch})
        images = rate([call] * threads, size, args.seconds)
        found["threads"][threads] = images
        print(f"  {threads} thread(s): {images:8.0f}")
    print(f"b{size}, images/s with N threads, each replaying a CUDA graph session of its own:")
    found["graph_threads"] = {}
    try:
        calls = [GraphCall(args.model, size) for _ in range(2)]
        for graph in calls:  # captured one after another: a capture fails while another runs
            graph({meta.name: batch})
        for threads in (1, 2):
            replays = [partial(graph, {meta.name: batch}) for graph in calls[:threads]]
            images = rate(replays, size, args.seconds)
            found["graph_threads"][threads] = images
            print(f"  {threads} thread(s): {images:8.0f}")
    except Exception as exc:
        print(f"  no CUDA graph: {str(exc).splitlines()[0][:120]}")
    if args.json:
        args.json.write_text(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
