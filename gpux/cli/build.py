"""``gpux build``."""

from __future__ import annotations

from pathlib import Path

import typer

from gpux.cli.options import BACKENDS, check_backend

VARIANT_STEPS = "basic|extended|all|fused|slim|fp16|int8|int8-static"


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
        variants: list[str] = typer.Option(
            [],
            "--variant",
            help=f"Also build NAME:TAG-<variant> from these steps, joined by '+' ({VARIANT_STEPS}),"
            " e.g. --variant int8 --variant fused+fp16. Repeatable; replaces build.optimize.",
        ),
        no_variants: bool = typer.Option(
            False, "--no-variants", help="Build the image only, not the GPUXfile's variants."
        ),
        samples: str | None = typer.Option(
            None,
            "--samples",
            help="Folder or .jsonl of real inputs to compare variants on (and calibrate "
            "int8-static); replaces build.samples.",
        ),
        min_cosine: float | None = typer.Option(
            None, "--min-cosine", help="Accuracy bound for every variant (build.accuracy)."
        ),
        max_abs_error: float | None = typer.Option(
            None, "--max-abs-error", help="Accuracy bound for every variant (build.accuracy)."
        ),
        max_rel_error: float | None = typer.Option(
            None, "--max-rel-error", help="Accuracy bound for every variant (build.accuracy)."
        ),
        min_top1_agreement: float | None = typer.Option(
            None,
            "--min-top1-agreement",
            help="Accuracy bound for every variant, 0-1 (build.accuracy).",
        ),
        quiet: bool = typer.Option(
            False,
            "-q",
            "--quiet",
            help="Print only the image names (the image, then its variants).",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the build report as JSON."),
    ) -> None:
        """Validate, optimise and smoke-test a project, then store it as an image (and its
        variants: fp16, int8, fused ..., each checked against it)."""
        from gpux.cli.console import print_json, stderr
        from gpux.cli.progress import RichReporter
        from gpux.errors import UsageError

        backend = check_backend(backend)
        if no_variants and variants:
            raise UsageError("--variant and --no-variants contradict each other", "pass one")
        bounds = {
            "min_cosine": min_cosine,
            "max_abs_error": max_abs_error,
            "max_rel_error": max_rel_error,
            "min_top1_agreement": min_top1_agreement,
        }
        for name, value in bounds.items():
            if value is not None and (value < 0 or (name.startswith("min_") and value > 1)):
                flag = "--" + name.replace("_", "-")
                raise UsageError(
                    f"{flag} {value} is out of range",
                    "cosine and top-1 agreement lie in 0-1; errors are >= 0",
                )
        reporter = RichReporter(quiet=quiet or as_json)
        from gpux.api import build as build_project

        result = build_project(
            path,
            tag=tag,
            optimize=not no_optimize,
            backend=backend,
            force=force,
            variants=[] if no_variants else (variants or None),
            samples=samples,
            accuracy={k: v for k, v in bounds.items() if v is not None} or None,
            reporter=reporter,
        )
        if as_json:
            print_json(result.to_json())
            return
        if quiet:
            typer.echo(result.reference.name)
            for variant in result.variants:
                typer.echo(variant.reference.name)
            return
        console = stderr()
        for reference, image, cached in [
            (result.reference, result.image, result.cached),
            *((v.reference, v.image, v.cached) for v in result.variants),
        ]:
            state = "up to date" if cached else "built"
            console.print(
                f"[bold green]{state}[/bold green] {reference.name} [dim]{image.digest[7:19]}[/dim]"
            )
