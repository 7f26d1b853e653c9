"""``gpux images`` (alias ``list``), ``rm``, ``tag``, ``prune``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    def images(
        as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="Print names only."),
    ) -> None:
        """List local images."""
        from gpux.cli.console import human_size, print_json, since, stdout
        from gpux.store import Store

        found = Store().images()
        if as_json:
            print_json(
                [
                    {
                        "names": image.names,
                        "digest": image.digest,
                        "size": image.size,
                        "created": image.created,
                        "backend": image.annotations.get("dev.gpux.placement.backend"),
                    }
                    for image in found
                ]
            )
            return
        if quiet:
            for image in found:
                for name in image.names:
                    typer.echo(name)
            return
        from rich.table import Table

        table = Table(show_edge=False, box=None, header_style="bold")
        for column in ("NAME", "ID", "SIZE", "BACKEND", "CREATED"):
            table.add_column(column)
        for image in found:
            for name in image.names:
                table.add_row(
                    name,
                    image.digest[7:19],
                    human_size(image.size),
                    image.annotations.get("dev.gpux.placement.backend", "-"),
                    since(image.created),
                )
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
            for removed in store.remove(name):
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

        count, freed = Store().prune(dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        stderr().print(f"{verb} {count} unreferenced file(s), {human_size(freed)}")
