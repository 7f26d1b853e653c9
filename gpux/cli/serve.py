"""``gpux serve``."""

from __future__ import annotations

import os
import signal
from types import FrameType

import typer

from gpux.cli.build import BACKENDS, _check_backend


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        names: list[str] = typer.Argument(..., help="Images to serve (name[:tag]), one or more."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
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
    ) -> None:
        """Serve images over HTTP: Open Inference Protocol v2, /predict, /metrics."""
        backend = _check_backend(backend)
        import uvicorn

        from gpux.cli.console import stderr
        from gpux.serve.app import create_app
        from gpux.serve.load import load_served

        served = load_served(
            names,
            backend,
            overrides={
                "max_batch_size": max_batch_size,
                "max_batch_delay_ms": max_batch_delay_ms,
                "timeout": timeout,
                "max_queue": max_queue,
            },
        )
        first = served[0].model.image
        configured = (
            first.config.get("gpuxfile", {}).get("serving", {}).get("port") if first else None
        )
        chosen_port = port or int(configured or 8080)
        app_ = create_app(served, token=token or os.environ.get("GPUX_TOKEN") or None)
        console = stderr()
        for model in served:
            console.print(
                f"serving {model.name} ({model.version}) on {model.model.placement.backend} "
                f"at http://{host}:{chosen_port}/v2/models/{model.name}"
            )
        # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal to the handler
        # that was there before it: make that one a clean exit, so a drained server exits 0.
        signal.signal(signal.SIGTERM, _exit_cleanly)
        uvicorn.Server(
            uvicorn.Config(app_, host=host, port=chosen_port, log_level="info", access_log=True)
        ).run()


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
