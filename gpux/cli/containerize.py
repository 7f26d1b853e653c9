"""``gpux containerize``: an image as an OCI container image on a base, pushed to a registry."""

from __future__ import annotations

import typer

from gpux.cli.distribution import ALLOW_HTTP_HELP, INSECURE_HELP, summary
from gpux.cli.progress import transfer_bar


def register(app: typer.Typer) -> None:
    @app.command("containerize")
    def containerize(
        name: str = typer.Argument(..., help="Local image name[:tag]."),
        target: str = typer.Option(
            ..., "-t", "--tag", help="REGISTRY/REPO:TAG the container image is pushed to."
        ),
        base: str = typer.Option(
            ...,
            "--base",
            help="REGISTRY/REPO:TAG of the base image: Linux with the Python 3 gpux runs on "
            "here, at --python.",
        ),
        runtime: str = typer.Option(
            "cpu", "--runtime", help="ONNX Runtime build: cpu or cuda (as installed here)."
        ),
        python: str = typer.Option(
            "/usr/bin/python3", "--python", help="The base image's Python interpreter."
        ),
        insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
        allow_http: bool = typer.Option(False, "--allow-http", help=ALLOW_HTTP_HELP),
        json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Write NAME as a container image that runs gpux serve, on --base, and push it."""
        from gpux.cli.console import print_json, stderr
        from gpux.distribution.container import containerize as write_image
        from gpux.store import Store

        with transfer_bar("pushing") as bar:
            report = write_image(
                Store(),
                name,
                target,
                base=base,
                runtime=runtime,
                python=python,
                insecure=insecure,
                allow_http=allow_http,
                on_total=bar.set_total if bar else None,
                progress=bar.advance if bar else None,
            )
        if json_output:
            print_json({**report.to_json(), "uploaded": report.blobs})
            return
        stderr().print(summary("uploaded", report))
        typer.echo(f"{report.image}@{report.digest}")
