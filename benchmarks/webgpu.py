"""GPUX's wgpu engine against ONNX Runtime's WebGPU EP and CUDA EP (issue 19), one process.

Per model: load time, each contestant's outputs against ONNX Runtime CPU's (``vs_cpu``), median
warm latency with host I/O (contestants alternate call by call), and for the engine its CPU time per call against its wall time, the time spent encoding, the
share of nodes on wgpu and a per-op GPU time breakdown from timestamp queries.

    python benchmarks/webgpu.py --models DIR          # resnet50_b1/b32, bert_b1/b32 from
                                                      # benchmarks/export_reference_models.py
    python benchmarks/webgpu.py --model PATH.onnx [--model ...] [--allow-software] [--cpu]

``--allow-software`` lets the engine run on lavapipe (GPUX_WGPU_ALLOW_SOFTWARE=1), ``--cpu``
adds ONNX Runtime's CPU provider as a contestant (the only one on a machine without GPU).
Contestants that cannot start are reported with the reason, not dropped.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REFERENCE_MODELS = ("resnet50_b1", "bert_b1", "resnet50_b32", "bert_b32")
CONTESTANTS = ("wgpu", "webgpu", "cuda")


def _median_ms(contestants: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    from benchmarks.timing import median_ms

    return median_ms(contestants, runs)


def _engine_costs(loaded: Any, feed: dict[str, Any], runs: int) -> dict[str, Any]:
    """The engine's CPU time and encoding time per call, and its GPU time per op."""
    executor = loaded.backend.executor_for(feed)
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    encode = []
    for _ in range(runs):
        loaded.run(feed)
        encode.append(executor.last_encode_seconds)
    cpu_ms = (time.process_time() - cpu_started) / runs * 1e3
    wall_ms = (time.perf_counter() - wall_started) / runs * 1e3
    costs: dict[str, Any] = {
        "cpu_ms_per_call": round(cpu_ms, 3),
        "wall_ms_per_call": round(wall_ms, 3),
        "encode_ms": round(statistics.median(encode) * 1e3, 3),
    }
    try:
        _, times = executor.profile(feed)
    except Exception as exc:  # no timestamp queries on this adapter
        costs["kernels"] = {"error": str(exc).splitlines()[0]}
        return costs
    by_op: collections.Counter[str] = collections.Counter()
    for entry in times:
        by_op[entry["op"] if entry["on"] == "wgpu" else "CPU segments"] += entry["ms"]
    gpu_ms = sum(ms for op, ms in by_op.items() if op != "CPU segments")
    costs["gpu_ms_timestamps"] = round(gpu_ms, 3)
    costs["encode_share_of_gpu"] = round(costs["encode_ms"] / gpu_ms, 4) if gpu_ms else None
    costs["kernels"] = {op: round(ms, 3) for op, ms in by_op.most_common()}
    # The dearest nodes by name: where a kernel's time goes (one shape, or all alike).
    slowest = sorted((e for e in times if e["on"] == "wgpu"), key=lambda e: -e["ms"])[:12]
    costs["slowest_nodes"] = [
        {"node": e["node"], "op": e["op"], "dispatches": e["dispatches"], "ms": round(e["ms"], 4)}
        for e in slowest
    ]
    return costs


def _accuracy(model: Path, loaded: dict[str, Any], feed: dict[str, Any]) -> dict[str, Any]:
    """Each contestant's outputs for ``feed`` against ONNX Runtime CPU's (one call, untimed):
    the largest errors, the lowest cosine, and whether they are within the bounds that
    ``gpux build --variant`` holds a variant to (``AccuracyBounds()``)."""
    import gpux
    from gpux.builder import accuracy
    from gpux.config.schema import AccuracyBounds

    with gpux.load(model, backend="cpu") as cpu:
        expected = cpu.run(feed)
    reports: dict[str, Any] = {}
    for backend, contestant in loaded.items():
        report = accuracy.compare([expected], [contestant.run(feed)], {})
        reports[backend] = {
            "vs_cpu": {
                "max_abs_error": float(f"{report['max_abs_error']:.3g}"),
                "max_rel_error": float(f"{report['max_rel_error']:.3g}"),
                "cosine": float(f"{report['cosine']:.9f}"),
                "within_variant_bounds": not accuracy.check(report, AccuracyBounds()),
            }
        }
    return reports


def measure(model: Path, backends: list[str], runs: int) -> list[dict[str, Any]]:
    import gpux
    from gpux.builder.smoke import generate_inputs

    rows: list[dict[str, Any]] = []
    loaded: dict[str, Any] = {}
    for backend in backends:
        started = time.perf_counter()
        try:
            loaded[backend] = gpux.load(model, backend=backend)
        except Exception as exc:
            rows.append({"model": model.stem, "backend": backend, "error": str(exc)})
            continue
        placement = loaded[backend].placement
        assignment = placement.details.get("assignment", {})
        rows.append(
            {
                "model": model.stem,
                "backend": backend,
                "device": placement.device,
                "load_s": round(time.perf_counter() - started, 3),
                "nodes_on_backend": f"{assignment.get('nodes_on_backend')}/"
                f"{assignment.get('nodes')}",
            }
        )
    if not loaded:
        return rows
    first = next(iter(loaded.values()))
    feed = generate_inputs(first.inputs)
    for row, report in _accuracy(model, loaded, feed).items():
        next(r for r in rows if r.get("backend") == row).update(report)
    medians = _median_ms({name: (lambda m=m: m.run(feed)) for name, m in loaded.items()}, runs)
    for row in rows:
        if row["backend"] in medians:
            row["median_ms"] = round(medians[row["backend"]], 3)
    if "wgpu" in loaded:
        engine_row = next(r for r in rows if r["backend"] == "wgpu")
        engine_row.update(_engine_costs(loaded["wgpu"], feed, max(3, runs // 10)))
        details = loaded["wgpu"].placement.details
        engine_row["submits_per_call"] = details["submits_per_call"]
        engine_row["dispatches_per_call"] = details["dispatches"]
        engine_row["memory_bytes"] = details["memory"]["bytes"]
        # What tuning did at load (its time is in load_s): problems timed or cached, how many
        # kernels run other than the size heuristic's choice, and the summed times of both.
        engine_row["tuning"] = details.get("tuning")
        if "webgpu" in medians:
            engine_row["speedup_vs_webgpu_ep"] = round(medians["webgpu"] / medians["wgpu"], 3)
    for model_loaded in loaded.values():
        model_loaded.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path, help="folder of the reference models")
    parser.add_argument("--model", type=Path, action="append", default=[])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--cpu", action="store_true", help="add ONNX Runtime's CPU provider")
    parser.add_argument("--allow-software", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.allow_software:
        os.environ["GPUX_WGPU_ALLOW_SOFTWARE"] = "1"
    models = list(args.model)
    if args.models:
        models += [args.models / f"{name}.onnx" for name in REFERENCE_MODELS]
    if not models:
        parser.error("give --models DIR or --model PATH")
    backends = [*CONTESTANTS, *(["cpu"] if args.cpu else [])]
    rows = []
    for model in models:
        if not model.is_file():
            rows.append({"model": model.stem, "error": f"{model} not found"})
            continue
        for row in measure(model, backends, args.runs):
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
