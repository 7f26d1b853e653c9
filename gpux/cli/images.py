"""``gpux images`` (alias ``list``), ``rm``, ``tag``, ``prune``."""

from __future__ import annotations

import typer


def warn(message: str) -> None:
    """A ``warning:`` line on stderr (what the store repaired or skipped)."""
    from rich.markup import escape

    from gpux.cli.console import stderr

    stderr().print(f"[yellow]warning:[/yellow] {escape(message)}")


def register(app: typer.Typer) -> None:
    def images(
        as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="Print names only."),
    ) -> None:
        """List local images.

        A damaged image (its manifest or config missing or corrupt, a layer missing) is
        listed too, with a STATUS column, and the command that replaces it on stderr.
        """
        from gpux.cli.console import human_size, print_json, since, stdout
        from gpux.store import Store

        found, damaged = Store().survey()
        for broken in damaged:
            warn(
                f"image {', '.join(broken.names)} is damaged: {broken.problem}; "
                f"to repair it: {broken.hint}"
            )
        if as_json:
            print_json(
                [
                    {
                        "names": image.names,
                        "digest": image.digest,
                        "size": image.size,
                        "created": image.created,
                        "backend": image.annotations.get("dev.gpux.placement.backend"),
                        "status": "ok",
                    }
                    for image in found
                ]
                + [
                    {
                        "names": broken.names,
                        "digest": broken.digest or None,
                        "size": None,
                        "created": None,
                        "backend": None,
                        "status": "damaged",
                        "problem": broken.problem,
                        "hint": broken.hint,
                    }
                    for broken in damaged
                ]
            )
            return
        if quiet:  # damaged names too: 'gpux rm $(gpux images -q)' must reach them
            names = [n for image in found for n in image.names]
            for name in names + [n for broken in damaged for n in broken.names]:
                typer.echo(name)
            return
        from rich.table import Table

        table = Table(show_edge=False, box=None, header_style="bold")
        # STATUS only appears when something is damaged; the other columns never move.
        columns = ["NAME", "ID", "SIZE", "BACKEND", "CREATED"] + (["STATUS"] if damaged else [])
        for column in columns:
            table.add_column(column)
        for image in found:
            for name in image.names:
                row = [
                    name,
                    image.digest[7:19],
                    human_size(image.size),
                    image.annotations.get("dev.gpux.placement.backend", "-"),
                    since(image.created),
                ]
                table.add_row(*row, *(["ok"] if damaged else []))
        for broken in damaged:
            for name in broken.names:
                table.add_row(name, broken.digest[7:19] or "-", "-", "-", "-", "damaged")
        stdout().print(table)

    app.command("images")(images)
    app.command("list", help="List local images (alias of 'images').")(images)

    @app.command("rm")
    def remove(
        names: list[str] = typer.Argument(..., help="Image names or digests."),
    ) -> None:
        """Remove images and free the blobs no other image uses."""
        from gpux.cli.console import stderr
        from gpux.store import Store

        store = Store()
        for name in names:
            for removed in store.remove(name, warn=warn):
                stderr().print(f"deleted {removed}")

    @app.command("tag")
    def tag(
        source: str = typer.Argument(..., help="Existing image."),
        target: str = typer.Argument(..., help="New name[:tag]."),
    ) -> None:
        """Give an image another name."""
        from gpux.cli.console import stderr
        from gpux.store import Store, parse

        Store().tag(source, target)
        stderr().print(f"tagged {source} as {parse(target).name}")

    @app.command("prune")
    def prune(
        dry_run: bool = typer.Option(False, "--dry-run", help="Only report what would go."),
    ) -> None:
        """Delete blobs no image references, and leftovers of interrupted writes."""
        from gpux.cli.console import human_size, stderr
        from gpux.store import Store

        count, freed = Store().prune(dry_run=dry_run, warn=warn)
        verb = "would remove" if dry_run else "removed"
        stderr().print(f"{verb} {count} unreferenced file(s), {human_size(freed)}")
