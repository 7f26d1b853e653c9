"""A front-end's side of the shared engine (gpux/serve/engine.py): one connection, many calls
in flight, and a :class:`RemoteBackend` per model that the front-end's pipelines and batchers
use as they would a local session.

Calls go out and answers come in on the front-end's event loop (:meth:`EngineClient.attach`):
a request's call is written by the loop that parsed it, and its answer is read by the same
loop, straight into its arrays (asyncio's BufferedProtocol), so a plain tensor request crosses
no thread in this process. Before, a pool thread sent each call and waited for a reader thread
to hand it the answer, and each hop waited for the interpreter lock held by a busy loop: ResNet-50
requests spent 5-7 ms outside the engine's model call at c=32 on an H100 (docs/benchmarks.md).
Threads that call (a pipeline's steps run on the front-end's pool) hand their call to the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import socket
import threading
from collections.abc import Iterable, Mapping
from multiprocessing.connection import Client
from pathlib import Path
from typing import Any

import numpy as np

from gpux import env
from gpux.config.schema import Runtime
from gpux.errors import BackendError, InputError
from gpux.runtime.backend import Backend, Placement
from gpux.serve.batching import CALLERS
from gpux.serve.engine_arena import SMALLEST_PLACED, Arena
from gpux.serve.engine_trace import CallTimes
from gpux.serve.engine_wire import ADDRESS_ENV, AUTHKEY_ENV, Arrays, Channel, MessageReader, encode

# Calls one front-end keeps in flight to the engine. They cost no thread here (the loop writes
# them and reads the answers), and every request a front-end holds should reach the engine at
# once, where the batches form; the engine's queue bounds the total.
FRONT_END_CALLS = 16

Waiting = asyncio.Future[Arrays] | concurrent.futures.Future[Arrays]


class EngineGone(BackendError):
    """The engine process stopped; every call fails until the server restarts."""


class EngineClient:
    def __init__(self, address: str, authkey: bytes) -> None:
        try:
            channel = Channel.of(Client(address, family="AF_UNIX", authkey=authkey))
        except OSError as exc:
            raise EngineGone(
                f"cannot reach the model engine at {address} ({exc})", "restart the server"
            ) from exc
        self._arena = Arena.create()
        channel.send(("hello", self._arena.size if self._arena else 0), {})
        if self._arena is not None:
            socket.send_fds(channel.sock, [b"\0"], [self._arena.fd])
        head, _ = channel.receive()
        self.placements: dict[str, dict[str, Any]] = head[1]
        if not head[2]:  # the engine could not map it: every tensor takes the socket
            self._arena = None
        self._sock = channel.sock
        self._ids = itertools.count()
        self._waiting: dict[int, Waiting] = {}
        self._placed: dict[int, list[tuple[int, int]]] = {}  # call -> its arena blocks
        self._gone: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._attaching = threading.Lock()
        trace = env.engine_trace()
        self._times = CallTimes(trace) if trace is not None else None

    @classmethod
    def from_environment(cls) -> EngineClient | None:
        """The engine this process was started to use (its address and key are in the
        environment the server set for its workers), if any."""
        address = os.environ.get(ADDRESS_ENV)
        if not address:
            return None
        return cls(address, bytes.fromhex(os.environ[AUTHKEY_ENV]))

    async def attach(self) -> None:
        """Make the running loop the one that writes the calls and reads the answers (the
        server's, as it starts; again on the same loop is a no-op)."""
        loop = asyncio.get_running_loop()
        with self._attaching:
            if self._loop is not None:
                if self._loop is not loop:
                    raise RuntimeError("an engine client serves one event loop")
                return
            self._loop = loop
        transport, _ = await loop.create_unix_connection(lambda: _Answers(self), sock=self._sock)
        self._transport = transport

    def start(
        self,
        key: str,
        feed: Mapping[str, np.ndarray[Any, Any]],
        timeout: float,
        requests: int = 1,
    ) -> asyncio.Future[Arrays]:
        """A call, from the attached loop's thread: the future of its outputs. The arrays of
        ``feed`` must stay as they are until it is done (they are written as they lie).
        ``requests``: the callers whose rows ``feed`` holds (for the engine's statistics)."""
        future: asyncio.Future[Arrays] = asyncio.get_running_loop().create_future()
        self._send(future, key, feed, timeout, requests)
        return future

    def call(
        self,
        key: str,
        feed: Mapping[str, np.ndarray[Any, Any]],
        timeout: float,
        requests: int = 1,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """A call from any other thread, which waits for the outputs."""
        loop = self._loop
        if loop is None:
            raise BackendError(
                "the model engine is not connected yet", "wait until the server is ready"
            )
        future: concurrent.futures.Future[Arrays] = concurrent.futures.Future()
        try:
            loop.call_soon_threadsafe(self._send, future, key, feed, timeout, requests)
        except RuntimeError as exc:  # the loop is closed: the server is stopping
            raise EngineGone("the server is stopping", "restart the server") from exc
        # A little longer than the engine's own limit: its timeout answer comes first.
        return future.result(timeout + 5.0)

    def _send(
        self,
        future: Waiting,
        key: str,
        feed: Mapping[str, np.ndarray[Any, Any]],
        timeout: float,
        requests: int,
    ) -> None:
        if self._gone is not None or self._transport is None:
            future.set_exception(
                EngineGone(self._gone or "the model engine is not connected", "restart the server")
            )
            return
        call_id = next(self._ids)
        self._waiting[call_id] = future
        if self._times is not None:
            self._times.sent(call_id)
        self._transport.writelines(
            encode((call_id, key, timeout, requests), feed, self._place(call_id, feed))
        )

    def _place(self, call_id: int, feed: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, int]:
        """The large tensors of a call copied into the arena, while it has room: their
        offsets (the rest go through the socket)."""
        placed: dict[str, int] = {}
        if self._arena is None:
            return placed
        blocks = []
        for name, array in feed.items():
            if array.nbytes < SMALLEST_PLACED or array.dtype.hasobject:
                continue
            offset = self._arena.place(array)
            if offset is None:
                break
            placed[name] = offset
            blocks.append((offset, array.nbytes))
        if blocks:
            self._placed[call_id] = blocks
        return placed

    def answered(self, head: Any, outputs: Arrays) -> None:
        call_id, failure = head[:2]
        if self._times is not None and len(head) > 2:  # the engine's stamps
            self._times.answered(call_id, head[2])
        if self._arena is not None:  # the engine reads the call's blocks no more
            for offset, nbytes in self._placed.pop(call_id, ()):
                self._arena.give_back(offset, nbytes)
        future = self._waiting.pop(call_id, None)
        if future is None or future.done():  # an asyncio caller that was cancelled
            return
        if failure is None:
            future.set_result(outputs)
        else:
            future.set_exception(raised(failure))

    def lost(self, why: str) -> None:
        self._gone = self._gone or why
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(EngineGone(why, "restart the server"))


class _Answers(asyncio.BufferedProtocol):
    """The engine's answers, read by the loop into each output's array."""

    def __init__(self, client: EngineClient) -> None:
        self.client = client
        self.reader = MessageReader(client.answered)
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.buffer()

    def buffer_updated(self, nbytes: int) -> None:
        try:
            self.reader.filled(nbytes)
        except ValueError as exc:  # not what an engine sends
            self.client.lost(f"the model engine sent a message no engine sends ({exc})")
            if self.transport is not None:
                self.transport.close()

    def eof_received(self) -> bool:
        self.client.lost("the model engine process stopped")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost(
            f"the model engine process stopped ({type(exc).__name__ if exc else 'EOF'})"
        )


def raised(failure: tuple[str, str, str | None]) -> Exception:
    kind, message, hint = failure
    if kind == "timeout":
        return TimeoutError(message)
    if kind == "input":
        return InputError(message, hint)
    return BackendError(message, hint)


class RemoteBackend(Backend):
    """A model that runs in the engine process: ``run`` is a call to it."""

    name = "engine"

    def __init__(self, client: EngineClient, key: str, timeout: float) -> None:
        self.client = client
        self.key = key
        self.timeout = timeout
        placement = dict(client.placements[key])
        details = {**placement.pop("details", {}), "process": "shared engine"}
        self._placement = Placement(**placement, details=details)

    @classmethod
    def load(
        cls,
        model_path: Path,
        runtime: Runtime,
        cache_dir: Path | None = None,
        dimensions: Mapping[str, int] | None = None,
    ) -> Backend:  # pragma: no cover - made by the server, never by name
        raise NotImplementedError("a remote backend is made by gpux serve's front-ends")

    def run(self, feed: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """From a model thread: the requests of the batch it runs go with the call."""
        return self.client.call(self.key, feed, self.timeout, CALLERS.get())

    def start(
        self, feed: Mapping[str, np.ndarray[Any, Any]], requests: int = 1
    ) -> asyncio.Future[Arrays]:
        """``run`` from the loop's thread, without a thread: the future of its outputs."""
        return self.client.start(self.key, feed, self.timeout, requests)

    @property
    def placement(self) -> Placement:
        return self._placement


def engine_clients(models: Iterable[Any]) -> list[EngineClient]:
    """The engine clients that the served ``models`` call (one per front-end, or none)."""
    from gpux.serve.engine import leaves

    found: dict[int, EngineClient] = {}
    for served in models:
        for leaf in leaves(served.model):
            backend = getattr(leaf, "backend", None)
            if isinstance(backend, RemoteBackend):
                found[id(backend.client)] = backend.client
    return list(found.values())
