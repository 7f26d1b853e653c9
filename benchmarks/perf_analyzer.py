"""Triton's perf_analyzer, unchanged, against ``gpux serve`` over HTTP and gRPC.

The perf_analyzer of the ``perf-analyzer`` wheels (>= 2.58) needs glibc >= 2.38; Debian 12 has
2.36. The ``tritonclient==2.51.0`` wheel still ships its own ``bin/perf_analyzer``, built
against an older glibc, and it runs here given two shared libraries it links against:
``libcudart.so.12`` (the ``nvidia-cuda-runtime-cu12`` wheel, found through LD_LIBRARY_PATH;
no GPU is needed) and ``libb64.so.0d`` (Debian's ``libb64-0d``). ``make perf-analyzer``
installs the two wheels into .venv-perf and the Debian package through ``make system-deps``.

As a library (tests/serve/test_perf_analyzer.py): ``find``, ``input_data``, ``run``. As a
script, it serves a model with ``gpux serve`` (as benchmarks/serve.py does) and runs
perf_analyzer at each concurrency over both protocols:

    uv run python benchmarks/perf_analyzer.py [--model minilm|FILE.onnx] [--concurrency 1,8,32]
        [--measurement-interval 2000] [--gpux-args "..."]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from benchmarks.serve_load import LoadResult

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-perf"
LIBB64 = "libb64.so.0d"


class PerfAnalyzerMissing(RuntimeError):
    """perf_analyzer or a library it needs is not installed; the message says how to get it."""


@dataclass(frozen=True)
class PerfAnalyzer:
    binary: Path
    env: dict[str, str]


def find(venv: Path = VENV) -> PerfAnalyzer:
    """perf_analyzer from ``venv`` with the environment it needs to start on this machine."""
    binary = venv / "bin" / "perf_analyzer"
    if not binary.exists():
        raise PerfAnalyzerMissing(f"no perf_analyzer at {binary}; run 'make perf-analyzer'")
    cudart = sorted(venv.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    if not cudart:
        raise PerfAnalyzerMissing(
            f"libcudart.so.12 is missing from {venv}; run 'make perf-analyzer'"
        )
    # libb64 from the system, or beside the binary (benchmarks/device/setup.sh puts it there
    # on the lent GPU machine, which has no package index).
    beside = venv / "lib"
    if not (beside / LIBB64).exists() and not _system_library(LIBB64):
        raise PerfAnalyzerMissing(
            f"{LIBB64} is missing; run 'make system-deps' (Debian package libb64-0d)"
        )
    paths = [str(cudart[0]), str(beside), *filter(None, [os.environ.get("LD_LIBRARY_PATH")])]
    return PerfAnalyzer(binary, {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(paths)})


def _system_library(name: str) -> bool:
    try:
        listed = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    except OSError:  # no ldconfig on PATH: look where Debian puts it
        return any(Path(d, name).exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib"))
    return name in listed


def input_data(feed: dict[str, np.ndarray], batched: bool = True) -> dict[str, Any]:
    """perf_analyzer's ``--input-data`` JSON for one request; a batched model's shapes leave out
    the batch dimension, as its config does."""
    step = {}
    for name, value in feed.items():
        row = value[0] if batched else value
        step[name] = {"content": row.ravel().tolist(), "shape": list(row.shape)}
    return {"data": [step]}


@dataclass(frozen=True)
class Measurement:
    protocol: str
    concurrency: int
    throughput: float  # inferences/s
    p50_ms: float
    p99_ms: float
    output: str  # everything perf_analyzer printed


def run(
    analyzer: PerfAnalyzer,
    url: str,
    model: str,
    protocol: str,
    data: dict[str, Any],
    concurrency: int = 1,
    measurement_interval_ms: int = 2000,
    extra: list[str] | None = None,
    timeout: float = 300,
) -> Measurement:
    """One perf_analyzer run at one concurrency; raises with its output if it fails.

    Its stability check (3 windows within 10%) is relaxed to 100%: on a shared machine the
    windows rarely agree, and perf_analyzer then reports nothing at all.
    """
    with tempfile.TemporaryDirectory(prefix="gpux-perf-analyzer-") as tmp:
        data_file, report = Path(tmp, "data.json"), Path(tmp, "report.csv")
        data_file.write_text(json.dumps(data))
        command = [
            str(analyzer.binary), "-m", model, "-u", url, "-i", protocol,
            "--concurrency-range", str(concurrency),
            "--measurement-interval", str(measurement_interval_ms),
            "--stability-percentage", "100",
            "--input-data", str(data_file), "-f", str(report), *(extra or []),
        ]  # fmt: skip
        done = subprocess.run(
            command, env=analyzer.env, capture_output=True, text=True, timeout=timeout
        )
        output = done.stdout + done.stderr
        if done.returncode != 0 or not report.exists():
            raise RuntimeError(f"perf_analyzer exited {done.returncode}:\n{output}")
        [row] = list(csv.DictReader(io.StringIO(report.read_text())))
    return Measurement(
        protocol,
        int(row["Concurrency"]),
        float(row["Inferences/Second"]),
        int(row["p50 latency"]) / 1e3,
        int(row["p99 latency"]) / 1e3,
        output,
    )


@dataclass(frozen=True)
class Target:
    """perf_analyzer as one of benchmarks/serve.py's load generators: ``protocol`` ("http",
    binary tensors, or "grpc") of the server at ``url``."""

    analyzer: PerfAnalyzer
    url: str
    model: str
    protocol: str
    data: dict[str, Any]


def load(target: Target, concurrency: int, seconds: float) -> LoadResult:
    """``concurrency`` synchronous clients (perf_analyzer's threads) for three windows of
    ``seconds`` / 3 (its stability check needs three; its figures are their mean), as a
    ``serve_load.LoadResult``: throughput, p50 and p99 from its report, its CPU time per second
    of its run as the client's."""
    import resource
    import time

    from benchmarks import serve_load

    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    found = run(
        target.analyzer, target.url, target.model, target.protocol, target.data, concurrency,
        max(100, int(seconds * 1000 / 3)),
    )  # fmt: skip
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - started
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result = serve_load.LoadResult(
        concurrency, seconds, [], round(found.throughput * seconds), 0, None, cpu * seconds / wall
    )
    result.reported_ms = {0.5: found.p50_ms, 0.99: found.p99_ms}
    return result


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from benchmarks import serve

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm", help="zoo name or .onnx file")
    parser.add_argument("--sequence", type=int, default=16)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--measurement-interval", type=int, default=2000, help="ms")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-delay-ms", type=float, default=2.0)
    parser.add_argument("--backend", default="cpu", choices=sorted(serve.PROVIDERS))
    parser.add_argument("--gpux-args", default="", help="more `gpux serve` options, quoted")
    args = parser.parse_args()
    try:
        analyzer = find()
    except PerfAnalyzerMissing as exc:
        raise SystemExit(str(exc)) from exc
    model = serve.resolve_model(args.model)
    data = input_data(serve.one_request(model, args.sequence))
    with tempfile.TemporaryDirectory(prefix="gpux-bench-pa-") as tmp:
        home = Path(tmp, "home")
        serve.build_image(model, home, args.backend)
        server = serve.gpux_server(home, args)
        with serve.running([server]):
            print(f"perf_analyzer 2.51.0 against gpux serve, {args.model}, {args.backend}")
            for level in [int(c) for c in args.concurrency.split(",")]:
                for protocol, port in (("http", server.http_port), ("grpc", server.grpc_port)):
                    found = run(
                        analyzer, f"127.0.0.1:{port}", serve.MODEL_NAME, protocol, data, level,
                        args.measurement_interval,
                    )  # fmt: skip
                    print(
                        f"  {protocol:4} c={level:<3} {found.throughput:8.1f} infer/s   "
                        f"p50 {found.p50_ms:7.2f} ms   p99 {found.p99_ms:7.2f} ms",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
