"""A closed-loop load generator for inference servers: N clients, each sending its next request
when the last one is answered, for a fixed time after a warm-up.

Built to cost the client as little as possible, because on a 2-core machine the client shares
the cores with the server it measures:

* HTTP/1.1 on raw asyncio protocols, one kept-alive connection per client; the request bytes
  are made once, and an answer is read by its Content-Length and not parsed (the caller checks
  one answer of each target before the load, see ``check``);
* gRPC through ``grpc.aio`` with the request serialised once and answers kept as bytes (no
  protobuf parsing per call), one channel per client.

Each result carries the client's own CPU time, so a report can show how much of the machine
the generator took. ``python benchmarks/serve_load.py --self-test`` measures the generator
against a server that answers a canned body at once: its ceiling must sit far above the rates
it reports for real servers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class HttpTarget:
    """One POST, sent as it is again and again."""

    host: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def request_bytes(self) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Content-Length: {len(self.body)}",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass(frozen=True)
class GrpcTarget:
    """One unary call of a serialised request (``ModelInfer`` unless told otherwise)."""

    host: str
    port: int
    request: bytes
    method: str = GRPC_INFER


Target = HttpTarget | GrpcTarget


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    latencies: list[float]  # seconds, sorted; requests sent and answered inside the window
    completed: int  # answers that arrived inside the window
    errors: int
    first_error: str | None
    client_cpu_s: float  # this process's CPU time over the window
    others_cpu: float = 0.0  # cores used by other processes meanwhile (benchmarks/machine_load.py)
    answered_all: int = 0  # answers over the whole step, warm-up included
    server_cpu_s: float | None = None  # the server's CPU time over the whole step, if measured
    batches: dict[str, Any] | None = None  # gpux serve: its batcher's calls (serve.py)
    # Percentiles (share -> ms) from a generator that reports them but not each latency
    # (perf_analyzer, benchmarks/perf_analyzer.py); ``latencies`` is then empty.
    reported_ms: dict[float, float] | None = None

    @property
    def throughput(self) -> float:
        return self.completed / self.seconds

    def percentile_ms(self, share: float) -> float:
        if self.reported_ms is not None:
            return self.reported_ms.get(share, float("nan"))
        if not self.latencies:
            return float("nan")
        if share == 0.5:
            return 1e3 * statistics.median(self.latencies)
        return 1e3 * self.latencies[min(len(self.latencies) - 1, int(share * len(self.latencies)))]

    @property
    def server_cpu_ms_per_answer(self) -> float | None:
        """The server's CPU time per answer (all its processes and threads): unlike the rates,
        it barely moves when other processes take the cores."""
        if self.server_cpu_s is None or not self.answered_all:
            return None
        return 1e3 * self.server_cpu_s / self.answered_all

    @property
    def client_cpu_share(self) -> float:
        """The generator's CPU time per second of wall time (1.0 = one core, all the time)."""
        return self.client_cpu_s / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "throughput_per_s": round(self.throughput, 1),
            "p50_ms": round(self.percentile_ms(0.5), 3),
            "p99_ms": round(self.percentile_ms(0.99), 3),
            "requests": len(self.latencies) if self.reported_ms is None else self.completed,
            "errors": self.errors,
            "first_error": self.first_error,
            "client_cpu_share": round(self.client_cpu_share, 3),
            "others_cpu_cores": round(self.others_cpu, 2),
            "server_cpu_ms_per_answer": (
                None if (cpu := self.server_cpu_ms_per_answer) is None else round(cpu, 3)
            ),
            **({"batches": self.batches} if self.batches else {}),
        }


class _HttpConnection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.header_end = -1
        self.total = -1  # header + body length of the answer being read, once known

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.total < 0:
            self.header_end = self.buffer.find(b"\r\n\r\n")
            if self.header_end < 0:
                return
            length = _content_length(bytes(self.buffer[: self.header_end]))
            self.total = self.header_end + 4 + length
        if len(self.buffer) >= self.total and self.waiter is not None:
            status = int(self.buffer[9:12])
            # Only a refusal's body is read (its message); an answer's is dropped unread, not
            # copied out (BERT-base's are 396 KB).
            body = bytes(self.buffer[self.header_end + 4 : self.total]) if status != 200 else b""
            del self.buffer[: self.total]
            self.total = -1
            self.waiter.set_result((status, body))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await self.waiter
        finally:
            self.waiter = None


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    # Every server measured here sends a length; chunked answers would need a real parser.
    raise ConnectionError(f"answer without Content-Length: {head[:200]!r}")


async def _http_caller(target: HttpTarget) -> Callable[[], Awaitable[str | None]]:
    """A function that sends the target's request once and says what went wrong, if anything."""
    request = target.request_bytes()
    loop = asyncio.get_running_loop()
    connection: _HttpConnection | None = None

    async def call() -> str | None:
        nonlocal connection
        if connection is None or connection.transport is None:
            _, connection = await loop.create_connection(_HttpConnection, target.host, target.port)
        status, body = await connection.send(request)
        if status != 200:
            return f"HTTP {status}: {body[:300]!r}"
        return None

    return call


async def _grpc_caller(target: GrpcTarget) -> Callable[[], Awaitable[str | None]]:
    import grpc

    # Each client its own connection, as separate clients have: gRPC otherwise shares one
    # connection between a process's channels to the same address, and a server of several
    # workers (SO_REUSEPORT) then serves a process's every call in one worker (measured: one
    # of two front-ends held its GIL 78% of the time, the other 0.2%).
    options = [
        ("grpc.max_receive_message_length", 256 << 20),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    channel = grpc.aio.insecure_channel(f"{target.host}:{target.port}", options=options)
    method = channel.unary_unary(target.method)  # bytes in, bytes out: nothing parsed here

    async def call() -> str | None:
        try:
            await method(target.request)
        except grpc.aio.AioRpcError as exc:
            return f"gRPC {exc.code().name}: {exc.details()}"
        return None

    return call


async def run_load(
    target: Target,
    concurrency: int,
    seconds: float,
    warmup: float = 1.0,
    start_at: float | None = None,
) -> LoadResult:
    """``concurrency`` clients in a closed loop: warm-up, then ``seconds`` measured.

    A request counts toward the latencies when it is sent and answered inside the window, and
    toward the throughput when its answer arrives inside it (so a slow answer straddling the
    edge is not lost from the rate).
    """
    make = _http_caller if isinstance(target, HttpTarget) else _grpc_caller
    callers = [await make(target) for _ in range(concurrency)]  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    # start_at: a time.monotonic() instant shared by several generator processes (the loop's
    # clock is the same monotonic clock), so their windows coincide.
    start = loop.time() + warmup if start_at is None else start_at
    stop = start + seconds
    latencies: list[float] = []
    completed = errors = answered_all = 0
    first_error: str | None = None

    async def client(call: Callable[[], Awaitable[str | None]]) -> None:
        nonlocal completed, errors, first_error, answered_all
        while (sent := loop.time()) < stop:
            try:
                error = await call()
            except (OSError, ConnectionError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            answered = loop.time()
            if error is not None:
                errors += answered >= start
                first_error = first_error or error
                await asyncio.sleep(0.01)  # a refusing server is not hammered in a tight loop
                continue
            answered_all += 1
            if start <= answered < stop:
                completed += 1
                if sent >= start:
                    latencies.append(answered - sent)

    async def cpu_at(when: float) -> float:
        await asyncio.sleep(max(0.0, when - loop.time()))
        return time.process_time()

    clients = [asyncio.create_task(client(call)) for call in callers]
    cpu_start, cpu_stop = await asyncio.gather(cpu_at(start), cpu_at(stop))
    await asyncio.gather(*clients)
    latencies.sort()
    result = LoadResult(
        concurrency, seconds, latencies, completed, errors, first_error, cpu_stop - cpu_start
    )
    result.answered_all = answered_all
    return result


def measure(
    target: Target,
    concurrency: int,
    seconds: float,
    warmup: float = 1.0,
    processes: int = 1,
    start_at: float | None = None,
) -> LoadResult:
    """``run_load`` on a fresh event loop (each measurement starts with new connections).

    ``processes`` > 1 splits the clients over that many generator processes, started together,
    and adds up their results: for servers faster than one Python process can drive (a GPU
    server on a many-core machine; ``client_cpu_share`` near 1.0 says when)."""
    processes = max(1, min(processes, concurrency))
    if processes == 1:
        return asyncio.run(run_load(target, concurrency, seconds, warmup, start_at))
    import multiprocessing

    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    # One window for all: after the processes have started (a few seconds at most) and warmed up.
    start_at = time.monotonic() + 5.0 + warmup
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.starmap(measure, [(target, n, seconds, warmup, 1, start_at) for n in shares])
    result = LoadResult(
        concurrency,
        seconds,
        sorted(x for part in parts for x in part.latencies),
        sum(part.completed for part in parts),
        sum(part.errors for part in parts),
        next((part.first_error for part in parts if part.first_error), None),
        sum(part.client_cpu_s for part in parts),
    )
    result.answered_all = sum(part.answered_all for part in parts)
    return result


# --- self-test: the generator's own ceiling ---------------------------------------------------

CANNED_SERVER = """
import asyncio, sys
body = b"x" * int(sys.argv[1])
answer = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body

class Canned(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\\r\\n\\r\\n")
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].split(b"\\r\\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(answer)

async def main():
    server = await asyncio.get_running_loop().create_server(Canned, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def self_test(
    concurrency: list[int],
    seconds: float,
    request_bytes: int,
    answer_bytes: int,
    processes: int = 1,
) -> None:
    """The generator against a server that answers a canned body without any work."""
    server = subprocess.Popen(
        [sys.executable, "-c", CANNED_SERVER, str(answer_bytes)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        target = HttpTarget("127.0.0.1", port, "/", b"y" * request_bytes)
        print(
            f"canned server, {request_bytes} B requests, {answer_bytes} B answers, "
            f"{os.cpu_count()} cores (server and generator share them), {processes} generator process(es)"
        )
        for level in concurrency:
            result = measure(target, level, seconds, warmup=0.5, processes=processes)
            print(
                f"  c={level:<3} {result.throughput:8.0f} req/s  p50 {result.percentile_ms(0.5):6.2f}"
                f" ms  p99 {result.percentile_ms(0.99):6.2f} ms  generator CPU "
                f"{result.client_cpu_share:4.0%} of a core  errors {result.errors}"
            )
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--self-test", action="store_true", help="the generator's own ceiling")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--request-bytes", type=int, default=700, help="MiniLM JSON: ~700")
    parser.add_argument("--answer-bytes", type=int, default=124_000, help="MiniLM JSON: ~124 KB")
    parser.add_argument(
        "--processes", type=int, default=1, help="generator processes (serve.py --client-processes)"
    )
    args = parser.parse_args()
    if not args.self_test:
        parser.error("run with --self-test; benchmarks/serve.py uses this module as a library")
    levels = [int(c) for c in args.concurrency.split(",")]
    self_test(levels, args.duration, args.request_bytes, args.answer_bytes, args.processes)


if __name__ == "__main__":
    main()
