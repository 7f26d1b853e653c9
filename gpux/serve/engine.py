"""The shared engine: one process that runs the models for every front-end of ``gpux serve
--workers N --shared-engine``.

Why: one server process answers ResNet-50 images at ~760/s on an H100 (1.9 ms of CPU each, on
one event loop and one GIL), a quarter of what the GPU runs; N independent workers pass that,
but each holds its own copy of the model in its own CUDA context (time-sliced, not concurrent,
without MPS) and forms its own smaller batches (docs/benchmarks.md). Here the front-ends parse,
pre-process and answer on N cores, and the engine holds the one copy of each model, in one CUDA
context, and batches the calls of every front-end together with the batcher ``gpux serve`` uses
(sessions per batch size, padding, warm-up): Triton's split of protocol front-ends and model
instances, with processes in place of threads.

The engine loads and warms every image before it listens, then reports to the parent that
started it; a front-end connects (gpux/serve/engine_client.py), learns where each model runs,
and sends each model call as one message (gpux/serve/engine_wire.py). Generative images are
not here: they stay in the front-ends, as without the engine. The engine exits with its parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, Listener
from typing import TYPE_CHECKING, Any

from gpux import env
from gpux.errors import GPUXError
from gpux.serve.engine_wire import Channel, MessageReader, Outbox

if TYPE_CHECKING:
    from gpux.runtime.model import Model
    from gpux.serve.app import ServedModel
    from gpux.serve.server import ServerSpec

logger = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class EngineFailure:
    """Why the engine could not start, as the parent reports it."""

    message: str
    hint: str | None = None


def leaves(model: Model) -> list[Model]:
    """The models that run tensors: the model itself, or each model of a chain."""
    components = getattr(model, "components", None)
    if not components:
        return [model]
    return [leaf for part in components.values() for leaf in leaves(part)]


def model_key(model: Model) -> str:
    """How the front-ends and the engine name a model: its image's name (a chain's models are
    ``parent/key``), the same in every process that resolved the same names."""
    return model.image.name if model.image is not None else "model"


class Engine:
    """Every tensor model of the served images, each behind its own batcher."""

    def __init__(self, served: list[ServedModel]) -> None:
        from gpux.serve.app import ServedModel
        from gpux.serve.metrics import Metrics

        self.by_key: dict[str, ServedModel] = {}
        for top in served:
            for leaf in leaves(top.model):
                if leaf is top.model:
                    self.by_key[model_key(leaf)] = top
                    continue
                limits = replace(top.limits, preferred_batch_sizes=())
                self.by_key[model_key(leaf)] = ServedModel(
                    model_key(leaf), top.version, leaf, 0.0, None, limits, top.threads
                )
        # Batch sizes and padding are the engine's: it forms the batches the models run.
        self.metrics = Metrics(m.name for m in served)
        # Stamps on each answer for the front-ends' stage times (gpux/serve/engine_trace.py).
        self.stamped = env.engine_trace() is not None

    def keep_writing_statistics(self) -> Coroutine[Any, Any, None] | None:
        """The batches the models ran are counted here, where they form: the engine writes
        its Triton statistics beside the front-ends' (gpux/serve/shared_stats.py), which count
        only their requests (success, failure), so that ``/stats`` adds up to one server's."""
        from gpux.serve import shared_stats, triton
        from gpux.serve.workers import shared_folder

        shared = shared_folder()
        if shared is None:
            return None
        models = list(self.by_key.values())
        return shared_stats.keep_writing(shared / "stats", lambda: triton.statistics(models))

    def placements(self) -> dict[str, dict[str, Any]]:
        return {key: m.model.placement.to_json() for key, m in self.by_key.items()}

    async def warm(self) -> None:
        from gpux.serve.warmup import warm_served

        await asyncio.gather(*(warm_served(m) for m in self.by_key.values()))
        failed = [f"{m.name}: {m.warm_error}" for m in self.by_key.values() if m.warm_error]
        if failed:
            raise GPUXError("; ".join(failed), "see the server's log")

    async def serve(self, listener: Listener) -> None:
        loop = asyncio.get_running_loop()

        def accept() -> None:
            while True:
                try:
                    conn = listener.accept()
                except OSError:
                    return  # the listener was closed
                except Exception as exc:  # a peer that failed the handshake: not a front-end
                    logger.warning("engine: refused a connection (%s)", exc)
                    continue
                threading.Thread(
                    target=self._greet,
                    args=(Channel.of(conn), loop),
                    name="gpux-engine-greet",
                    daemon=True,
                ).start()

        threading.Thread(target=accept, name="gpux-engine-accept", daemon=True).start()
        await asyncio.Event().wait()  # until the process ends

    def _greet(self, channel: Channel, loop: asyncio.AbstractEventLoop) -> None:
        """A front-end's handshake, on a thread of its own (a slow one holds up no other):
        its shared memory, and where each model runs; then its calls are the loop's."""
        try:
            head, _ = channel.receive()
            if not (isinstance(head, tuple) and head[0] == "hello"):
                raise ValueError(f"the first message is not a greeting: {head!r:.80}")
            shared = False
            if head[1]:  # the size of the front-end's arena, whose descriptor follows
                shared = channel.receive_arena(int(head[1]))
            # Without the arena (it could not be mapped), that front-end's tensors take the
            # socket.
            channel.send(("hello", self.placements(), shared), {})
        except (EOFError, OSError, ValueError) as exc:
            logger.warning("engine: refused a front-end's handshake (%s)", exc)
            channel.close()
            return
        with contextlib.suppress(RuntimeError):  # the loop has stopped
            loop.call_soon_threadsafe(_FrontEnd, self, channel, loop)

    def call(self, outbox: Outbox, head: Any, feed: dict[str, Any], read_at: float | None) -> None:
        """A front-end's call, into its model's batcher; ``outbox`` gets the answer."""
        call_id, key, timeout, requests = head
        try:
            served = self.by_key.get(key)
            if served is None:
                raise GPUXError(f"the engine has no model '{key}'", "restart the server")
            batcher = served.batcher("tensors", self.metrics)
            future = batcher.enqueue(feed, timeout, max(1, int(requests)))
        except Exception as exc:
            _reply(outbox, call_id, {}, exc, read_at)
            return
        future.add_done_callback(functools.partial(_answered, outbox, call_id, read_at))


class _FrontEnd:
    """One front-end's connection after its handshake: its calls read by the engine's loop as
    they arrive, its answers written through an outbox, both on the loop's thread.

    Why not a thread that reads: each call then crossed from that thread to the loop, and the
    thread first had to take the engine's interpreter lock from whichever of the engine's
    threads held it (8 front-ends: 8 readers). Read here, a call reaches its batcher in the
    callback that read it; the front-end's tensors are in its shared memory, so what the loop
    reads is mostly headers."""

    def __init__(self, engine: Engine, channel: Channel, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.loop = loop
        self.sock = channel.sock
        self.sock.setblocking(False)
        self.fd = self.sock.fileno()
        self.outbox = Outbox(self.sock, loop, on_close=self._stop_reading)
        self.reader = MessageReader(self._called, channel.arena)
        loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            while True:
                got = self.sock.recv_into(self.reader.buffer())
                if not got:
                    raise EOFError("the front-end closed the connection")
                self.reader.filled(got)
        except (BlockingIOError, InterruptedError):
            return  # all read for now
        except (EOFError, OSError, ValueError) as exc:
            # The front-end went away (or sent what no front-end sends: a tensor placed
            # outside its shared memory, a header too long).
            if not isinstance(exc, EOFError | ConnectionError):
                logger.warning("engine: dropped a front-end (%s)", exc)
            self.outbox.close()

    def _stop_reading(self) -> None:
        self.loop.remove_reader(self.fd)

    def _called(self, head: Any, feed: dict[str, Any]) -> None:
        read_at = time.monotonic() if self.engine.stamped else None
        self.engine.call(self.outbox, head, feed, read_at)


def _answered(
    outbox: Outbox, call_id: int, read_at: float | None, done: asyncio.Future[Any]
) -> None:
    error = done.exception()
    _reply(outbox, call_id, {} if error is not None else done.result(), error, read_at)


def _reply(
    outbox: Outbox,
    call_id: int,
    outputs: dict[str, Any],
    error: BaseException | None,
    read_at: float | None = None,
) -> None:
    failure = None if error is None else failure_of(error)
    if read_at is None:
        outbox.send((call_id, failure), outputs)
    else:  # GPUX_ENGINE_TRACE: when the call was read and answered
        outbox.send((call_id, failure, (read_at, time.monotonic())), outputs)


def failure_of(exc: BaseException) -> tuple[str, str, str | None]:
    """A failed call as the front-end re-raises it: its kind, message and hint."""
    from gpux.errors import InputError

    if isinstance(exc, TimeoutError):
        return ("timeout", "the engine did not run the call in time", None)
    if isinstance(exc, InputError):
        return ("input", exc.message, exc.hint)
    if isinstance(exc, GPUXError):
        return ("error", exc.message, exc.hint)
    return ("error", f"{type(exc).__name__}: {exc}", "see the server's log")


def engine_main(spec: ServerSpec, address: str, authkey: bytes, report: Connection) -> None:
    """The engine process: load, warm, listen, tell the parent; exit when the parent does."""
    from gpux.serve.load import load_served
    from gpux.serve.server import tune_interpreter

    tune_interpreter()

    async def main() -> None:
        try:
            served = load_served(
                list(spec.names),
                spec.backend,
                overrides=spec.overrides,
                trust_code=spec.trust_code,
                gpus=spec.gpus,
                shared_engine=True,
            )
            engine = Engine(served)
            await engine.warm()
        except GPUXError as exc:
            report.send(EngineFailure(exc.message, exc.hint))
            return
        except Exception as exc:
            report.send(EngineFailure(f"{type(exc).__name__}: {exc}"))
            return
        listener = Listener(address, family="AF_UNIX", authkey=authkey)
        os.chmod(address, 0o600)
        report.send("ready")
        threading.Thread(target=_exit_with_parent, args=(report,), daemon=True).start()
        writer = engine.keep_writing_statistics()
        await asyncio.gather(engine.serve(listener), *([writer] if writer else []))

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed, as uvicorn's ``loop="auto"`` picks for the front-ends: its
    ``call_soon_threadsafe`` (each reader thread's hand-over) and its selector cost less."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _exit_with_parent(report: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        report.recv()  # the parent never sends: this returns when it has gone
    os._exit(0)
