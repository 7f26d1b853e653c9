"""What serving costs, against in-process ONNX Runtime and the servers a user would pick instead,
measured in one run on one machine.

One request = one row (MiniLM int8 by default: batch 1 x 16 tokens, a 124 KB JSON answer).

* in-process ONNX Runtime, one caller: batch 1, and the batch size with the most rows/s (the
  ceiling any server of this model could reach);
* ``gpux serve`` as a subprocess on 127.0.0.1 with dynamic batching (``--max-batch-size 32``),
  over HTTP JSON, HTTP binary tensors (the Open Inference Protocol's binary extension) and gRPC;
* peers, each in its own virtual environment (``make bench-peers``; skipped when missing):
  a plain FastAPI + ONNX Runtime endpoint (benchmarks/fastapi_onnx.py, unbatched, JSON) and
  MLServer 1.7.1 with a minimal ONNX Runtime runtime and its adaptive batching
  (benchmarks/mlserver_onnx.py, same batch size and delay), over HTTP JSON and gRPC;

with ``--perf-analyzer``, gpux serve's HTTP binary and gRPC rows again with Triton's perf_analyzer
(C++, ``make perf-analyzer``) as the client in place of the Python generator;

each at every concurrency (closed loop, benchmarks/serve_load.py), rounds interleaved across
servers so that a busy moment on a shared machine hits every row alike. JSON requests ask for
no compression (``Accept-Encoding: identity``). Before the load, one answer of every row is
checked against the in-process result.

    uv run python benchmarks/serve.py [--model minilm|FILE.onnx] [--duration 5] [--rounds 1]
        [--concurrency 1,8,32,64] [--skip-peers] [--backend cpu|cuda] [--gpux-args "..."]
        [--perf-analyzer]
        [--json out.json] [--plot out.png]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import machine_load, perf_analyzer, serve_load
from gpux.serve import engine_trace
from tools import zoo

ROOT = Path(__file__).resolve().parent.parent
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
DATATYPES = {np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32"}
MODEL_NAME = "bench"


# --- the request ------------------------------------------------------------------------------


def one_request(model: Path, sequence: int) -> dict[str, np.ndarray]:
    """One row for each input: token ids for int64 inputs (a [CLS] ... [SEP] sentence, its mask,
    zero type ids), fixed random values for float inputs; symbolic dims other than the batch
    take ``sequence``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {}
    for tensor in session.get_inputs():
        dims = [1] + [d if isinstance(d, int) and d > 0 else sequence for d in tensor.shape[1:]]
        if tensor.type == "tensor(int64)":
            if "mask" in tensor.name:
                value = np.ones(dims, dtype=np.int64)
            elif "type" in tensor.name:
                value = np.zeros(dims, dtype=np.int64)
            else:
                value = rng.integers(1000, 29000, dims).astype(np.int64)
                value[..., 0], value[..., -1] = 101, 102
        else:
            value = rng.standard_normal(dims).astype(np.float32)
        feed[tensor.name] = value
    return feed


def json_body(feed: dict[str, np.ndarray]) -> bytes:
    inputs = [
        {
            "name": n,
            "shape": list(v.shape),
            "datatype": DATATYPES[v.dtype],
            "data": v.ravel().tolist(),
        }
        for n, v in feed.items()
    ]
    return json.dumps({"inputs": inputs}).encode()


def binary_body(feed: dict[str, np.ndarray]) -> tuple[bytes, int]:
    """The binary tensor extension: a JSON header, then the raw tensors; binary outputs asked."""
    inputs = [
        {
            "name": n,
            "shape": list(v.shape),
            "datatype": DATATYPES[v.dtype],
            "parameters": {"binary_data_size": v.nbytes},
        }
        for n, v in feed.items()
    ]
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    return header + b"".join(v.tobytes() for v in feed.values()), len(header)


def grpc_request(feed: dict[str, np.ndarray]) -> bytes:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=MODEL_NAME)
    for name, value in feed.items():
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = name, DATATYPES[value.dtype]
        tensor.shape.extend(value.shape)
        request.raw_input_contents.append(value.tobytes())
    return bytes(request.SerializeToString())


# --- in process -------------------------------------------------------------------------------


class InProcess:
    """ONNX Runtime in this process, one caller, the same rows in a loop: the ceiling."""

    def __init__(self, model: Path, feed: dict[str, np.ndarray], backend: str) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(model), providers=[PROVIDERS[backend]])
        self.feed = feed
        self.reference = self.session.run(None, feed)[0]

    def measure(self, size: int, seconds: float) -> serve_load.LoadResult:
        """Rows/s at batch ``size`` as a ``LoadResult`` of concurrency 1 (latencies per call)."""
        batch = {k: np.repeat(v, size, axis=0) for k, v in self.feed.items()}
        for _ in range(5):
            self.session.run(None, batch)
        latencies = []
        cpu, started = time.process_time(), time.perf_counter()
        while (sent := time.perf_counter()) - started < seconds:
            self.session.run(None, batch)
            latencies.append(time.perf_counter() - sent)
        elapsed = time.perf_counter() - started
        latencies.sort()
        # Rows answered per second of the window; the CPU share is ONNX Runtime's own threads.
        result = serve_load.LoadResult(
            1, elapsed, latencies, len(latencies) * size, 0, None, time.process_time() - cpu
        )
        result.answered_all, result.server_cpu_s = result.completed, result.client_cpu_s
        return result

    def best_batch(self, sizes: list[int], seconds: float) -> tuple[int, dict[int, float]]:
        rates = {size: self.measure(size, seconds).throughput for size in sizes}
        return max(rates, key=rates.__getitem__), rates


# --- servers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    command: list[str]
    http_port: int
    grpc_port: int | None
    log: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )

    def wait_ready(self, timeout: float = 180) -> None:
        import httpx

        url = f"http://127.0.0.1:{self.http_port}/v2/models/{MODEL_NAME}/ready"
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} did not get ready; its log ends with:\n{tail}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def build_image(model: Path, home: Path, backend: str, cuda_graphs: bool = False) -> None:
    """``bench:latest``: the bare model (no pipeline), built into a fresh store at ``home``;
    ``cuda_graphs``: with ``runtime.cuda.cuda_graphs`` (each preferred batch size's session
    replays a CUDA graph)."""
    project = home / "project"
    project.mkdir(parents=True)
    shutil.copyfile(model, project / "model.onnx")  # a link out of the project is refused
    graphs = "runtime:\n  cuda:\n    cuda_graphs: true\n" if cuda_graphs else ""
    (project / "GPUXfile").write_text(f"name: {MODEL_NAME}\nmodel: ./model.onnx\n{graphs}")
    subprocess.run(
        [sys.executable, "-m", "gpux", "build", str(project), "--backend", backend, "-q"],
        env={**os.environ, "GPUX_HOME": str(home)},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def gpux_server(home: Path, args: argparse.Namespace) -> Server:
    http_port, grpc_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "gpux", "serve", MODEL_NAME, "--backend", args.backend,
        "--port", str(http_port), "--grpc-port", str(grpc_port),
        "--max-batch-size", str(args.max_batch_size),
        "--max-batch-delay-ms", str(args.batch_delay_ms),
        *shlex.split(args.gpux_args),
    ]  # fmt: skip
    # Stage times of the shared engine's calls (gpux/serve/engine_trace.py): a few clock reads
    # per call, summed by each front-end; nothing without --shared-engine.
    trace = home / "engine-trace"
    env = {**os.environ, "GPUX_HOME": str(home), "GPUX_ENGINE_TRACE": str(trace)}
    return Server("gpux serve", command, http_port, grpc_port, home / "gpux.log", env)


def peer_servers(model: Path, folder: Path, args: argparse.Namespace) -> list[Server]:
    """The peers whose virtual environments exist; a line for each one that is missing."""
    servers = []
    fastapi_python = ROOT / ".venv-peers" / "bin" / "python"
    mlserver_python = ROOT / ".venv-mlserver" / "bin" / "python"
    if fastapi_python.exists():
        port = free_port()
        command = [
            str(fastapi_python), str(ROOT / "benchmarks" / "fastapi_onnx.py"),
            "--model", str(model), "--name", MODEL_NAME, "--port", str(port),
            "--backend", args.backend,
        ]  # fmt: skip
        servers.append(Server("FastAPI", command, port, None, folder / "fastapi.log"))
    else:
        print("skipping FastAPI + ONNX Runtime: .venv-peers is missing (make bench-peers)")
    if mlserver_python.exists():
        http_port, grpc_port = free_port(), free_port()
        command = [
            str(mlserver_python), str(ROOT / "benchmarks" / "mlserver_onnx.py"),
            "--model", str(model), "--name", MODEL_NAME,
            "--http-port", str(http_port), "--grpc-port", str(grpc_port),
            "--max-batch-size", str(args.max_batch_size),
            "--max-batch-delay-ms", str(args.batch_delay_ms), "--backend", args.backend,
        ]  # fmt: skip
        servers.append(Server("MLServer", command, http_port, grpc_port, folder / "mlserver.log"))
    else:
        print("skipping MLServer 1.7.1: .venv-mlserver is missing (make bench-peers)")
    return servers


# --- rows: a server and a protocol ------------------------------------------------------------

IN_PROCESS = "in-process ONNX Runtime"


@dataclass
class Row:
    server: str
    protocol: str  # "HTTP JSON", "HTTP binary", "gRPC"; for the in-process rows, the batch
    target: serve_load.Target | perf_analyzer.Target | None = None  # None: in process
    decode: Callable[[bytes, dict[str, str]], np.ndarray] | None = None  # answer -> 1st output
    batch: int = 1  # in-process rows: rows per call
    pid: int | None = None  # the server's process (its CPU time is measured with its children)
    stats_port: int | None = None  # gpux serve: its Triton statistics, read around each step
    engine_trace: Path | None = None  # gpux serve: its GPUX_ENGINE_TRACE folder

    @property
    def label(self) -> str:
        return f"{self.server}, {self.protocol}"


def decode_json(body: bytes, headers: dict[str, str]) -> np.ndarray:
    output = json.loads(body)["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def decode_binary(body: bytes, headers: dict[str, str]) -> np.ndarray:
    length = int(headers["inference-header-content-length"])
    output = json.loads(body[:length])["outputs"][0]
    size = int(output["parameters"]["binary_data_size"])  # the first of several (BERT has two)
    return np.frombuffer(body[length : length + size], dtype=np.float32).reshape(output["shape"])


def decode_grpc(body: bytes, headers: dict[str, str]) -> np.ndarray:
    from tritonclient.grpc import service_pb2

    answer = service_pb2.ModelInferResponse.FromString(body)
    output = answer.outputs[0]
    if answer.raw_output_contents:
        values = np.frombuffer(answer.raw_output_contents[0], dtype=np.float32)
    else:
        values = np.asarray(output.contents.fp32_contents, dtype=np.float32)
    return values.reshape(list(output.shape))


def rows_of(server: Server, feed: dict[str, np.ndarray]) -> list[Row]:
    return attached(server, _rows_of(server, feed))


def attached(server: Server, rows: list[Row]) -> list[Row]:
    """``rows`` with what is measured around them: the server's process, and gpux serve's
    statistics and engine trace."""
    assert server.process is not None
    for row in rows:
        row.pid = server.process.pid
        if server.name == "gpux serve":
            row.stats_port = server.http_port
            trace = (server.env or {}).get("GPUX_ENGINE_TRACE")
            row.engine_trace = Path(trace) if trace else None
    return rows


def model_stats(port: int, trace: Path | None = None) -> dict[str, Any]:
    """The server's statistics of the model (Triton's extension), with the front-ends' request
    time from its metrics (``server_seconds``: sum and count of ``gpux_request_seconds``) and
    the shared engine's stage times from ``trace``, its GPUX_ENGINE_TRACE folder."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    answer = httpx.get(f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/stats", timeout=10)
    stats = dict(answer.json()["model_stats"][0])
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    total = {"count": 0.0, "seconds": 0.0}
    for family in text_string_to_metric_families(metrics):
        if family.name != "gpux_request_seconds":
            continue
        for sample in family.samples:
            if sample.labels.get("model") != MODEL_NAME:
                continue
            if sample.name.endswith("_count"):
                total["count"] += sample.value
            elif sample.name.endswith("_sum"):
                total["seconds"] += sample.value
    stats["server_seconds"] = total
    if trace is not None:
        stats["engine_trace"] = engine_trace.read_sums(trace)
    return stats


def batch_profile(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the server's batcher did during one step, from two reads of its statistics: the
    model calls by batch size (padding included), and per call the time to join the batch and
    the model call itself; per request the wait before its batch started."""

    def by_size(stats: dict[str, Any]) -> dict[int, dict[str, Any]]:
        return {b["batch_size"]: b for b in stats.get("batch_stats", [])}

    calls: dict[int, int] = {}
    join_ns = infer_ns = 0
    old = by_size(before)
    for size, entry in by_size(after).items():
        was = old.get(size, {})
        count = entry["compute_infer"]["count"] - was.get("compute_infer", {}).get("count", 0)
        if count:
            calls[size] = count
        join_ns += entry["compute_input"]["ns"] - was.get("compute_input", {}).get("ns", 0)
        infer_ns += entry["compute_infer"]["ns"] - was.get("compute_infer", {}).get("ns", 0)
    queue = [s["inference_stats"]["queue"] for s in (before, after)]
    waits = queue[1]["count"] - queue[0]["count"]
    batched = [s["inference_stats"]["success"] for s in (before, after)]
    answers = batched[1]["count"] - batched[0]["count"]
    served = [s.get("server_seconds", {"count": 0, "seconds": 0.0}) for s in (before, after)]
    requests = served[1]["count"] - served[0]["count"]
    total = sum(calls.values())
    return {
        "calls_by_batch_size": dict(sorted(calls.items())),
        "rows_per_call": round(sum(k * v for k, v in calls.items()) / total, 2) if total else None,
        "join_ms_per_call": round(join_ns / total / 1e6, 3) if total else None,
        "run_ms_per_call": round(infer_ns / total / 1e6, 3) if total else None,
        "queue_ms_per_request": (
            round((queue[1]["ns"] - queue[0]["ns"]) / waits / 1e6, 3) if waits else None
        ),
        # From entering the batcher to the answer (the engine's side with --shared-engine) ...
        "batcher_ms_per_request": (
            round((batched[1]["ns"] - batched[0]["ns"]) / answers / 1e6, 3) if answers else None
        ),
        # ... and from a request's first byte to its answer written, in the front-end: what
        # the client's latency adds beyond it is the network and the client itself.
        "server_ms_per_request": (
            round((served[1]["seconds"] - served[0]["seconds"]) / requests * 1e3, 3)
            if requests
            else None
        ),
        "engine_stages_ms_per_call": _stages(before, after),
    }


def _stages(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float] | None:
    """The shared engine's stage times per call (gpux/serve/engine_trace.py) between two reads."""
    if "engine_trace" not in before or "engine_trace" not in after:
        return None
    (old_count, old), (new_count, new) = before["engine_trace"], after["engine_trace"]
    calls = new_count - old_count
    if calls <= 0:
        return None
    return {stage: round((new[stage] - old[stage]) / calls * 1e3, 3) for stage in new}


PROTOCOLS = ("HTTP JSON", "HTTP binary", "gRPC")  # the rows of each server, --protocols


def _rows_of(server: Server, feed: dict[str, np.ndarray]) -> list[Row]:
    infer = f"/v2/models/{MODEL_NAME}/infer"
    json_headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
    http = ("127.0.0.1", server.http_port)
    json_target = serve_load.HttpTarget(*http, infer, json_body(feed), json_headers)
    rows = [Row(server.name, "HTTP JSON", json_target, decode_json)]
    if server.name == "gpux serve":  # the peers have no binary extension
        body, header_length = binary_body(feed)
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_length),
            "Accept-Encoding": "identity",
        }
        binary_target = serve_load.HttpTarget(*http, infer, body, headers)
        rows.append(Row(server.name, "HTTP binary", binary_target, decode_binary))
    if server.grpc_port is not None:
        grpc_target = serve_load.GrpcTarget("127.0.0.1", server.grpc_port, grpc_request(feed))
        rows.append(Row(server.name, "gRPC", grpc_target, decode_grpc))
    return rows


def perf_analyzer_rows(server: Server, feed: dict[str, np.ndarray]) -> list[Row]:
    """gpux serve's HTTP binary and gRPC rows again, with Triton's perf_analyzer (C++) as the
    load generator: on a many-core GPU machine the Python generator's gRPC requests took 2.2 ms
    more than the server's own time for them, its HTTP binary ones 0.7 ms (H100, ResNet-50 at
    c=32: p50 11.8 ms against 9.6, and 10.2 against 9.5; its CPU 150% against 65%)."""
    analyzer = perf_analyzer.find()
    data = perf_analyzer.input_data(feed)
    rows = []
    for label, kind, port in (
        ("HTTP binary", "http", server.http_port),
        ("gRPC", "grpc", server.grpc_port),
    ):
        if port is None:
            continue
        target = perf_analyzer.Target(analyzer, f"127.0.0.1:{port}", MODEL_NAME, kind, data)
        rows.append(Row(server.name, f"{label}, perf_analyzer", target))
    return rows


def check_answer(row: Row, reference: np.ndarray) -> None:
    """One request of the row, its first output compared with in-process ONNX Runtime's."""
    target, decode = row.target, row.decode
    assert target is not None and decode is not None
    if isinstance(target, serve_load.HttpTarget):
        import httpx

        answer = httpx.post(
            f"http://{target.host}:{target.port}{target.path}",
            content=target.body,
            headers=target.headers,
            timeout=60,
        )
        if answer.status_code != 200:
            raise RuntimeError(f"{row.label}: HTTP {answer.status_code}: {answer.text[:500]}")
        output = decode(answer.content, dict(answer.headers))
    else:
        import grpc

        with grpc.insecure_channel(f"{target.host}:{target.port}") as channel:
            output = decode(channel.unary_unary(target.method)(target.request), {})
    worst = float(np.abs(output - reference).max()) if output.shape == reference.shape else None
    # Relative to the largest value: the CUDA EP multiplies in TF32 by default and picks its
    # kernels per batch size, so a served row (batched, padded) differs from a lone in-process
    # one by ~2e-4 of the scale (BERT's hidden states, up to ~10: 0.0019). A wrong row is off
    # by the scale itself.
    scale = max(1.0, float(np.abs(reference).max()))
    if worst is None or worst > 1e-3 * scale:
        raise RuntimeError(
            f"{row.label} answered {output.shape} (largest difference {worst}); "
            f"in process: {reference.shape}"
        )


# --- the run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[list[Server]]:
    """Every server started together (their loading overlaps), stopped at the end; a peer that
    fails to start is left out with its log, gpux serve failing stops the run."""
    try:
        for server in servers:
            server.start()
        up = []
        for server in servers:
            try:
                server.wait_ready()
                up.append(server)
            except RuntimeError as exc:
                if server.name == "gpux serve":
                    raise
                print(f"skipping {server.name}: {exc}")
                server.stop()
        yield up
    finally:
        for server in servers:
            server.stop()


Runs = dict[tuple[str, int], list[serve_load.LoadResult]]  # (row label, level) -> each round


def median_round(results: list[serve_load.LoadResult]) -> serve_load.LoadResult:
    return sorted(results, key=lambda r: r.throughput)[(len(results) - 1) // 2]


def quietest_round(results: list[serve_load.LoadResult]) -> serve_load.LoadResult:
    """The round in which the rest of the machine used the least CPU."""
    return min(results, key=lambda r: r.others_cpu)


def measure_all(
    rows: list[Row], levels: list[int], in_process: InProcess, args: argparse.Namespace
) -> Runs:
    """Every row at every level, rounds outermost; the in-process rows are measured again at
    each level, between the servers, so that each ratio compares figures taken minutes apart
    at most on a machine whose load changes."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    results: dict[tuple[str, int], list[serve_load.LoadResult]] = {}
    steps = args.rounds * len(levels) * len(rows)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), transient=True
    ) as progress:
        task = progress.add_task("load", total=steps)
        for round_index in range(args.rounds):
            for level in levels:
                for row in rows:
                    progress.update(
                        task, description=f"round {round_index + 1}: {row.label}, c={level}"
                    )
                    if args.wait_quiet:
                        machine_load.wait_until_quiet(args.quiet_below, args.wait_quiet)
                    meter = machine_load.OthersMeter()
                    meter.start()
                    if row.target is None:
                        result = in_process.measure(row.batch, args.duration)
                    else:
                        assert row.pid is not None
                        server_ticks = machine_load.tree_ticks(row.pid)
                        trace = row.engine_trace
                        stats = model_stats(row.stats_port, trace) if row.stats_port else None
                        with profiled(row, level, args):
                            result = generate_load(row, level, args)
                        server_ticks = machine_load.tree_ticks(row.pid) - server_ticks
                        result.server_cpu_s = server_ticks / machine_load.TICKS
                        if stats is not None and row.stats_port:
                            after = model_stats(row.stats_port, trace)
                            result.batches = batch_profile(stats, after)
                            if result.reported_ms is not None:  # every answer of the step
                                result.answered_all = int(
                                    after["server_seconds"]["count"]
                                    - stats["server_seconds"]["count"]
                                )
                    result.others_cpu = meter.stop()
                    if result.errors:
                        progress.console.print(
                            f"[red]{row.label} c={level}: {result.errors} errors, "
                            f"first: {result.first_error}"
                        )
                    results.setdefault((row.label, level), []).append(result)
                    progress.advance(task)
                    if not progress.console.is_terminal:  # no bar in a log: a line per step
                        print(
                            f"  round {round_index + 1}, c={level}, {row.label}: "
                            f"{result.throughput:.0f}/s (others used {result.others_cpu:.2f} cores)"
                            + (f"; batches {describe(result.batches)}" if result.batches else ""),
                            flush=True,
                        )
    return results


def generate_load(row: Row, level: int, args: argparse.Namespace) -> serve_load.LoadResult:
    if isinstance(row.target, perf_analyzer.Target):
        return perf_analyzer.load(row.target, level, args.duration)
    assert row.target is not None
    return serve_load.measure(row.target, level, args.duration, args.warmup, args.client_processes)


@contextlib.contextmanager
def profiled(row: Row, level: int, args: argparse.Namespace) -> Iterator[None]:
    """With --profile, py-spy samples every process of a gpux server while the row is measured
    (after the warm-up): one collapsed-stack file per process, ``py-spy record --format raw
    --gil``, the samples in which a thread holds its process's GIL. Their count over the
    expected one (rate x seconds) says how busy each interpreter is, which is what a shared
    engine runs out of; the stacks say on what (the engine's file has gpux/serve/engine.py in
    them, a front-end's the HTTP or gRPC server)."""
    if not args.profile or row.server != "gpux serve" or row.protocol not in args.profile_rows:
        yield
        return
    assert row.pid is not None
    folder, root = args.profile, row.pid
    folder.mkdir(parents=True, exist_ok=True)
    spies = []

    def start() -> None:
        time.sleep(args.warmup)
        for pid in machine_load.tree_pids(root):
            name = f"{row.protocol.replace(' ', '-')}-c{level}-{pid}.txt"
            command = [args.py_spy, "record", "--pid", str(pid), "--format", "raw", "--gil"]
            command += ["--nonblocking", "--threads", "--rate", "200", "--output"]
            command += [str(folder / name), "--duration", str(max(1, int(args.duration)))]
            spies.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    try:
        yield
    finally:
        starter.join()
        for spy in spies:
            spy.wait(timeout=30)


def describe(profile: dict[str, Any]) -> str:
    """``batch_profile`` in a line: the commonest sizes first."""
    calls = sorted(profile["calls_by_batch_size"].items(), key=lambda kv: -kv[1])[:4]
    shown = ", ".join(f"b{size} x{count}" for size, count in calls)
    return (
        f"{shown}; {profile['rows_per_call']} rows/call, join {profile['join_ms_per_call']} ms,"
        f" run {profile['run_ms_per_call']} ms per call; per request queue"
        f" {profile['queue_ms_per_request']} ms, batcher {profile.get('batcher_ms_per_request')}"
        f" ms, server {profile.get('server_ms_per_request')} ms"
        + (
            "; engine call stages "
            + ", ".join(f"{k} {v}" for k, v in profile["engine_stages_ms_per_call"].items())
            + " ms"
            if profile.get("engine_stages_ms_per_call")
            else ""
        )
    )


def peer_for(row: Row, kind: str) -> str | None:
    """The peer row a GPUX row is compared with: MLServer over the same transport, FastAPI's
    JSON endpoint for every HTTP row."""
    if kind == "MLServer":
        return "MLServer, gRPC" if row.protocol == "gRPC" else "MLServer, HTTP JSON"
    return "FastAPI, HTTP JSON" if row.protocol != "gRPC" else None


def ratio(runs: Runs, label: str, other: str | None, level: int) -> float | None:
    """The median over rounds of one row's throughput over another's in the same round: two
    rows of a round are measured minutes apart at most, closer than any two rounds."""
    mine, theirs = runs.get((label, level)), runs.get((other or "", level))
    if not mine or not theirs:
        return None
    return statistics.median(
        a.throughput / b.throughput for a, b in zip(mine, theirs, strict=True) if b.throughput
    )


CAPTION = (
    "inf/s, p50, p99: the round picked (see the title); ratios: the median over rounds of the "
    "two rows' ratio within a round; inf/s: rows answered per second (one per request); "
    "in-process rows are measured again at each level, between the servers; vs MLServer: "
    "MLServer over the same transport (HTTP JSON for both HTTP rows); vs FastAPI: its JSON "
    "endpoint; CPU ms/inf: the server's CPU time (every process and thread) per answer, in process "
    "ONNX Runtime's per row, which other processes on the cores barely change; "
    "client CPU: the load generator's CPU time per second (100% = one core); others' "
    "CPU: cores used meanwhile by processes that are not this benchmark or its servers"
)


def report(
    rows: list[Row], levels: list[int], runs: Runs, pick: str, best_label: str, title: str
) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=CAPTION, title_justify="left", caption_justify="left")
    for column in ("server", "protocol"):
        table.add_column(column)
    for column in ("c", "inf/s", "p50 ms", "p99 ms", "vs in-proc best", "vs MLServer"):
        table.add_column(column, justify="right")
    for column in ("vs FastAPI", "CPU ms/inf", "client CPU", "others' CPU", "errors"):
        table.add_column(column, justify="right")
    found: dict[str, Any] = {}
    for level in levels:
        for index, row in enumerate(rows):
            chosen = median_round if pick == "median" else quietest_round
            result = chosen(runs[(row.label, level)])
            versus = {"in_process_best": ratio(runs, row.label, best_label, level)}
            if row.server == "gpux serve":
                versus["mlserver"] = ratio(runs, row.label, peer_for(row, "MLServer"), level)
                versus["fastapi"] = ratio(runs, row.label, peer_for(row, "FastAPI"), level)
            shown = [f"{v:.2f}" if v is not None else "" for v in versus.values()]
            table.add_row(
                row.server, row.protocol, str(level) if row.target else "1",
                f"{result.throughput:.0f}", f"{result.percentile_ms(0.5):.2f}",
                f"{result.percentile_ms(0.99):.2f}", *shown, *[""] * (3 - len(shown)),
                f"{cpu:.2f}" if (cpu := result.server_cpu_ms_per_answer) is not None else "",
                f"{result.client_cpu_share:.0%}" if row.target else "",
                f"{result.others_cpu:.2f}",
                str(result.errors) if row.target else "",
                end_section=index == len(rows) - 1,
            )  # fmt: skip
            found.setdefault(row.label, {})[level] = {
                **result.as_dict(),
                "rounds": [r.as_dict() for r in runs[(row.label, level)]],
                **{f"vs_{k}": round(v, 3) for k, v in versus.items() if v is not None},
            }
    console = Console(width=max(Console().width, 150))
    console.print(table)
    for line in target_lines(runs, levels):
        console.print(line)
    return found


def target_lines(runs: Runs, levels: list[int]) -> list[str]:
    """Issue 15's CPU targets, where this run measured what they need, with how busy the rest
    of the machine was meanwhile (a shared machine can decide a verdict either way)."""
    lines = []
    if 32 in levels:
        for peer in ("MLServer, HTTP JSON", "FastAPI, HTTP JSON"):
            value = ratio(runs, "gpux serve, HTTP JSON", peer, 32)
            if value is not None:
                mark = "met" if value >= 1.2 else "NOT met"
                others = busiest(runs, ["gpux serve, HTTP JSON", peer], 32)
                lines.append(
                    f"HTTP JSON, c=32: gpux serve / {peer} = {value:.2f} (>= 1.2: {mark}; "
                    f"others used up to {others:.2f} cores meanwhile)"
                )
    binary = runs.get(("gpux serve, HTTP binary", 1))
    bare = runs.get((f"{IN_PROCESS}, batch 1", 1))
    if binary and bare:
        added = statistics.median(
            b.percentile_ms(0.5) - a.percentile_ms(0.5) for a, b in zip(bare, binary, strict=True)
        )
        mark = "met" if added <= 0.5 else "NOT met"
        others = busiest(runs, ["gpux serve, HTTP binary", f"{IN_PROCESS}, batch 1"], 1)
        lines.append(
            f"HTTP binary, c=1: p50 over in-process batch 1, median over rounds: {added:+.2f} ms "
            f"(<= 0.5 ms: {mark}; others used up to {others:.2f} cores meanwhile)"
        )
    return lines


def busiest(runs: Runs, labels: list[str], level: int) -> float:
    return max(r.others_cpu for label in labels for r in runs[(label, level)])


def plot(path: Path, rows: list[Row], levels: list[int], found: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5))
    for row in rows:
        throughput = [found[row.label][level]["throughput_per_s"] for level in levels]
        style = {"linestyle": "--", "color": "grey"} if row.target is None else {"marker": "o"}
        axes.plot(levels, throughput, label=row.label, **style)  # type: ignore[arg-type]
    axes.set_xscale("log", base=2)
    axes.set_xticks(levels, [str(level) for level in levels])
    axes.set_xlabel("concurrent clients (in process: measured at that step, one caller)")
    axes.set_ylabel("inferences / s")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def resolve_model(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise SystemExit(f"no ONNX file at {path}")
        return path.resolve()
    if name not in zoo.ZOO:
        raise SystemExit(f"--model: '{name}' is neither an .onnx file nor a zoo model")
    return zoo.fetch(name)


def main() -> int:
    # A terminated run still stops the servers it started (``running``'s finally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm", help="zoo name or .onnx file")
    parser.add_argument("--sequence", type=int, default=16, help="size of symbolic dims")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per row")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--pick",
        default="median",
        choices=["median", "quietest"],
        help="which round each cell shows: median throughput, or least CPU used by others",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before each step, wait up to this many seconds for other processes to use "
        "less than --quiet-below cores (a shared machine)",
    )
    parser.add_argument("--quiet-below", type=float, default=0.3, help="cores")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64", help="in process")
    parser.add_argument("--max-batch-size", type=int, default=32, help="gpux and MLServer")
    parser.add_argument("--batch-delay-ms", type=float, default=2.0, help="gpux and MLServer")
    parser.add_argument("--backend", default="cpu", choices=sorted(PROVIDERS))
    parser.add_argument("--gpux-args", default="", help="more `gpux serve` options, quoted")
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="build with runtime.cuda.cuda_graphs: true"
    )
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="load generator processes (more on a many-core GPU machine)",
    )
    parser.add_argument(
        "--perf-analyzer",
        action="store_true",
        help="also measure gpux serve's HTTP binary and gRPC with Triton's perf_analyzer "
        "(make perf-analyzer)",
    )
    parser.add_argument(
        "--protocols",
        default=",".join(PROTOCOLS),
        help="which servers' rows to measure, by protocol (a lent GPU's minutes are few)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument(
        "--profile", type=Path, help="folder: py-spy samples of gpux's processes per row"
    )
    parser.add_argument(
        "--profile-rows", default="HTTP binary", help="which gpux rows --profile samples"
    )
    parser.add_argument("--py-spy", default="py-spy", help="the py-spy binary for --profile")
    args = parser.parse_args()
    wanted = {name.strip() for name in args.protocols.split(",")}
    unknown = wanted - set(PROTOCOLS)
    if unknown:
        parser.error(f"--protocols: unknown {sorted(unknown)}; choose from {', '.join(PROTOCOLS)}")
    levels = [int(c) for c in args.concurrency.split(",")]
    sizes = sorted({1, *(int(b) for b in args.batch_sizes.split(","))})

    model = resolve_model(args.model)
    feed = one_request(model, args.sequence)
    shapes = ", ".join(f"{n} {list(v.shape)}" for n, v in feed.items())
    print(f"in-process ONNX Runtime: the best of batch sizes {sizes} ...", flush=True)
    in_process = InProcess(model, feed, args.backend)
    best, rates = in_process.best_batch(sizes, min(args.duration, 2.0))
    print("  rows/s: " + ", ".join(f"b{size} {rate:.0f}" for size, rate in rates.items()))
    rows = [Row(IN_PROCESS, "batch 1"), Row(IN_PROCESS, f"batch {best} (best)", batch=best)]
    title = (
        f"{args.model}: one row per request ({shapes}); {args.backend}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; batching {args.max_batch_size} rows / "
        f"{args.batch_delay_ms} ms; {args.duration} s per row after {args.warmup} s; "
        f"{args.rounds} round(s), the {args.pick} shown"
    )

    with tempfile.TemporaryDirectory(prefix="gpux-bench-serve-") as tmp:
        folder = Path(tmp)
        print("building the image and starting the servers ...", flush=True)
        build_image(model, folder / "home", args.backend, args.cuda_graphs)
        servers = [gpux_server(folder / "home", args)]
        if args.skip_peers:
            print("skipping the peers (--skip-peers)")
        else:
            servers += peer_servers(model, folder, args)
        with running(servers) as up:
            rows += [
                row for server in up for row in rows_of(server, feed) if row.protocol in wanted
            ]
            for row in rows[2:]:
                check_answer(row, in_process.reference)
            if args.perf_analyzer:
                rows += attached(up[0], perf_analyzer_rows(up[0], feed))
            runs = measure_all(rows, levels, in_process, args)
    found = report(rows, levels, runs, args.pick, rows[1].label, title)
    if args.json:
        summary = {"title": title, "in_process_sweep_rows_per_s": rates, "rows": found}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if args.plot:
        plot(args.plot, rows, levels, found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
