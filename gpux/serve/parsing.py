"""Very large JSON infer bodies are parsed in a process of their own.

``json.loads`` holds the interpreter lock for its whole run, also on a worker thread, so a
server parsing a 60 MB JSON body (millions of numbers) answers nothing else until it is done:
``/v2/health/live`` waited 13.2 s behind one when bodies were parsed on the event loop, and
still about 2 s once they were parsed on a thread. A parse process has a lock of its own, and
what it hands back is an :class:`~gpux.serve.protocol.InferRequest` of numpy arrays, which cross
the pipe as one buffer copy each; only the body going out and the arrays coming back hold the
server's lock, for milliseconds (figures in docs/benchmarks.md).

The processes start on the first body that needs one, from a fork server (a clean
single-threaded process, not the server with its model threads), and stay for the next. Each
returns its freed memory to the kernel after every body: a 60 MB body's Python lists take
hundreds of MB while they exist. The process may be killed (out of memory) mid-parse: that
request gets a 503 and the next large body starts a new process. Like every user of
``multiprocessing``, a program that embeds the server must guard its entry point with
``if __name__ == "__main__":``; ``GPUX_PARSE_PROCESSES=0`` parses on the server's threads instead.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from gpux.runtime.tensors import TensorSignature
from gpux.serve import protocol
from gpux.serve.guards import HTTPError
from gpux.serve.memory import trim_now
from gpux.serve.protocol import Array

# A JSON body this large takes ~60 ms of the lock to parse (json.loads, 2-core machine); the
# trip to the process and back costs about 2 ms at this size.
PROCESS_BYTES = 4 << 20


class ParseProcesses:
    """Up to ``workers`` parse processes, started when first needed; 0 keeps parsing in-process."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def takes(self, size: int, header_length: int | None) -> bool:
        """Whether a body of ``size`` bytes is parsed here: only when its JSON is large (the
        JSON header of a binary body is small, and its tensors are copied, not parsed)."""
        json_size = size if header_length is None else header_length
        return self.workers > 0 and json_size >= PROCESS_BYTES

    async def parse(
        self, body: bytes, header_length: int | None, signatures: list[TensorSignature]
    ) -> tuple[protocol.InferRequest, dict[str, Array]]:
        """The request and its tensors checked against the model's ``signatures``, from a
        parse process; an :class:`~gpux.errors.InputError` comes back as it was raised there.
        Checked there too, so that a request that fails sends back no tensors."""
        # On a thread: the first call starts the fork server, the resource tracker and a
        # process, and waits for them (about 200 ms, which the event loop would not answer in).
        pool, work = await asyncio.to_thread(self._submit, body, header_length, signatures)
        try:
            return await asyncio.wrap_future(work)
        except BrokenProcessPool as exc:
            self._drop(pool)
            raise _stopped() from exc

    def close(self) -> None:
        """Stop the processes; a parse in progress is abandoned (its request is ending too)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _submit(
        self, body: bytes, header_length: int | None, signatures: list[TensorSignature]
    ) -> tuple[ProcessPoolExecutor, Future[tuple[protocol.InferRequest, dict[str, Array]]]]:
        pool = self._started()
        try:
            return pool, pool.submit(_parse, body, header_length, signatures)
        except BrokenProcessPool as exc:
            self._drop(pool)
            raise _stopped() from exc

    def _started(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["gpux.serve.protocol"])
                self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
            return self._pool

    def _drop(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)


def _stopped() -> HTTPError:
    return HTTPError(
        503,
        "the process parsing this request's JSON body stopped before it finished "
        "(most likely out of memory)",
        "send the tensors in binary (Inference-Header-Content-Length), or fewer per request, "
        "and try again",
    )


def _parse(
    body: bytes, header_length: int | None, signatures: list[TensorSignature]
) -> tuple[protocol.InferRequest, dict[str, Array]]:
    try:
        request = protocol.parse_request(body, header_length)
        return request, protocol.checked_feed(request, signatures)
    finally:
        trim_now()
