"""What a batch-size change costs ONNX Runtime's CUDA EP, why, and what avoids it.

For a model with a symbolic batch (benchmarks/export_reference_models.py writes
resnet50_dyn.onnx), after every size has been run once:

* ``steady``: calls of the size the session ran last;
* ``changed``: calls whose size differs from the previous call's (sizes seen before);

for one session with each cuDNN algorithm search (EXHAUSTIVE, ONNX Runtime's default; HEURISTIC;
DEFAULT), one session with the arena growing only by what is asked (kSameAsRequested), and one
session per size (the batch fixed with a free-dimension override, as GPUX's server does).
``--profile`` adds ONNX Runtime's profile of one changed call: time in nodes by op type against
the call's wall time, which says whether the cost is in the kernels or around them.

    python benchmarks/batch_shapes.py --model /tmp/models/resnet50_dyn.onnx [--sizes 1,8,32]
        [--rounds 12] [--profile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

CPU_ONLY = False


def session(
    model: Path, cuda: dict[str, str], batch: int | None = None, profile: bool = False
) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if batch is not None:
        options.add_free_dimension_override_by_name("batch", batch)
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "profile")
    if CPU_ONLY:  # checking the script on a machine without a GPU
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    providers = [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
    made = ort.InferenceSession(str(model), options, providers=providers)
    assert made.get_providers()[0] == "CUDAExecutionProvider", made.get_providers()
    return made


def feeds(made: Any, sizes: list[int]) -> dict[int, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    out: dict[int, dict[str, np.ndarray]] = {}
    for size in sizes:
        feed = {}
        for meta in made.get_inputs():
            shape = [size if not isinstance(d, int) else d for d in meta.shape]
            if "int64" in meta.type:
                feed[meta.name] = rng.integers(0, 1000, shape).astype(np.int64)
            else:
                feed[meta.name] = rng.standard_normal(shape).astype(np.float32)
        out[size] = feed
    return out


def timed(run: Any, feed: dict[str, np.ndarray]) -> float:
    started = time.perf_counter()
    run(None, feed)
    return (time.perf_counter() - started) * 1e3


def measure(
    runners: dict[int, Any], inputs: dict[int, dict[str, np.ndarray]], rounds: int
) -> dict[str, float]:
    sizes = sorted(inputs)
    for size in sizes:  # every size once: later changes are to sizes seen before
        runners[size](None, inputs[size])
    changed, steady = [], []
    for _ in range(rounds):
        for size in sizes:
            changed.append(timed(runners[size], inputs[size]))
            steady.extend(timed(runners[size], inputs[size]) for _ in range(3))
    return {
        "changed_median_ms": round(statistics.median(changed), 3),
        "changed_max_ms": round(max(changed), 3),
        "steady_median_ms": round(statistics.median(steady), 3),
    }


def profile_change(model: Path, inputs: dict[int, dict[str, np.ndarray]]) -> dict[str, Any]:
    made = session(model, {}, profile=True)
    sizes = sorted(inputs)
    for size in sizes:
        made.run(None, inputs[size])
    wall = timed(made.run, inputs[sizes[0]])  # a change back to the first size
    events = json.loads(Path(made.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    last_start = runs[-1]["ts"]
    by_op: Counter[str] = Counter()
    for event in events:
        if (
            event.get("cat") == "Node"
            and event["ts"] >= last_start
            and event["name"].endswith("_kernel_time")
        ):
            by_op[event["args"].get("op_name", "?")] += event["dur"] / 1e3
    return {
        "wall_ms": round(wall, 3),
        "model_run_ms": round(runs[-1]["dur"] / 1e3, 3),
        "in_nodes_ms": round(sum(by_op.values()), 3),
        "top_ops_ms": {op: round(ms, 3) for op, ms in by_op.most_common(6)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--sizes", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cpu", action="store_true", help="check the script without a GPU")
    args = parser.parse_args()
    global CPU_ONLY
    CPU_ONLY = args.cpu
    sizes = [int(s) for s in args.sizes.split(",")]
    shared = session(args.model, {})
    inputs = feeds(shared, sizes)
    report: dict[str, Any] = {"model": args.model.name, "sizes": sizes}
    configs = {
        "one session, EXHAUSTIVE (default)": {},
        "one session, HEURISTIC": {"cudnn_conv_algo_search": "HEURISTIC"},
        "one session, DEFAULT": {"cudnn_conv_algo_search": "DEFAULT"},
        "one session, kSameAsRequested arena": {"arena_extend_strategy": "kSameAsRequested"},
    }
    for name, cuda in configs.items():
        made = shared if not cuda else session(args.model, cuda)
        report[name] = measure({s: made.run for s in sizes}, inputs, args.rounds)
        print(f"{name:40s} {report[name]}", flush=True)
    per_size = {s: session(args.model, {}, batch=s).run for s in sizes}
    report["one session per size"] = measure(per_size, inputs, args.rounds)
    print(f"{'one session per size':40s} {report['one session per size']}", flush=True)
    if args.profile:
        report["profile_of_a_change"] = profile_change(args.model, inputs)
        print("profile of a change:", report["profile_of_a_change"], flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
