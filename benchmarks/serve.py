"""What serving costs, and what dynamic batching buys, measured in one run on one machine.

MiniLM int8 (batch 1, 16 tokens per request) is served by ``gpux serve`` on loopback, and
tritonclient (HTTP, binary tensors, its defaults) sends requests from N concurrent callers for a
fixed time. Baselines, measured in the same run:

* bare ONNX Runtime in this process, one caller, the same request in a loop (the ceiling a
  server could reach without batching);
* the same server with dynamic batching off (max_batch_size 1) vs on (32 rows, 5 ms delay).

Prints requests/s, p50/p99 latency and the ratios.

    uv run python benchmarks/serve.py [--seconds 5] [--callers 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import zoo

SEQUENCE = 16


def request_arrays() -> dict[str, np.ndarray]:
    ids = np.full((1, SEQUENCE), 2000, dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bare_loop(model: Path, seconds: float) -> dict[str, float]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feed = request_arrays()
    for _ in range(20):
        session.run(None, feed)
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        session.run(None, feed)
        latencies.append(time.perf_counter() - started)
    return summary(latencies, seconds)


def summary(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "requests_per_s": len(latencies) / seconds,
        "p50_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1e3,
    }


def build_bench_image(model: Path, folder: Path) -> Path:
    """``bench:latest`` (the bare model, no pipeline) built into a new store; its GPUX_HOME."""
    home, project = folder / "home", folder / "bench"
    project.mkdir()
    (project / "model.onnx").write_bytes(model.read_bytes())
    (project / "GPUXfile").write_text("name: bench\nmodel: ./model.onnx\n")
    subprocess.run(
        [sys.executable, "-m", "gpux.cli.main", "build", str(project), "-q"],
        env={**os.environ, "GPUX_HOME": str(home)},
        check=True,
        capture_output=True,
    )
    return home


def serve_and_load(home: Path, extra: list[str], callers: int, seconds: float) -> dict[str, float]:
    import httpx
    import tritonclient.http as triton

    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpux.cli.main",
            "serve",
            "bench:latest",
            "--backend",
            "cpu",
            "--port",
            str(port),
            *extra,
        ],
        env={**os.environ, "GPUX_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("gpux serve did not start") from None
                time.sleep(0.2)
        arrays = request_arrays()
        latencies: list[float] = []
        lock = threading.Lock()
        stop = time.perf_counter() + seconds + 1.0  # the first second is warm-up

        def caller() -> None:
            client = triton.InferenceServerClient(f"127.0.0.1:{port}")
            inputs = []
            for name, value in arrays.items():
                tensor = triton.InferInput(name, list(value.shape), "INT64")
                tensor.set_data_from_numpy(value)
                inputs.append(tensor)
            warm_until = time.perf_counter() + 1.0
            mine = []
            while (now := time.perf_counter()) < stop:
                client.infer("bench", inputs)
                if now >= warm_until:
                    mine.append(time.perf_counter() - now)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=caller) for _ in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return summary(latencies, seconds)
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    model = zoo.fetch("minilm")
    with tempfile.TemporaryDirectory(prefix="gpux-bench-serve-") as tmp:
        home = build_bench_image(model, Path(tmp))
        results: dict[str, Any] = {
            "bare ONNX Runtime, 1 caller in process": bare_loop(model, args.seconds),
            f"gpux serve, no batching, {args.callers} callers": serve_and_load(
                home, ["--max-batch-size", "1"], args.callers, args.seconds
            ),
            f"gpux serve, batching 32 / 5 ms, {args.callers} callers": serve_and_load(
                home,
                ["--max-batch-size", "32", "--max-batch-delay-ms", "5"],
                args.callers,
                args.seconds,
            ),
        }
    base = next(iter(results.values()))["requests_per_s"]
    print(f"MiniLM int8, batch 1 x {SEQUENCE} tokens per request, CPU, {os.cpu_count()} cores")
    print(f"{'':58} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>8}")
    for name, row in results.items():
        print(
            f"{name:58} {row['requests_per_s']:8.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
            f"{row['requests_per_s'] / base:8.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
