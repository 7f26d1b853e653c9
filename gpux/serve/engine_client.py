"""A front-end's side of the shared engine (gpux/serve/engine.py): one connection, many calls
in flight, and a :class:`RemoteBackend` per model that the front-end's pipelines and batchers
use as they would a local session."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from multiprocessing.connection import Client
from pathlib import Path
from typing import Any

import numpy as np

from gpux.config.schema import Runtime
from gpux.errors import BackendError, InputError
from gpux.runtime.backend import Backend, Placement
from gpux.serve.engine_wire import ADDRESS_ENV, AUTHKEY_ENV, Channel

# Calls one front-end keeps in flight to the engine: enough that a front-end's requests reach
# the engine while its earlier ones run, so the engine can batch them with everyone else's.
FRONT_END_CALLS = 4


class EngineGone(BackendError):
    """The engine process stopped; every call fails until the server restarts."""


class EngineClient:
    def __init__(self, address: str, authkey: bytes) -> None:
        try:
            self._channel = Channel.of(Client(address, family="AF_UNIX", authkey=authkey))
        except OSError as exc:
            raise EngineGone(
                f"cannot reach the model engine at {address} ({exc})", "restart the server"
            ) from exc
        self._send_lock = threading.Lock()
        self._ids = itertools.count()
        self._waiting: dict[int, Future[dict[str, Any]]] = {}
        self._gone: str | None = None
        with self._send_lock:
            self._channel.send("hello", {})
        head, _ = self._channel.receive()
        self.placements: dict[str, dict[str, Any]] = head[1]
        threading.Thread(target=self._read, name="gpux-engine-replies", daemon=True).start()

    @classmethod
    def from_environment(cls) -> EngineClient | None:
        """The engine this process was started to use (its address and key are in the
        environment the server set for its workers), if any."""
        address = os.environ.get(ADDRESS_ENV)
        if not address:
            return None
        return cls(address, bytes.fromhex(os.environ[AUTHKEY_ENV]))

    def call(
        self, key: str, feed: Mapping[str, np.ndarray[Any, Any]], timeout: float
    ) -> dict[str, np.ndarray[Any, Any]]:
        if self._gone is not None:
            raise EngineGone(self._gone, "restart the server")
        call_id = next(self._ids)
        future: Future[dict[str, Any]] = Future()
        self._waiting[call_id] = future
        try:
            with self._send_lock:
                self._channel.send((call_id, key, timeout), feed)
        except OSError as exc:
            self._waiting.pop(call_id, None)
            raise EngineGone(f"the model engine stopped ({exc})", "restart the server") from exc
        # A little longer than the engine's own limit: its timeout answer comes first.
        return future.result(timeout + 5.0)

    def _read(self) -> None:
        while True:
            try:
                (call_id, failure), outputs = self._channel.receive()
            except (EOFError, OSError, ValueError) as exc:
                self._gone = f"the model engine process stopped ({type(exc).__name__})"
                for waiting in list(self._waiting.values()):
                    if not waiting.done():
                        waiting.set_exception(EngineGone(self._gone, "restart the server"))
                self._waiting.clear()
                return
            future = self._waiting.pop(call_id, None)
            if future is None:
                continue
            if failure is None:
                future.set_result(outputs)
            else:
                future.set_exception(raised(failure))


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
        return self.client.call(self.key, feed, self.timeout)

    @property
    def placement(self) -> Placement:
        return self._placement
