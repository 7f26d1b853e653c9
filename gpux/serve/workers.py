"""``gpux serve --workers N``: N server processes on one port, each with its own models.

Why: one Python process answers a few thousand requests per second at most (HTTP parsing,
routing, batching and encoding hold the GIL), while one GPU runs ResNet-50 at ~4,700 images/s
(docs/benchmarks.md). Several processes, each batching its own requests onto the same GPU, let
the request path scale with CPU cores, as gunicorn's and uvicorn's workers do for web apps.

The processes are uvicorn's own supervisor (``uvicorn.supervisors.Multiprocess``): the parent
binds the port and spawns the workers, restarts one that dies, and on SIGTERM or Ctrl-C stops
them all (each drains its requests). On Linux each worker then listens on a socket of its own
in the port's ``SO_REUSEPORT`` group (:func:`port_socket`), so that the kernel spreads the
connections. Each worker loads the images itself (:class:`WorkerConfig` does it in the child,
where uvicorn loads the app), so a GPU holds one copy per worker. gRPC's port is shared the
same way (``SO_REUSEPORT``).

What spans processes:

* ``/metrics``: prometheus-client's multiprocess mode, files in a folder under
  ``$GPUX_HOME/run`` (``PROMETHEUS_MULTIPROC_DIR``), summed when scraped;
* ``/v2/models/.../stats``: each worker writes its statistics there within 0.1 s of a change,
  and the one that answers adds up everyone's (gpux/serve/shared_stats.py), so counts may lag
  by that much;
* readiness: each process answers for itself; a load balancer retries another.

With ``--shared-engine`` the workers load no model that runs tensors: one more process, the
engine (gpux/serve/engine.py), loads and warms each once, before the workers start, and runs the
calls of every worker, batched together. The workers find it through the environment
(``GPUX_ENGINE_ADDRESS``: a Unix socket in the shared folder; ``GPUX_ENGINE_AUTHKEY``: a random
key for the connection's HMAC handshake). If the engine stops, the server stops: a supervisor
(systemd, Kubernetes) restarts it whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn

from gpux.errors import BackendError
from gpux.serve.server import ServerSpec, load_app, uvicorn_options

SHARED_ENV = "GPUX_SERVE_SHARED"  # the folder the workers of one server share


class WorkerConfig(uvicorn.Config):
    """A uvicorn config that builds the app when a worker loads it: the parent pickles only the
    :class:`ServerSpec`, never a model or a loop-bound object."""

    def __init__(self, spec: ServerSpec, **options: Any) -> None:
        options.pop("http", None)  # a class made at run time: made again in the worker
        super().__init__("gpux.serve.workers:WorkerConfig", workers=spec.workers, **options)
        self.spec = spec
        self.port_socket: int | None = None  # the inode of the parent's SO_REUSEPORT socket

    def load(self) -> None:
        if not self.loaded:
            if self.port_socket is not None:
                listen_on_own_socket(self.port_socket)
            self.app, _ = load_app(self.spec)
            self.http = uvicorn_options(self.spec)["http"]
        super().load()


def port_socket(config: WorkerConfig) -> socket.socket:
    """The HTTP port's socket, bound by the parent for its workers.

    uvicorn's is one socket every worker listens on, and each worker's loop (libuv) accepts
    every connection waiting when it wakes: clients that connect together land on one worker
    (8 keep-alive connections of a load generator, 2 workers: one held its GIL 88% of the time,
    the other 0.2%). Where the kernel spreads connections over sockets (Linux ``SO_REUSEPORT``,
    by a hash of each connection's addresses), the parent binds one with that option and never
    listens on it, and each worker listens on a socket of its own on the same port
    (:func:`listen_on_own_socket`), as gRPC's port already is. A port some other process
    holds is refused as before: it is bound once without the option first."""
    if sys.platform != "linux" or config.uds or config.fd is not None:
        return config.bind_socket()
    family = socket.AF_INET6 if config.host and ":" in config.host else socket.AF_INET
    try:
        with socket.socket(family) as probe:  # fails if any socket, shared or not, has it
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((config.host, config.port))
            port = probe.getsockname()[1]
        sock = socket.socket(family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((config.host, port))
    except OSError:
        return config.bind_socket()  # says why and exits, as uvicorn does
    sock.set_inheritable(True)
    config.port = port
    config.port_socket = os.fstat(sock.fileno()).st_ino
    return sock


def listen_on_own_socket(inode: int) -> None:
    """In a worker: its copy of the parent's port socket (found by ``inode``) becomes a socket
    of this process's own, bound to the same address with ``SO_REUSEPORT``, which uvicorn then
    listens on. It goes with the worker; the parent's is never listened on."""
    wanted = f"socket:[{inode}]"
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}") == wanted:
                break
    else:
        return  # not inherited: uvicorn uses what it was given
    fd = int(name)
    with socket.socket(fileno=os.dup(fd)) as inherited:
        family, address = inherited.family, inherited.getsockname()
    own = socket.socket(family, socket.SOCK_STREAM)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    own.bind(address)
    os.dup2(own.fileno(), fd)
    own.close()


def serve_workers(spec: ServerSpec) -> None:
    from uvicorn.supervisors import Multiprocess

    from gpux import env

    shared = env.home() / "run" / f"serve-{os.getpid()}"
    shutil.rmtree(shared, ignore_errors=True)
    (shared / "metrics").mkdir(parents=True)
    (shared / "stats").mkdir()
    # Read by the workers as they start (spawned: they import prometheus_client afresh).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared / "metrics")
    os.environ[SHARED_ENV] = str(shared)
    if spec.grpc is not None:
        spec = dataclasses.replace(spec, grpc=dataclasses.replace(spec.grpc, shared_port=True))
    engine = None
    try:
        engine = start_engine(spec, shared) if spec.shared_engine else None
        config = WorkerConfig(spec, **uvicorn_options(spec))
        supervisor = Multiprocess(config, sockets=[port_socket(config)])
        if engine is not None:
            watch_engine(engine, supervisor)
        supervisor.run()
    finally:
        if engine is not None:
            engine.terminate()
            engine.join(10)
        with contextlib.suppress(OSError):
            shutil.rmtree(shared)
    if engine is not None and engine.stopped_early:
        raise BackendError(
            f"the model engine process stopped (exit code {engine.process.exitcode})",
            "see the log above; restart the server",
        )


class EngineProcess:
    """The engine, started and ready (its models loaded and warm)."""

    def __init__(self, process: Any, pipe: Any) -> None:
        self.process = process
        self.pipe = pipe  # the parent's end, kept open: the engine exits when it closes
        self.stopped_early = False
        self.stopping = False

    def terminate(self) -> None:
        self.stopping = True
        if self.process.is_alive():
            self.process.terminate()

    def join(self, timeout: float) -> None:
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()


def start_engine(spec: ServerSpec, shared: Path) -> EngineProcess:
    """Start the engine and wait until it listens; its failure to load is this server's."""
    import multiprocessing
    import secrets

    from gpux.serve.engine import EngineFailure, engine_main
    from gpux.serve.engine_wire import ADDRESS_ENV, AUTHKEY_ENV

    context = multiprocessing.get_context("spawn")  # CUDA and wgpu do not survive a fork
    address = str(shared / "engine.sock")
    authkey = secrets.token_bytes(32)
    ours, theirs = context.Pipe(duplex=True)
    process = context.Process(
        target=engine_main, args=(spec, address, authkey, theirs), name="gpux-engine"
    )
    process.start()
    theirs.close()
    while not ours.poll(0.2):
        if not process.is_alive():
            raise BackendError(
                f"the model engine process exited while loading (exit code {process.exitcode})",
                "see the log above",
            )
    try:
        report = ours.recv()
    except EOFError as exc:
        raise BackendError("the model engine process stopped while loading", None) from exc
    if isinstance(report, EngineFailure):
        process.join(10)
        raise BackendError(f"the model engine could not start: {report.message}", report.hint)
    os.environ[ADDRESS_ENV] = address
    os.environ[AUTHKEY_ENV] = authkey.hex()
    (shared / "engine.pid").write_text(f"{process.pid}\n")  # for operators (and the tests)
    return EngineProcess(process, ours)


def watch_engine(engine: EngineProcess, supervisor: Any) -> None:
    """Stop the workers (and so the server) when the engine dies under them."""
    import threading

    def wait() -> None:
        engine.process.join()
        if not engine.stopping:
            engine.stopped_early = True
            supervisor.should_exit.set()

    threading.Thread(target=wait, name="gpux-engine-watch", daemon=True).start()


def shared_folder() -> Path | None:
    """The folder this process shares with the other workers of its server, if it is one."""
    value = os.environ.get(SHARED_ENV)
    return Path(value) if value else None
