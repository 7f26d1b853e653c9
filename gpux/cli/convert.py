"""``gpux convert``: a Hugging Face checkpoint folder or a GGUF file becomes an onnxruntime-genai
folder (see :mod:`gpux.builder.convert`), ready for ``model: {source: OUT, format: genai}``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("convert")
    def convert(
        source: Path = typer.Argument(
            ..., help="A .gguf file or a Hugging Face transformers checkpoint folder."
        ),
        out: Path = typer.Argument(..., help="The genai folder to write (must not exist)."),
        precision: str = typer.Option(
            "int4", "--precision", "-p", help="Weights: int4, int8, fp16 or fp32."
        ),
        target: str = typer.Option(
            "cpu",
            "--target",
            "-t",
            help="Backend the graph is made for: cpu, cuda, directml, webgpu.",
        ),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the builder's output."),
    ) -> None:
        """Convert a transformers checkpoint or a GGUF file into an onnxruntime-genai folder
        (needs the converter: torch, transformers, onnx-ir, gguf; GPUX_CONVERT_PYTHON)."""
        import sys
        import time

        from gpux.builder.convert import check_options, require_converter, source_format
        from gpux.builder.convert import convert as run_conversion

        kind = source_format(source)
        check_options(precision, target)
        require_converter()  # before announcing a conversion that cannot start
        started = time.perf_counter()
        sys.stderr.write(f"converting {kind} '{source}' to {precision} for {target} ...\n")

        def show(line: str) -> None:
            sys.stderr.write(f"  {line}\n")

        run_conversion(
            source,
            out,
            precision=precision,
            target=target,
            kind=kind,
            log=show if verbose else None,
        )
        size = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
        sys.stderr.write(
            f"wrote {out} ({size / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s; "
            f"build it with model: {{source: {out.name}, format: genai}}\n"
        )
