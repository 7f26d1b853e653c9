"""``gpux serve``'s request path alone: a model that computes almost nothing, driven at c=32.

The model has a real model's tensors (ResNet-50's image in, or BERT's hidden states out) but a
ReduceMean/MatMul or Gather in between, so what is measured is HTTP parsing, body reading,
tensor decoding, batching, encoding and writing: the server, not the model. The client is one
closed-loop asyncio process (aiohttp, ``--concurrency`` connections, each sending its next
request as soon as the last is answered) in a process of its own.

Shapes (``--shape``):

* ``resnet``: ``x`` [N,3,224,224] float32 in (602 KB binary), [N,1000] float32 out;
* ``bert``: ``ids`` [N,128] int64 in, [N,128,768] float32 out (393 KB binary);
* ``minilm-json``: ``ids`` [N,16] int64 in, [N,16,384] float32 out, both as JSON (~67 KB);
* ``minilm``: the same tensors, binary (24 KB out): the c=1 target's request (issue 15).

    python benchmarks/request_path.py [--shape resnet] [--seconds 5] [--concurrency 32]
        [--accept-gzip] [--serve-args "--max-batch-size 32 --max-batch-delay-ms 2"]

Prints requests/s, p50 and p99 (ms), the model call's median time in process (at c=1, p50 minus
that is what serving adds), the CPU time the server and the client used per request, and the
server's read and write system calls per request (/proc/PID/io; the access log's line is one
write). On a 2-core machine the client takes one core: compare figures from one machine and one
session.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import machine_load


def tiny_model(shape: str, path: Path) -> None:
    """An ONNX model with the named shape's inputs and outputs and next to no compute."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if shape == "resnet":
        weights = numpy_helper.from_array(rng.standard_normal((3, 1000)).astype(np.float32), "w")
        axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")
        nodes = [
            helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0),
            helper.make_node("MatMul", ["m", "w"], ["y"]),
        ]
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 224, 224])]
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1000])]
        initializers = [weights, axes]
    else:
        width, length = (768, 128) if shape == "bert" else (384, 16)  # bert, minilm(-json)
        table = rng.standard_normal((1000, width)).astype(np.float32)
        nodes = [helper.make_node("Gather", ["table", "ids"], ["y"])]
        inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", length])]
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", length, width])]
        initializers = [numpy_helper.from_array(table, "table")]
    graph = helper.make_graph(nodes, "request_path", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


def request_body(shape: str) -> tuple[bytes, dict[str, str]]:
    """One request: binary tensors (Triton's binary extension) or JSON for ``minilm-json``."""
    rng = np.random.default_rng(1)
    if shape == "minilm-json":
        ids = rng.integers(0, 1000, (1, 16)).tolist()
        body = {"inputs": [{"name": "ids", "shape": [1, 16], "datatype": "INT64", "data": ids}]}
        return json.dumps(body).encode(), {"content-type": "application/json"}
    if shape == "resnet":
        name, array, datatype = "x", rng.standard_normal((1, 3, 224, 224)), "FP32"
        array = array.astype(np.float32)
    else:
        length = 128 if shape == "bert" else 16
        name, array, datatype = "ids", rng.integers(0, 1000, (1, length)), "INT64"
    raw = np.ascontiguousarray(array).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
    return header + raw, headers


async def drive(
    url: str,
    request: tuple[bytes, dict[str, str]],
    concurrency: int,
    seconds: float,
    gzip: bool,
    server_pid: int,
    cpu: dict[str, float],
) -> list[float]:
    """Closed loop: ``concurrency`` callers, each on its own kept-alive connection. Fills
    ``cpu`` with the CPU seconds the server and this client used while timed: on a machine
    shared with others, the server's CPU time per request moves less than its throughput."""
    import aiohttp

    body, headers = request
    headers = {**headers, "accept-encoding": "gzip" if gzip else "identity"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:

        async def caller(deadline: float) -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{response.status}: {await response.text()}")
                latencies.append(time.perf_counter() - started)

        warm = time.perf_counter() + min(1.0, seconds / 5)
        await asyncio.gather(*(caller(warm) for _ in range(concurrency)))
        latencies.clear()
        client_started = time.process_time()
        with server_costs(server_pid, cpu):
            await asyncio.gather(
                *(caller(time.perf_counter() + seconds) for _ in range(concurrency))
            )
        cpu["client"] = time.process_time() - client_started
    return latencies


@contextlib.contextmanager
def server_costs(server_pid: int, cpu: dict[str, float]) -> Iterator[None]:
    """The server's CPU seconds and read and write system calls over the block, into ``cpu``."""
    before = cpu_seconds(server_pid), syscalls(server_pid)
    yield
    cpu["server"] = cpu_seconds(server_pid) - before[0]
    after = syscalls(server_pid)
    cpu["reads"], cpu["writes"] = after[0] - before[1][0], after[1] - before[1][1]


def drive_lean(
    port: int,
    request: tuple[bytes, dict[str, str]],
    concurrency: int,
    seconds: float,
    gzip: bool,
    server_pid: int,
    cpu: dict[str, float],
) -> list[float]:
    """``drive`` with benchmarks/serve_load.py's generator (raw asyncio protocols, the request's
    bytes made once, answers read by length): the client benchmarks/serve.py measures with,
    which spends ~0.05 ms of CPU a request where aiohttp spends ~0.26 ms, so that p50 minus the
    model's in-process time is mostly the server's own."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks import serve_load

    body, headers = request
    headers = {**headers, "Accept-Encoding": "gzip" if gzip else "identity"}
    target = serve_load.HttpTarget("127.0.0.1", port, "/v2/models/bench/infer", body, headers)
    asyncio.run(serve_load.run_load(target, concurrency, min(1.0, seconds / 5), warmup=0.0))
    with server_costs(server_pid, cpu):
        result = asyncio.run(serve_load.run_load(target, concurrency, seconds, warmup=0.0))
    cpu["client"] = result.client_cpu_s
    if result.errors:
        raise RuntimeError(f"{result.errors} failed requests: {result.first_error}")
    return result.latencies


def cpu_seconds(pid: int) -> float:
    """CPU time a process and its descendants (``--workers``) have used, all their threads,
    from /proc (Linux)."""
    used = 0.0
    for process in machine_load.tree_pids(pid):
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        used += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def syscalls(pid: int) -> tuple[int, int]:
    """Read and write system calls (read/recv, write/writev/send) of a process and its
    descendants, from /proc/PID/io (Linux): unlike CPU time, neighbours do not move them."""
    reads = writes = 0
    for process in machine_load.tree_pids(pid):
        try:
            counts = dict(
                line.split(": ") for line in Path(f"/proc/{process}/io").read_text().splitlines()
            )
        except OSError:
            continue
        reads, writes = reads + int(counts["syscr"]), writes + int(counts["syscw"])
    return reads, writes


def in_process_ms(model: Path, shape: str, backend: str) -> float:
    """Median time of the same request's model call in this process (ONNX Runtime, one thread
    on the CPU, as the server runs it): what the server adds is p50 at c=1 minus this."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    provider = "CUDAExecutionProvider" if backend == "cuda" else "CPUExecutionProvider"
    session = ort.InferenceSession(str(model), options, providers=[provider])
    rng = np.random.default_rng(1)
    if shape == "resnet":
        feed = {"x": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}
    else:
        feed = {"ids": rng.integers(0, 1000, (1, 128 if shape == "bert" else 16))}
    times = []
    for _ in range(300):
        started = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - started)
    return round(1e3 * statistics.median(times[50:]), 3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(home: Path, serve_args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    import httpx

    port = free_port()
    log = open(home / "serve.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "gpux", "serve", "bench", "--port", str(port), *serve_args],
        env={**os.environ, "GPUX_HOME": str(home)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    for _ in range(240):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                return process, port
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.25)
    process.kill()
    raise RuntimeError((home / "serve.log").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shape", default="resnet", choices=["resnet", "bert", "minilm", "minilm-json"]
    )
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--accept-gzip", action="store_true", help="ask for gzip answers")
    parser.add_argument(
        "--client",
        default="aiohttp",
        choices=["aiohttp", "lean"],
        help="aiohttp (what a Python user's client costs) or lean: serve_load.py's generator",
    )
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--serve-args", default="--max-batch-size 32 --max-batch-delay-ms 2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpux-request-path-") as folder:
        home = Path(folder)
        project = home / "project"
        project.mkdir()
        tiny_model(args.shape, project / "model.onnx")
        # One operator thread: the model does next to nothing, and ONNX Runtime's pool would
        # spin on the cores the server and the client need.
        (project / "GPUXfile").write_text(
            "name: bench\nmodel: ./model.onnx\nruntime:\n  threads: 1\n"
        )
        subprocess.run(
            [sys.executable, "-m", "gpux", "build", str(project), "--backend", args.backend, "-q"],
            env={**os.environ, "GPUX_HOME": str(home)},
            check=True,
        )
        bare_ms = in_process_ms(project / "model.onnx", args.shape, args.backend)
        extra = ["--backend", args.backend, *shlex.split(args.serve_args)]
        process, port = serve(home, extra)
        cpu: dict[str, float] = {}
        try:
            url = f"http://127.0.0.1:{port}/v2/models/bench/infer"
            request = request_body(args.shape)
            if args.client == "lean":
                latencies = drive_lean(
                    port,
                    request,
                    args.concurrency,
                    args.seconds,
                    args.accept_gzip,
                    process.pid,
                    cpu,
                )
            else:
                latencies = asyncio.run(
                    drive(
                        url,
                        request,
                        args.concurrency,
                        args.seconds,
                        args.accept_gzip,
                        process.pid,
                        cpu,
                    )
                )
        finally:
            process.terminate()
            process.wait(timeout=60)
    latencies.sort()
    result: dict[str, Any] = {
        "shape": args.shape,
        "client": args.client,
        "concurrency": args.concurrency,
        "requests_per_s": round(len(latencies) / args.seconds, 1),
        "p50_ms": round(1e3 * statistics.median(latencies), 2),
        "p99_ms": round(1e3 * latencies[int(0.99 * (len(latencies) - 1))], 2),
        "in_process_ms": bare_ms,
        "server_cpu_ms_per_request": round(1e3 * cpu["server"] / len(latencies), 3),
        "client_cpu_ms_per_request": round(1e3 * cpu["client"] / len(latencies), 3),
        "server_reads_per_request": round(cpu["reads"] / len(latencies), 2),
        "server_writes_per_request": round(cpu["writes"] / len(latencies), 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
