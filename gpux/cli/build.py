"""``gpux build``."""

from __future__ import annotations

from pathlib import Path

import typer

BACKENDS = "auto|cpu|cuda|tensorrt|rocm|coreml|directml|openvino|webgpu"


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build(
        path: Path = typer.Argument(Path("."), help="Project folder (or GPUXfile path)."),
        tag: str | None = typer.Option(
            None, "-t", "--tag", help="Image name[:tag] (default: GPUXfile name:version)."
        ),
        no_optimize: bool = typer.Option(
            False, "--no-optimize", help="Store the model as is, without offline optimisation."
        ),
        backend: str | None = typer.Option(
            None,
            "--backend",
            help=f"Backend to smoke-test on and record as the image's runtime.backend ({BACKENDS}).",
        ),
        force: bool = typer.Option(False, "--force", help="Rebuild even if nothing changed."),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only the image name."),
        as_json: bool = typer.Option(False, "--json", help="Print the build report as JSON."),
    ) -> None:
        """Validate, optimise and smoke-test a project, then store it as an image."""
        from gpux.api import build as build_project
        from gpux.cli.console import print_json, stderr
        from gpux.cli.progress import RichReporter

        backend = _check_backend(backend)
        reporter = RichReporter(quiet=quiet or as_json)
        result = build_project(
            path,
            tag=tag,
            optimize=not no_optimize,
            backend=backend,
            force=force,
            reporter=reporter,
        )
        if as_json:
            print_json(result.to_json())
            return
        if quiet:
            typer.echo(result.reference.name)
            return
        image = result.image
        state = "up to date" if result.cached else "built"
        stderr().print(
            f"[bold green]{state}[/bold green] {result.reference.name} "
            f"[dim]{image.digest[7:19]}[/dim]"
        )


def _check_backend(backend: str | None) -> str | None:
    if backend is None:
        return None
    from gpux.config.schema import Backend
    from gpux.errors import UsageError

    names = [b.value for b in Backend]
    if backend not in names:
        import difflib

        close = difflib.get_close_matches(backend, names, n=1)
        raise UsageError(
            f"unknown backend '{backend}'" + (f"; did you mean '{close[0]}'?" if close else ""),
            f"choose one of: {', '.join(names)}",
        )
    return backend
