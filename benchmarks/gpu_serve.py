"""``gpux serve`` on a GPU against in-process ONNX Runtime, one image per request.

For a model with a symbolic batch (benchmarks/export_reference_models.py writes
resnet50_dyn.onnx and bert_dyn.onnx), in one run on one machine:

* in process: ONNX Runtime's CUDA EP at batch sizes 1..128, rows/s; the best is the ceiling;
* ``gpux serve`` with dynamic batching (``--max-batch-size 32``, 2 ms) and its default
  preferred sizes (sessions per size), driven by Triton's own clients with binary tensors, over
  HTTP (tritonclient.http) and over gRPC (tritonclient.grpc), from 8 client processes (so the
  client is not what limits), at each concurrency; ``--configs`` adds other server settings,
  e.g. ``none=--preferred-batch-sizes none`` (every batch size as it comes);

printing requests/s, p50 and p99, and each against the in-process best.

    python benchmarks/gpu_serve.py --model /root/models/resnet50_dyn.onnx [--seconds 10]
        [--concurrency 1,8,32,64] [--protocols http,grpc] [--configs 'label=--flag value;...']
        [--json out.json]
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


def _client(
    url: str, model: str, threads: int, seconds: float, path: str, queue: Any, protocol: str
) -> None:
    import threading

    if protocol == "grpc":
        import tritonclient.grpc as triton
    else:
        import tritonclient.http as triton

    one = one_request(Path(path))
    latencies: list[float] = []
    lock = threading.Lock()

    def loop() -> None:
        client = triton.InferenceServerClient(url)
        inputs = []
        for name, value in one.items():
            tensor = triton.InferInput(
                name, list(value.shape), "INT64" if value.dtype == np.int64 else "FP32"
            )
            if protocol == "grpc":
                tensor.set_data_from_numpy(value)  # always raw bytes over gRPC
            else:
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


def load(
    url: str, model: str, path: Path, concurrency: int, seconds: float, protocol: str = "http"
) -> dict[str, float]:
    processes = min(concurrency, 8)
    queue: Any = multiprocessing.get_context("spawn").Queue()
    context = multiprocessing.get_context("spawn")
    per = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    jobs = [
        context.Process(target=_client, args=(url, model, n, seconds, str(path), queue, protocol))
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


def serve(home: Path, backend: str, extra: list[str]) -> tuple[subprocess.Popen[bytes], str, str]:
    """A ``gpux serve`` of the bench image, ready (every batch size warm); its HTTP and gRPC
    addresses."""
    import httpx

    port, grpc_port = free_port(), free_port()
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
            "--grpc-port",
            str(grpc_port),
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
                return process, url, f"127.0.0.1:{grpc_port}"
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
    parser.add_argument("--protocols", default="http,grpc")
    parser.add_argument(
        "--configs",
        default="",
        help="more server settings to measure: 'label=--flag value;label2=...'",
    )
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
    configs: list[tuple[str, list[str]]] = [("gpux serve", [])]
    for entry in filter(None, args.configs.split(";")):
        label, _, flags = entry.partition("=")
        configs.append((f"gpux serve ({label.strip()})", flags.split()))
    for label, extra in configs:
        process, url, grpc_url = serve(home, args.backend, extra)
        try:
            for protocol in args.protocols.split(","):
                rows = {}
                for level in levels:
                    address = grpc_url if protocol == "grpc" else url
                    result = load(address, "bench", args.model, level, args.seconds, protocol)
                    result["vs_in_process_best"] = round(result["requests_per_s"] / best, 3)
                    result["p99_over_p50"] = round(result["p99_ms"] / result["p50_ms"], 2)
                    rows[level] = result
                    print(f"  {label} {protocol} c={level}: {result}", flush=True)
                report[f"{label} {protocol}"] = rows
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(f"in-process best: {best:.0f} rows/s (b{max(rates, key=rates.__getitem__)})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
