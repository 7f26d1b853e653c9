"""Latency through GPUX vs bare ONNX Runtime on a GPU, same provider and options, one process.

For each reference model (benchmarks/export_reference_models.py) and backend (CUDA with host I/O,
CUDA with CUDA graphs, WebGPU), the median of timed runs after warm-up, timed in blocks with
rotating order (spinning thread pools of one session must not slow the other).

    python benchmarks/gpu_latency.py --models DIR [--runs 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def feed_for(session: Any) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {}
    for meta in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in meta.shape]
        if "int64" in meta.type:
            feed[meta.name] = rng.integers(0, 1000, shape).astype(np.int64)
        else:
            feed[meta.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def timed(calls: dict[str, Callable[[], object]], runs: int, block: int = 25) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    # Sustained warm-up first: a GPU that idled while models were built runs at low clocks
    # for a while, and whichever contestant went first would pay for it.
    deadline = time.perf_counter() + 2.0
    while time.perf_counter() < deadline:
        for call in calls.values():
            call()
    for round_number in range(max(1, runs // block)):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            call = calls[name]
            call()
            for _ in range(block):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def bare_session(model: Path, backend: str, cuda_graphs: bool = False) -> Any:
    """Plain ONNX Runtime with its defaults: what a user writes without GPUX."""
    import onnxruntime as ort

    from gpux.runtime import discovery

    if backend == "webgpu":
        options = ort.SessionOptions()
        devices = [
            d
            for d in discovery.runtime().devices_for("WebGpuExecutionProvider")
            if d.device_type != "CPU"
        ]
        options.add_provider_for_devices([devices[0].handle], {})
        return ort.InferenceSession(str(model), options)
    settings = {"device_id": "0", **({"enable_cuda_graph": "1"} if cuda_graphs else {})}
    return ort.InferenceSession(
        str(model), providers=[("CUDAExecutionProvider", settings), "CPUExecutionProvider"]
    )


def bare_graph_runner(
    session: Any, feed: dict[str, np.ndarray], device_resident: bool = False
) -> Callable[[], object]:
    """What a careful ONNX Runtime user writes for CUDA graphs: IOBinding over fixed buffers,
    host inputs copied in and outputs copied out on every call (the same work GPUX does)."""
    import onnxruntime as ort

    binding = session.io_binding()
    inputs = {}
    for name, array in feed.items():
        inputs[name] = ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
        binding.bind_ortvalue_input(name, inputs[name])
    reference = session.get_outputs()
    outputs = {}
    for meta in reference:
        dtype = np.float32 if "float" in meta.type else np.int64
        outputs[meta.name] = ort.OrtValue.ortvalue_from_shape_and_type(
            list(meta.shape), dtype, "cuda", 0
        )
        binding.bind_ortvalue_output(meta.name, outputs[meta.name])

    def call() -> object:
        for name, array in feed.items():
            inputs[name].update_inplace(array)
        session.run_with_iobinding(binding)
        return [value.numpy() for value in outputs.values()]

    def replay() -> object:
        session.run_with_iobinding(binding)
        return outputs

    return replay if device_resident else call


def _project(home: Path, model: Path, graphs: bool) -> Path:
    project = home / (model.stem + ("-graphs" if graphs else ""))
    project.mkdir(parents=True, exist_ok=True)
    target = project / model.name
    if not target.exists():
        target.symlink_to(model)
    extra = "runtime:\n  cuda:\n    cuda_graphs: true\n" if graphs else ""
    name = model.stem.replace("_", "-") + ("-graphs" if graphs else "")
    (project / "GPUXfile").write_text(f"name: {name}\nmodel: ./{model.name}\n{extra}")
    return project


def _row(model: Path, label: str, result: dict[str, float], share: object) -> dict[str, Any]:
    return {
        "model": model.stem,
        "backend": label,
        "bare_ms": round(result["bare"], 3),
        "gpux_ms": round(result["gpux"], 3),
        "ratio": round(result["gpux"] / result["bare"], 3),
        "nodes_on_backend": share,
    }


def measure(model: Path, runs: int, home: Path, emit: Callable[[dict[str, Any]], None]) -> None:
    """One build per configuration (plain, CUDA graphs); WebGPU reuses the plain image."""
    import gpux

    for backend, graphs in (("cuda", False), ("cuda", True), ("webgpu", False)):
        label = backend + (" + CUDA graphs" if graphs else "")
        try:
            loaded = gpux.load(_project(home, model, graphs), backend=backend)
        except Exception as exc:
            emit({"model": model.stem, "backend": label, "error": str(exc)})
            continue
        bare = bare_session(model, backend, cuda_graphs=graphs)
        feed = feed_for(bare)
        graph_note = loaded.placement.details.get("cuda_graphs")
        if graphs and not (graph_note or {}).get("enabled"):
            emit(
                {
                    "model": model.stem,
                    "backend": label,
                    "error": f"not eligible: {(graph_note or {}).get('why')}",
                }
            )
            loaded.close()
            continue
        names = [o.name for o in bare.get_outputs()]
        bare_call = (
            bare_graph_runner(bare, feed)
            if graphs
            else (lambda bare=bare, names=names, feed=feed: bare.run(names, feed))
        )
        result = timed(
            {"bare": bare_call, "gpux": lambda loaded=loaded, feed=feed: loaded.run(feed)}, runs
        )
        share = loaded.placement.details.get("assignment", {}).get("share")
        emit(_row(model, label, result, share))
        if graphs:
            graph = loaded.backend.graph  # type: ignore[attr-defined]
            device = timed(
                {"bare": bare_graph_runner(bare, feed, device_resident=True), "gpux": graph.replay},
                runs,
            )
            emit(_row(model, "cuda graphs, device I/O", device, share))
        loaded.close()
        del bare


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="gpux-gpu-bench-"))
    os.environ["GPUX_HOME"] = str(home / "store")
    import onnxruntime

    from gpux.runtime import libraries

    print(
        f"GPU: {', '.join(libraries.gpu_models()) or '?'}, driver "
        f"{libraries.nvidia_driver_version()}, onnxruntime {onnxruntime.__version__}"
    )
    rows: list[dict[str, Any]] = []
    print(f"{'model':<14} {'backend':<24} {'bare ms':>9} {'gpux ms':>9} {'ratio':>7}  nodes")

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        if "error" in row:
            print(f"{row['model']:<14} {row['backend']:<24} {row['error'][:120]}", flush=True)
        else:
            print(
                f"{row['model']:<14} {row['backend']:<24} {row['bare_ms']:>9.3f} "
                f"{row['gpux_ms']:>9.3f} {row['ratio']:>7.3f}  {row['nodes_on_backend']}",
                flush=True,
            )
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))

    for name in ("resnet50_b1", "resnet50_b32", "bert_b1", "bert_b32"):
        path = args.models / f"{name}.onnx"
        if path.exists():
            measure(path, args.runs, home, emit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
