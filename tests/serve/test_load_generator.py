"""benchmarks/serve_load.py, the load generator behind benchmarks/serve.py, against small servers
in the test's own event loop: it counts what a closed loop can count, reads answers that arrive
in pieces, and reports refusals as errors instead of throughput."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from benchmarks import serve_load

Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def http_server(answer: Answer) -> AsyncIterator[int]:
    """A keep-alive server that reads each request (headers + Content-Length) and calls
    ``answer``; yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                await answer(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def ok(body: bytes, pause: float, split: bool = False) -> Answer:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)

    async def answer(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(pause)
        if split:  # the header and half the body, then the rest: the client must wait for it
            writer.write(head + body[: len(body) // 2])
            await writer.drain()
            await asyncio.sleep(0.002)
            writer.write(body[len(body) // 2 :])
        else:
            writer.write(head + body)
        await writer.drain()

    return answer


def test_a_closed_loop_cannot_outrun_the_server() -> None:
    async def scenario() -> serve_load.LoadResult:
        async with http_server(ok(b"{}", pause=0.02)) as port:
            target = serve_load.HttpTarget("127.0.0.1", port, "/infer", b'{"inputs": []}')
            return await serve_load.run_load(target, concurrency=4, seconds=1.0, warmup=0.2)

    result = asyncio.run(scenario())
    assert result.errors == 0
    # 4 clients, each waiting 20 ms per answer: at most 200 answers/s, and not far below it.
    assert 80 <= result.throughput <= 205
    assert result.percentile_ms(0.5) >= 20
    assert len(result.latencies) <= result.completed


def test_answers_arriving_in_pieces_are_read_whole() -> None:
    body = b"x" * 200_000

    async def scenario() -> serve_load.LoadResult:
        async with http_server(ok(body, pause=0, split=True)) as port:
            target = serve_load.HttpTarget("127.0.0.1", port, "/infer", b"{}")
            return await serve_load.run_load(target, concurrency=2, seconds=0.5, warmup=0.1)

    result = asyncio.run(scenario())
    assert result.errors == 0 and result.completed > 10
    assert min(result.latencies) >= 0.002  # every answer waited for its second half


def test_refusals_are_errors_not_throughput() -> None:
    async def refuse(writer: asyncio.StreamWriter) -> None:
        body = b'{"error": "no such model"}'
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()

    async def scenario() -> serve_load.LoadResult:
        async with http_server(refuse) as port:
            target = serve_load.HttpTarget("127.0.0.1", port, "/infer", b"{}")
            return await serve_load.run_load(target, concurrency=2, seconds=0.3, warmup=0.1)

    result = asyncio.run(scenario())
    assert result.completed == 0 and result.errors > 0
    assert result.first_error is not None and "HTTP 404" in result.first_error
    assert "no such model" in result.first_error


def test_children_that_end_during_a_step_count_as_the_benchmarks_own_cpu() -> None:
    """A load generator's processes (and perf_analyzer) end before the step's meter stops:
    their CPU time is the benchmark's, not "others'" (it once read as others' cores)."""
    import subprocess
    import sys

    from benchmarks import machine_load

    meter = machine_load.OthersMeter()
    meter.start()
    burn = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    meter.stop()
    assert meter.ours_s >= 0.6, meter.ours_s
