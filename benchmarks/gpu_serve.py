"""``gpux serve`` on a GPU against in-process ONNX Runtime, one image per request.

For a model with a symbolic batch (benchmarks/export_reference_models.py writes
resnet50_dyn.onnx and bert_dyn.onnx), in one run on one machine:

* in process: ONNX Runtime's CUDA EP at batch sizes 1..128, rows/s; the best is the ceiling;
* ``gpux serve`` with dynamic batching (``--max-batch-size 32``, 2 ms), its default preferred
  sizes (sessions per size), and again with ``--preferred-batch-sizes none`` (every batch size
  as it comes, the behaviour before), tritonclient.http with binary tensors from client
  processes (so the client is not what limits), at each concurrency;

printing requests/s, p50 and p99, and each against the in-process best.

    python benchmarks/gpu_serve.py --model /root/models/resnet50_dyn.onnx [--seconds 10]
        [--concurrency 1,8,32,64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_request(model: Path) -> dict[str, np.ndarray]:
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    rng = np.random.default_rng(0)
    feed = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
        if value.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            feed[value.name] = rng.integers(0, 1000, dims).astype(np.int64)
        else:
            feed[value.name] = rng.standard_normal(dims).astype(np.float32)
    return feed


PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def in_process(model: Path, sizes: list[int], seconds: float, backend: str) -> dict[int, float]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=[PROVIDERS[backend]])
    assert session.get_providers()[0] == PROVIDERS[backend], session.get_providers()
    one = one_request(model)
    rates = {}
    for size in sizes:
        feed = {k: np.repeat(v, size, axis=0) for k, v in one.items()}
        for _ in range(5):
            session.run(None, feed)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            session.run(None, feed)
            calls += 1
        rates[size] = calls * size / (time.perf_counter() - started)
        print(f"  in process b{size}: {rates[size]:.0f} rows/s", flush=True)
    return rates


def _client(url: str, model: str, threads: int, seconds: float, path: str, queue: Any) -> None:
    import threading

    import tritonclient.http as http

    one = one_request(Path(path))
    latencies: list[float] = []
    lock = threading.Lock()

    def loop() -> None:
        client = http.InferenceServerClient(url)
        inputs = []
        for name, value in one.items():
            tensor = http.InferInput(
                name, list(value.shape), "INT64" if value.dtype == np.int64 else "FP32"
            )
            tensor.set_data_from_numpy(value, binary_data=True)
            inputs.append(tensor)
        mine = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            client.infer(model, inputs)
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put(latencies)


def load(url: str, model: str, path: Path, concurrency: int, seconds: float) -> dict[str, float]:
    processes = min(concurrency, 8)
    queue: Any = multiprocessing.get_context("spawn").Queue()
    context = multiprocessing.get_context("spawn")
    per = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    jobs = [
        context.Process(target=_client, args=(url, model, n, seconds, str(path), queue))
        for n in per
    ]
    for job in jobs:
        job.start()
    latencies = [x for _ in jobs for x in queue.get()]
    for job in jobs:
        job.join()
    latencies.sort()
    return {
        "requests_per_s": round(len(latencies) / seconds, 1),  # every caller runs `seconds`
        "p50_ms": round(1e3 * statistics.median(latencies), 2),
        "p99_ms": round(1e3 * latencies[int(0.99 * (len(latencies) - 1))], 2),
    }


def serve(home: Path, backend: str, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    log = open(home / f"serve-{port}.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpux",
            "serve",
            "bench",
            "--backend",
            backend,
            "--port",
            str(port),
            "--max-batch-size",
            "32",
            "--max-batch-delay-ms",
            "2",
            *extra,
        ],
        env={**os.environ, "GPUX_HOME": str(home)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"http://{url}/v2/health/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.5)
    process.kill()
    raise RuntimeError((home / f"serve-{port}.log").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--backend", default="cuda", choices=sorted(PROVIDERS))
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    report: dict[str, Any] = {"model": args.model.name}
    print(f"{args.model.name}: in-process ONNX Runtime ({args.backend})", flush=True)
    rates = in_process(args.model, [1, 8, 16, 32, 64, 128], min(args.seconds, 5), args.backend)
    best = max(rates.values())
    report["in_process_rows_per_s"] = rates
    home = Path(tempfile.mkdtemp(prefix="gpux-gpu-serve-"))
    project = home / "project"
    project.mkdir()
    shutil.copyfile(args.model, project / "model.onnx")  # a link out of the project is refused
    (project / "GPUXfile").write_text("name: bench\nmodel: ./model.onnx\n")
    subprocess.run(
        [sys.executable, "-m", "gpux", "build", str(project), "--backend", args.backend, "-q"],
        env={**os.environ, "GPUX_HOME": str(home)},
        check=True,
    )
    for label, extra in (
        ("gpux serve (preferred sizes, sessions per size)", []),
        ("gpux serve (any batch size, one session)", ["--preferred-batch-sizes", "none"]),
    ):
        process, url = serve(home, args.backend, extra)
        rows = {}
        try:
            for level in levels:
                result = load(url, "bench", args.model, level, args.seconds)
                result["vs_in_process_best"] = round(result["requests_per_s"] / best, 3)
                rows[level] = result
                print(f"  {label} c={level}: {result}", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=60)
        report[label] = rows
    print(f"in-process best: {best:.0f} rows/s (b{max(rates, key=rates.__getitem__)})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
