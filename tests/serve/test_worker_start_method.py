"""``gpux serve --workers`` must start its workers with ``spawn``: a worker forked from a
process that had opened the wgpu engine would hang (wgpu-native does not survive fork). The
supervisor is uvicorn's (``serve_workers``); this checks the process it makes for a worker,
without starting it."""

from __future__ import annotations

import multiprocessing.context

from gpux.serve.server import ServerSpec, uvicorn_options
from gpux.serve.workers import WorkerConfig


def test_workers_are_spawned_not_forked() -> None:
    from uvicorn.supervisors.multiprocess import Process

    spec = ServerSpec(names=("none:1",), backend="cpu", host="127.0.0.1", port=0, workers=2)
    worker = Process(WorkerConfig(spec, **uvicorn_options(spec)), [])
    assert isinstance(worker.process, multiprocessing.context.SpawnProcess)
