"""Do several CUDA-graph sessions of one batch size, run side by side, beat one?

A served model on the CUDA EP with CUDA graphs has one session per batch size, and calls of one
size take turns on it: its graph reads and writes fixed buffers, and ONNX Runtime replays it on
the session's one stream. Under load most batches have one or two sizes, so the model threads
queue on that session while the GPU may have room. Here, with bare ONNX Runtime (no GPUX code):
K sessions of one size (batch fixed by a free-dimension override, ``enable_cuda_graph``), each
with its own IOBinding over its own device buffers, captured one after another, then replayed
by K threads at once for ``--seconds``; host I/O as a server does it (the batch copied in, the
outputs copied out, on the calling thread). Prints rows/s per (model, size, K) and the ratio to
K=1 of the same size.

    python benchmarks/graph_copies.py --models DIR [--sizes 8,16] [--copies 1,2,4] [--seconds 3]

DIR holds ``resnet50_dyn.onnx`` and ``bert_dyn.onnx`` (benchmarks/export_reference_models.py).
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("resnet50_dyn", "bert_dyn")


def _session(path: Path, batch: int, device: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_free_dimension_override_by_name("batch", batch)
    return ort.InferenceSession(
        str(path),
        sess_options=options,
        providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"}), "CPUExecutionProvider"]
        if device == "cuda"
        else ["CPUExecutionProvider"],
    )


def _feed(session: Any) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {}
    for meta in session.get_inputs():
        shape = list(meta.shape)
        if "int64" in meta.type:
            feed[meta.name] = rng.integers(1000, 30000, shape).astype(np.int64)
        else:
            feed[meta.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


class Copy:
    """One graph session with fixed device buffers, called with host arrays."""

    def __init__(self, session: Any, feed: dict[str, np.ndarray], device: str) -> None:
        import onnxruntime as ort

        self.session = session
        self.feed = feed
        self.binding = session.io_binding()
        self.inputs = {}
        for name, array in feed.items():
            self.inputs[name] = ort.OrtValue.ortvalue_from_numpy(array, device, 0)
            self.binding.bind_ortvalue_input(name, self.inputs[name])
        self.outputs = []
        for meta in session.get_outputs():
            value = ort.OrtValue.ortvalue_from_shape_and_type(
                list(meta.shape), np.float32, device, 0
            )
            self.binding.bind_ortvalue_output(meta.name, value)
            self.outputs.append(value)

    def call(self) -> None:
        for name, array in self.feed.items():
            self.inputs[name].update_inplace(array)
        self.session.run_with_iobinding(self.binding)
        for value in self.outputs:
            value.numpy()


def measure(path: Path, size: int, copies: int, seconds: float, device: str = "cuda") -> float:
    sessions = [_session(path, size, device) for _ in range(copies)]
    runners = [Copy(s, _feed(s), device) for s in sessions]
    done = [0] * copies
    start = threading.Barrier(copies + 1)
    stop = threading.Event()
    capturing = threading.Lock()  # one capture at a time: one fails beside other CUDA work

    def loop(index: int) -> None:
        runner = runners[index]
        with capturing:  # the usual runs and the capture, on this thread: graphs are per thread
            for _ in range(3):
                runner.call()
        start.wait()
        while not stop.is_set():
            runner.call()
            done[index] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(copies)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(done) * size / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--sizes", default="8,16")
    parser.add_argument("--copies", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cpu", action="store_true", help="the same code on the CPU (a check)")
    args = parser.parse_args()
    device = "cpu" if args.cpu else "cuda"
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(c) for c in args.copies.split(",")]
    print("model, batch, sessions side by side: rows/s (vs one session)")
    for model in MODELS:
        for size in sizes:
            base = None
            for copies in counts:
                rate = measure(args.models / f"{model}.onnx", size, copies, args.seconds, device)
                base = base or rate
                print(
                    f"{model} b{size} x{copies}: {rate:,.0f} rows/s ({rate / base:.2f}x)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
