"""``gpux serve --workers N``: N server processes on one port, each with its own models.

Why: one Python process answers a few thousand requests per second at most (HTTP parsing,
routing, batching and encoding hold the GIL), while one GPU runs ResNet-50 at ~4,700 images/s
(docs/benchmarks.md). Several processes, each batching its own requests onto the same GPU, let
the request path scale with CPU cores, as gunicorn's and uvicorn's workers do for web apps.

The processes are uvicorn's own supervisor (``uvicorn.supervisors.Multiprocess``): the parent
binds the port and spawns the workers, restarts one that dies, and on SIGTERM or Ctrl-C stops
them all (each drains its requests). Each worker loads the images itself (:class:`WorkerConfig`
does it in the child, where uvicorn loads the app), so a GPU holds one copy per worker. gRPC
listens on one port shared the same way (``SO_REUSEPORT``).

What spans processes:

* ``/metrics``: prometheus-client's multiprocess mode, files in a folder under
  ``$GPUX_HOME/run`` (``PROMETHEUS_MULTIPROC_DIR``), summed when scraped;
* ``/v2/models/.../stats``: each worker writes its statistics there every second, and the one
  that answers adds up everyone's (gpux/serve/statistics.py), so counts may lag by a second;
* readiness: each process answers for itself; a load balancer retries another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import uvicorn

from gpux.serve.server import ServerSpec, load_app, uvicorn_options

SHARED_ENV = "GPUX_SERVE_SHARED"  # the folder the workers of one server share


class WorkerConfig(uvicorn.Config):
    """A uvicorn config that builds the app when a worker loads it: the parent pickles only the
    :class:`ServerSpec`, never a model or a loop-bound object."""

    def __init__(self, spec: ServerSpec, **options: Any) -> None:
        options.pop("http", None)  # a class made at run time: made again in the worker
        super().__init__("gpux.serve.workers:WorkerConfig", workers=spec.workers, **options)
        self.spec = spec

    def load(self) -> None:
        if not self.loaded:
            self.app, _ = load_app(self.spec)
            self.http = uvicorn_options(self.spec)["http"]
        super().load()


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
    config = WorkerConfig(spec, **uvicorn_options(spec))
    try:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(shared)


def shared_folder() -> Path | None:
    """The folder this process shares with the other workers of its server, if it is one."""
    value = os.environ.get(SHARED_ENV)
    return Path(value) if value else None
