"""``gpux verify``: re-hash the blobs of the store's images (see :mod:`gpux.store.verify`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify(
        name: str | None = typer.Argument(
            None, help="Image to check (name[:tag] or digest); every image when left out."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Re-hash every blob of every image (or of NAME); fail if one is damaged."""
        from rich.markup import escape

        from gpux.cli.console import human_size, print_json, stderr
        from gpux.cli.progress import transfer_bar
        from gpux.store import Store
        from gpux.store.verify import ImageCheck
        from gpux.store.verify import verify as verify_store

        console = stderr()
        width = 0

        def report(image: ImageCheck) -> None:
            # One line per image as soon as it is checked: a large store shows its progress.
            blobs = f"{len(image.blobs)} blob{'s' if len(image.blobs) != 1 else ''}"
            status = "[green]ok[/green]" if image.ok else "[red]damaged[/red]"
            label = escape(", ".join(image.names) or image.name)
            console.print(f" {label:<{width}}  {blobs:>8}  {human_size(image.size):>9}  {status}")

        store = Store()
        with transfer_bar("verifying") as bar:
            width = max((len(", ".join(n)) for n in store.manifests().values()), default=0)
            result = verify_store(
                store,
                name,
                progress=bar.advance if bar else None,
                on_total=bar.set_total if bar else None,
                on_image=report,
            )
        if as_json:
            print_json(
                [
                    {
                        "names": image.names,
                        "digest": image.digest or None,
                        "status": "ok" if image.ok else "damaged",
                        "problems": image.problems,
                        "blobs": [
                            {
                                "role": blob.role,
                                "digest": blob.digest,
                                "size": blob.size,
                                "status": "ok" if blob.problem is None else blob.problem,
                            }
                            for blob in image.blobs
                        ],
                        **({} if image.ok else {"hint": image.hint}),
                    }
                    for image in result.images
                ]
            )
        error = result.error()
        if error is not None:
            raise error
        blobs = len({blob.digest for image in result.images for blob in image.blobs})
        size = sum({b.digest: b.size for i in result.images for b in i.blobs}.values())
        count = len(result.images)
        console.print(
            f"verified {count} image{'s' if count != 1 else ''} ({blobs} blobs, "
            f"{human_size(size)}): every blob matches its digest"
        )
