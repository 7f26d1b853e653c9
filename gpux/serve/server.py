"""How ``gpux serve`` runs: load the images, make the app, and hand it to uvicorn, in this
process or in several worker processes that share the port (gpux/serve/workers.py).

The command line (gpux/cli/serve.py) checks flags and images, then calls :func:`run`; a worker
process calls :func:`load_app` itself, so every process loads its own copy of the models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpux.serve.policy import RequestPolicy

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from gpux.serve.app import ServedModel
    from gpux.serve.grpc_service import GRPCOptions


@dataclass(frozen=True)
class ServerSpec:
    """Everything a server process needs to start; picklable, so a worker process gets it."""

    names: tuple[str, ...]
    backend: str | None
    host: str
    port: int
    token: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    policy: RequestPolicy = field(default_factory=RequestPolicy)
    trust_code: bool = False
    grpc: GRPCOptions | None = None
    workers: int = 1
    gpus: str | None = None  # --gpus: instances on several devices (gpux/runtime/instances.py)
    shared_engine: bool = False  # --shared-engine: workers call one model process (engine.py)


def tune_interpreter() -> None:
    """The interpreter settings of a server process (``GPUX_SWITCH_INTERVAL_US``)."""
    import sys

    from gpux import env

    interval = env.switch_interval_us()
    if interval:
        sys.setswitchinterval(interval / 1e6)


def load_app(spec: ServerSpec) -> tuple[Starlette, list[ServedModel]]:
    from gpux import env
    from gpux.serve.app import create_app
    from gpux.serve.engine_client import EngineClient
    from gpux.serve.load import load_served
    from gpux.serve.memory import keep_resident_memory_flat

    # Before any model or thread pool exists: arenas are made by the threads that allocate.
    keep_resident_memory_flat(env.malloc_arenas())
    tune_interpreter()
    served = load_served(
        list(spec.names),
        spec.backend,
        overrides=spec.overrides,
        trust_code=spec.trust_code,
        gpus=spec.gpus,
        engine=EngineClient.from_environment(),  # a front-end of the shared engine
    )
    app = create_app(served, token=spec.token, policy=spec.policy, grpc=spec.grpc)
    return app, served


def uvicorn_options(spec: ServerSpec) -> dict[str, Any]:
    from gpux.serve.connection import timed_protocol

    return {
        "host": spec.host,
        "port": spec.port,
        "log_level": "info",
        # The app writes structured JSON access lines (gpux/serve/access_log.py).
        "access_log": False,
        # httptools (else h11) with a header read timeout (gpux/serve/connection.py); loop
        # "auto" is uvloop where it is installed.
        "http": timed_protocol(spec.policy),
        "loop": "auto",
        # Longer than clients keep idle pooled connections (httpx and aiohttp: 5 s, uvicorn's
        # own default): with equal timeouts a client reuses a connection the server is closing
        # at that moment and gets a read error (seen under tests/serve/test_load.py's 64
        # connections). nginx keeps 75 s; idle connections cost a socket, not a thread.
        "timeout_keep_alive": 30,
    }


def run(spec: ServerSpec, announce: Callable[[list[ServedModel]], None]) -> None:
    """Serve until SIGTERM or Ctrl-C; ``announce`` is told what was loaded (one process)."""
    import uvicorn

    if spec.workers > 1 or spec.shared_engine:
        from gpux.serve.workers import serve_workers

        serve_workers(spec)
        return
    app, served = load_app(spec)
    announce(served)
    uvicorn.Server(uvicorn.Config(app, **uvicorn_options(spec))).run()
