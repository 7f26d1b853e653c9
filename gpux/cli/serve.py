"""``gpux serve``, in the foreground or detached (``-d``: see gpux/serve/daemon.py)."""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

import typer

from gpux.cli.build import BACKENDS, _check_backend

DEFAULT_PORT = 8080


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        names: list[str] = typer.Argument(..., help="Images to serve (name[:tag]), one or more."),
        host: str | None = typer.Option(
            None, "--host", help="Address to listen on (default: serving.host, 127.0.0.1)."
        ),
        port: int | None = typer.Option(
            None, "--port", help="TCP port (default: the GPUXfile's serving.port, else 8080)."
        ),
        backend: str | None = typer.Option(None, "--backend", help=f"Override ({BACKENDS})."),
        token: str | None = typer.Option(
            None,
            "--token",
            help="Require 'Authorization: Bearer TOKEN' (default: $GPUX_TOKEN when set).",
        ),
        max_batch_size: int | None = typer.Option(
            None, "--max-batch-size", min=1, help="Dynamic batching: most rows per model call."
        ),
        max_batch_delay_ms: float | None = typer.Option(
            None, "--max-batch-delay-ms", min=0, help="Longest wait for batch-mates (ms)."
        ),
        timeout: float | None = typer.Option(
            None, "--timeout", min=0.001, help="Seconds a request may wait for its answer (504)."
        ),
        max_queue: int | None = typer.Option(
            None, "--max-queue", min=1, help="Requests waiting beyond this get 503."
        ),
        detach: bool = typer.Option(
            False,
            "-d",
            "--detach",
            help="Run in the background once ready; print its id (see gpux ps, logs, stop).",
        ),
        name: str | None = typer.Option(
            None,
            "--name",
            help="Id of a detached server (default: the first image's name, made unique).",
        ),
    ) -> None:
        """Serve images over HTTP: Open Inference Protocol v2, /predict, /metrics."""
        backend = _check_backend(backend)
        from gpux.errors import UsageError
        from gpux.serve.daemon import check_id, check_port
        from gpux.store import Store, parse

        if name is not None and not detach:
            raise UsageError("--name is for detached servers", "add -d (--detach), or drop --name")
        store = Store()
        images = [store.get(text) for text in names]  # a missing image fails before any work
        configured = _configured_port(images[0].config)
        serving = images[0].config.get("gpuxfile", {}).get("serving", {})
        host = host or str(serving.get("host") or "127.0.0.1")
        chosen_port = port or configured or DEFAULT_PORT
        origin = (
            ""
            if port
            else f"serving.port in the GPUXfile of {images[0].name}"
            if configured
            else "the default port"
        )
        check_port(host, chosen_port, origin)
        overrides = {
            "max_batch_size": max_batch_size,
            "max_batch_delay_ms": max_batch_delay_ms,
            "timeout": timeout,
            "max_queue": max_queue,
        }
        token = token or os.environ.get("GPUX_TOKEN") or None
        if detach:
            from gpux.cli.console import stderr
            from gpux.serve import daemon

            options = [f"--{key.replace('_', '-')}={value}" for key, value in overrides.items()]
            options = [option for option in options if not option.endswith("=None")]
            server = daemon.start(
                names,
                ([f"--backend={backend}"] if backend else []) + options,
                host=host,
                port=chosen_port,
                models=[image.name for image in images],
                name=check_id(name or parse(images[0].name).repository.rsplit("/", 1)[-1]),
                name_given=name is not None,
                token=token,
            )
            typer.echo(server.id)
            stderr().print(
                f"serving {', '.join(server.models)} at {server.url} (pid {server.pid}); "
                f"gpux logs {server.id}, gpux stop {server.id}"
            )
            return
        _serve_foreground(names, backend, host, chosen_port, token, overrides)


def _configured_port(config: dict[str, Any]) -> int | None:
    configured = config.get("gpuxfile", {}).get("serving", {}).get("port")
    return int(configured) if configured else None


def _serve_foreground(
    names: list[str],
    backend: str | None,
    host: str,
    port: int,
    token: str | None,
    overrides: dict[str, float | None],
) -> None:
    import uvicorn

    from gpux.cli.console import stderr
    from gpux.serve.app import create_app
    from gpux.serve.load import load_served

    served = load_served(names, backend, overrides=overrides)
    app_ = create_app(served, token=token)
    console = stderr()
    for model in served:
        console.print(
            f"serving {model.name} ({model.version}) on {model.model.placement.backend} "
            f"at http://{host}:{port}/v2/models/{model.name}"
        )
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal to the handler
    # that was there before it: make that one a clean exit, so a drained server exits 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # access_log=False: the app writes structured JSON access lines (gpux/serve/access_log.py).
    uvicorn.Server(
        uvicorn.Config(app_, host=host, port=port, log_level="info", access_log=False)
    ).run()


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
