"""``gpux save`` and ``gpux load``: images to and from OCI image-layout tarballs."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from gpux.cli.progress import transfer_bar

PROGRESS_FROM = 32 << 20  # below this, a save or load is over before a bar is worth drawing


def register(app: typer.Typer) -> None:
    @app.command("save")
    def save(
        names: list[str] = typer.Argument(..., help="Images to save: name[:tag] or digest."),
        output: str | None = typer.Option(
            None,
            "-o",
            "--output",
            help="Archive to write ('-': stdout, the default when stdout is not a terminal).",
        ),
    ) -> None:
        """Save images to an OCI image-layout tar archive (like docker save)."""
        from gpux.cli.console import human_size, stderr
        from gpux.distribution import archive
        from gpux.errors import UsageError
        from gpux.store import Store

        if output in (None, "-") and sys.stdout.isatty():
            raise UsageError(
                "refusing to write a tar archive to the terminal",
                f"give a file with -o, or redirect: gpux save {names[0]} -o image.tar",
            )
        store = Store()
        selection = archive.select(store, names)
        with transfer_bar("saving", selection.size, PROGRESS_FROM) as bar:
            advance = bar.advance if bar else None
            if output in (None, "-"):
                archive.write_archive(store, selection, sys.stdout.buffer, advance)
                sys.stdout.buffer.flush()
                where = "stdout"
            else:
                archive.save_file(store, selection, Path(output), advance)
                where = output
        images = {image.digest: image for _, image in selection.images}.values()
        size = human_size(sum(image.size for image in images))
        stderr().print(f"saved {', '.join(selection.names)} ({size}) to {where}")

    @app.command("load")
    def load(
        source: str | None = typer.Option(
            None, "-i", "--input", help="Archive to read ('-' or left out: stdin)."
        ),
        name: str | None = typer.Option(
            None,
            "--name",
            help="Name for the archive's one image (without a tag, the archive's tag is kept); "
            "needed when the archive gives only a tag.",
        ),
        quiet: bool = typer.Option(
            False, "-q", "--quiet", help="Only the names on stdout: no summary on stderr."
        ),
    ) -> None:
        """Load images from a tar archive written by gpux save (or another OCI tool).

        A refused or broken archive adds no image; blobs it already wrote stay unreferenced
        until 'gpux prune'.
        """
        from gpux.cli.console import human_size, stderr
        from gpux.distribution import archive
        from gpux.errors import NotFoundError, UsageError
        from gpux.store import Store

        store = Store()
        if source in (None, "-"):
            if sys.stdin is None or sys.stdin.isatty():
                raise UsageError(
                    "no archive to load: stdin is a terminal",
                    "give a file with -i, or pipe one: gpux load < image.tar",
                )
            with transfer_bar("loading", None, PROGRESS_FROM) as bar:
                loaded = archive.load(store, sys.stdin.buffer, name, bar.advance if bar else None)
            where = "stdin"
        else:
            path = Path(source).expanduser()
            if not path.is_file():
                if path.exists():
                    raise UsageError(f"'{source}' is not a file", "give the .tar file with -i")
                raise NotFoundError(f"archive '{source}' not found", "check the path given to -i")
            size = path.stat().st_size
            with path.open("rb") as stream, transfer_bar("loading", size, PROGRESS_FROM) as bar:
                loaded = archive.load(store, stream, name, bar.advance if bar else None)
            where = source
        console = stderr()
        from gpux.cli.console import code_note
        from gpux.store.code import code_files

        for item in loaded:
            typer.echo(item.name)
            files = code_files(store.get(item.name))
            if files and not quiet:
                console.print(code_note(item.name, files))
            if not quiet and item.replaced:
                console.print(
                    f"[yellow]note:[/yellow] {item.name} pointed at {item.replaced[7:19]}, "
                    f"now at {item.digest[7:19]}"
                )
        if not quiet:
            total = sum(item.size for item in {i.digest: i for i in loaded}.values())
            console.print(f"loaded {len(loaded)} image name(s), {human_size(total)}, from {where}")
