"""Does ``gpux bench`` report what a bare ONNX Runtime loop measures? Same model, same inputs,
same process.

``gpux bench --json`` (the library call behind it: ``gpux.bench.benchmark``) on MiniLM int8 at
batch 1, against the loop ``benchmarks/overhead.py`` times: ``perf_counter_ns`` around
``onnxruntime.InferenceSession.run`` with the same session options, on the same feed. They
take turns in rounds (the order alternating), each round warming its own side up first, so both
see the same machine; the ratios of the medians over the rounds are printed, for p50 and for
throughput (items/s). Target: p50 within 5% (ratio <= 1.05).

    uv run python benchmarks/bench_vs_bare.py [--runs 400] [--rounds 6] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import zoo

WARMUP = 50


def bare_loop(session: Any, feed: dict[str, np.ndarray], runs: int) -> dict[str, float]:
    """The loop of benchmarks/overhead.py: the clock around ``session.run`` and nothing else."""
    output_names = [o.name for o in session.get_outputs()]
    for _ in range(WARMUP):
        session.run(output_names, feed)
    clock = time.perf_counter_ns
    times = []
    started = clock()
    for _ in range(runs):
        start = clock()
        session.run(output_names, feed)
        times.append(clock() - start)
    elapsed = clock() - started
    return {
        "p50_ms": statistics.median(times) / 1e6,
        "mean_ms": statistics.fmean(times) / 1e6,
        "throughput": runs / (elapsed / 1e9),
    }


def gpux_bench(image: str, feed: dict[str, np.ndarray], runs: int) -> dict[str, Any]:
    from gpux.bench import BenchSettings, benchmark

    settings = BenchSettings(batch_sizes=[1], runs=runs, warmup_runs=WARMUP)
    report = benchmark(image, settings, inputs=feed).to_json()  # what `gpux bench --json` prints
    result = report["results"][0]
    return {
        "p50_ms": result["latency_ms"]["p50"],
        "mean_ms": result["latency_ms"]["mean"],
        "throughput": result["throughput_items_per_s"],
        "backend": result["backend"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=400, help="timed calls per side per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="gpux-bench-"))
    os.environ["GPUX_HOME"] = str(home)
    project = home / "project"
    project.mkdir()
    (project / "model.onnx").write_bytes(zoo.fetch("minilm").read_bytes())
    (project / "GPUXfile").write_text("name: minilm-bench\nmodel: ./model.onnx\n")
    subprocess.run(
        [str(Path(sys.executable).with_name("gpux")), "build", str(project), "-q"],
        check=True,
        env={**os.environ, "GPUX_NO_PROGRESS": "1"},
        stdout=subprocess.DEVNULL,
    )
    image = "minilm-bench:latest"

    import onnxruntime as ort

    import gpux
    from gpux.builder.smoke import generate_inputs
    from gpux.config.schema import Runtime
    from gpux.runtime.onnxruntime_backend import session_options

    model = gpux.load(image, backend="cpu", warmup=False)
    assert model.image is not None
    feed = generate_inputs(model.inputs)  # what gpux bench generates at batch 1
    model_path = model.image.layer_path("application/vnd.gpux.model.onnx.v1")
    model.close()
    session = ort.InferenceSession(
        str(model_path), session_options(Runtime()), providers=["CPUExecutionProvider"]
    )
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feed.items())
    from gpux.bench.machine import cpu_model

    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, onnxruntime {ort.__version__}"
    )
    print(f"model: all-MiniLM-L6-v2 int8, CPUExecutionProvider, {shapes}")
    print(f"{args.rounds} rounds x {args.runs} timed calls per side, {WARMUP} warm-up calls each\n")

    sides = {"bare": lambda: bare_loop(session, feed, args.runs)}
    sides["gpux bench"] = lambda: gpux_bench(image, feed, args.runs)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for number in range(args.rounds):
        order = list(sides) if number % 2 == 0 else list(reversed(sides))
        for name in order:
            rounds[name].append(sides[name]())
        print(
            f"round {number + 1}: "
            + "   ".join(
                f"{name} p50 {rounds[name][-1]['p50_ms']:.3f} ms "
                f"{rounds[name][-1]['throughput']:.1f}/s"
                for name in sides
            )
        )

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds[name])

    p50_ratio = median("gpux bench", "p50_ms") / median("bare", "p50_ms")
    throughput_ratio = median("bare", "throughput") / median("gpux bench", "throughput")
    ok = p50_ratio <= 1.05
    print(
        f"\np50         bare {median('bare', 'p50_ms'):.3f} ms   gpux bench "
        f"{median('gpux bench', 'p50_ms'):.3f} ms   ratio {p50_ratio:.3f}   "
        f"{'OK' if ok else 'OVER'} (target <= 1.05)"
    )
    print(
        f"throughput  bare {median('bare', 'throughput'):.1f}/s   gpux bench "
        f"{median('gpux bench', 'throughput'):.1f}/s   ratio (bare/gpux) {throughput_ratio:.3f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"rounds": rounds, "p50_ratio": p50_ratio, "throughput_ratio": throughput_ratio},
                indent=2,
            )
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
