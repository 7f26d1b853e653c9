"""``gpux push``, ``gpux pull``, ``gpux login``, ``gpux logout``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from gpux.cli.progress import transfer_bar

INSECURE_HELP = (
    "Plain HTTP right away (a loopback registry without TLS gets it without this flag; "
    "another host also needs --allow-http)."
)
ALLOW_HTTP_HELP = "Allow --insecure for a registry that is not on loopback."


def summary(verb: str, report: Any) -> str:
    from gpux.cli.console import human_size

    moved = (
        f"{report.transferred} blob(s), {human_size(report.transferred_bytes)}"
        if report.transferred
        else "nothing"
    )
    return f"{verb} {moved}; {report.skipped} already there"


def register(app: typer.Typer) -> None:
    @app.command("push")
    def push(
        name: str = typer.Argument(..., help="Local image name[:tag]."),
        target: str | None = typer.Argument(
            None, help="REGISTRY/REPO[:TAG] (default: the image's own name)."
        ),
        insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
        allow_http: bool = typer.Option(False, "--allow-http", help=ALLOW_HTTP_HELP),
        json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
        image_format: str = typer.Option(
            "gpux",
            "--format",
            help="gpux: the image as stored; modelcar: a container image with the image under "
            "/models and a shell, for KServe's storageUri: oci://TARGET (needs TARGET).",
        ),
        busybox: Path | None = typer.Option(
            None,
            "--busybox",
            help="--format modelcar: the static busybox that is the modelcar's shell "
            "(default /bin/busybox, from Debian's busybox-static).",
        ),
    ) -> None:
        """Upload an image to an OCI registry (only the blobs it lacks)."""
        from gpux.cli.console import print_json, stderr
        from gpux.distribution.transfer import push as push_image
        from gpux.errors import UsageError
        from gpux.store import Store

        if image_format not in ("gpux", "modelcar"):
            raise UsageError(
                f"--format {image_format} is not a format gpux push writes",
                "use --format gpux (the default) or --format modelcar",
            )
        if busybox is not None and image_format != "modelcar":
            raise UsageError("--busybox is for modelcars", "add --format modelcar")
        if image_format == "modelcar" and target is None:
            raise UsageError(
                f"a modelcar is another image than {name}: it needs a target of its own",
                f"name it: gpux push {name} REGISTRY/REPOSITORY:TAG --format modelcar",
            )
        with transfer_bar("pushing") as bar:
            if image_format == "modelcar":
                from gpux.distribution.modelcar import push_modelcar

                assert target is not None
                report = push_modelcar(
                    Store(),
                    name,
                    target,
                    busybox=busybox,
                    insecure=insecure,
                    allow_http=allow_http,
                    on_total=bar.set_total if bar else None,
                    progress=bar.advance if bar else None,
                )
            else:
                report = push_image(
                    Store(),
                    name,
                    target,
                    insecure=insecure,
                    allow_http=allow_http,
                    on_total=bar.set_total if bar else None,
                    progress=bar.advance if bar else None,
                )
        if json_output:
            print_json(report.to_json())
            return
        stderr().print(summary("uploaded", report))
        typer.echo(f"{report.image}@{report.digest}")

    @app.command("pull")
    def pull(
        reference: str = typer.Argument(
            ...,
            help="REGISTRY/REPO[:TAG|@sha256:...], or hf:org/repo[@revision] (also hf://, "
            "hf.co/, huggingface.co/).",
        ),
        insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
        allow_http: bool = typer.Option(False, "--allow-http", help=ALLOW_HTTP_HELP),
        json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
        tag: str | None = typer.Option(
            None, "-t", "--tag", help="hf: only: the image's name[:tag] (default: the repo's)."
        ),
    ) -> None:
        """Download an image from an OCI registry (or build one from a Hugging Face repo)."""
        from gpux.cli.console import print_json, stderr
        from gpux.config.hub_source import is_hub_source, website_url_hint
        from gpux.store import Store

        if website_url_hint(reference):
            from gpux.errors import UsageError

            raise UsageError(
                f"{reference} is a web page, not something GPUX pulls",
                f"pull the repository: gpux pull {website_url_hint(reference)}",
            )
        if is_hub_source(reference):
            from gpux.cli.progress import RichReporter
            from gpux.distribution.hub import pull as pull_hub

            result = pull_hub(reference, Store(), reporter=RichReporter(quiet=json_output), tag=tag)
            if json_output:
                print_json(result.to_json())
            else:
                typer.echo(result.reference.name)
            return
        if tag is not None:
            from gpux.errors import UsageError

            raise UsageError(
                "--tag is for hf: sources", "a registry image keeps its name; gpux tag renames it"
            )
        from gpux.distribution.transfer import pull as pull_image

        with transfer_bar("pulling") as bar:
            image, report = pull_image(
                Store(),
                reference,
                insecure=insecure,
                allow_http=allow_http,
                on_total=bar.set_total if bar else None,
                progress=bar.advance if bar else None,
            )
        from gpux.store.code import code_files

        files = code_files(image)
        if json_output:
            print_json({**report.to_json(), "name": image.name, "code": files})
            return
        stderr().print(summary("downloaded", report))
        if files:
            from gpux.cli.console import code_note

            stderr().print(code_note(image.name, files))
        typer.echo(image.name)

    @app.command("login")
    def login(
        registry: str = typer.Argument(..., help="Registry host[:port], e.g. ghcr.io."),
        username: str | None = typer.Option(None, "-u", "--username", help="User name."),
        password_stdin: bool = typer.Option(
            False, "--password-stdin", help="Read the password (or token) from stdin."
        ),
        insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
        allow_http: bool = typer.Option(False, "--allow-http", help=ALLOW_HTTP_HELP),
    ) -> None:
        """Check credentials against a registry and store them as Docker does."""
        import os

        from gpux.cli.console import stderr
        from gpux.distribution import credentials
        from gpux.distribution.registry import Registry
        from gpux.errors import UsageError

        username = username or os.environ.get("GPUX_REGISTRY_USERNAME")
        if not username:
            if not sys.stdin.isatty():
                raise UsageError("no user name given", "pass -u NAME")
            username = typer.prompt("Username")
        if password_stdin:
            secret = sys.stdin.read().rstrip("\n")
        elif os.environ.get("GPUX_REGISTRY_PASSWORD"):
            secret = os.environ["GPUX_REGISTRY_PASSWORD"]
        elif sys.stdin.isatty():
            secret = typer.prompt("Password", hide_input=True)
        else:
            raise UsageError("no password given", "pipe it with --password-stdin")
        if not secret:
            raise UsageError("the password is empty", "pipe the password with --password-stdin")
        os.environ["GPUX_REGISTRY_USERNAME"], os.environ["GPUX_REGISTRY_PASSWORD"] = (
            username,
            secret,
        )
        client = Registry(registry, insecure=insecure, allow_http=allow_http)
        try:
            client.ping()
        finally:
            client.close()
        where = credentials.store(registry, username, secret)
        stderr().print(f"logged in to {registry} as {username} (credentials in {where})")

    @app.command("logout")
    def logout(registry: str = typer.Argument(..., help="Registry host[:port].")) -> None:
        """Forget the stored credentials of a registry."""
        from gpux.cli.console import stderr
        from gpux.distribution import credentials

        if credentials.remove(registry):
            stderr().print(f"logged out of {registry}")
        else:
            stderr().print(f"no stored credentials for {registry}")
