"""``gpux run``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from gpux.cli.options import BACKENDS, check_backend


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        target: str = typer.Argument(..., help="Image name[:tag], digest, project path or .onnx."),
        inputs: list[str] = typer.Option(
            [],
            "-i",
            "--input",
            help="NAME=VALUE (JSON), NAME=@file.npy|.json, or @request.json. Repeatable. "
            "A model with one input also takes a bare VALUE or @file.npy. "
            "Without --input, a JSON request is read from stdin.",
        ),
        output: Path | None = typer.Option(
            None,
            "-o",
            "--output",
            help="Also write outputs to a .json, .npy or .npz file (with a pipeline: the "
            "results to .json/.jsonl, the raw tensors to .npz).",
        ),
        full: bool = typer.Option(False, "--full", help="Print every value of large tensors."),
        backend: str | None = typer.Option(None, "--backend", help=f"Override ({BACKENDS})."),
        raw: bool = typer.Option(
            False,
            "--raw",
            help="With a pipeline: the raw output tensors too, next to the results "
            "(summarised; complete with --full; -o out.npz writes them as arrays).",
        ),
        interactive: bool = typer.Option(
            False, "-I", "--interactive", help="Read one input per line, print one result per line."
        ),
        batch_size: int = typer.Option(
            16, "--batch-size", min=1, help="Items per model call when many inputs are given."
        ),
        draw: Path | None = typer.Option(
            None,
            "--draw",
            help="With a detection pipeline and one image: draw the boxes found on it and "
            "save it to this image file (.png, .jpg, ...).",
        ),
    ) -> None:
        """Run inference and print the results as JSON (JSONL for many inputs).

        With a pipeline in the GPUXfile, inputs are what people have: text, image or audio
        files, folders of them, .jsonl files; without one, tensors as JSON or .npy."""
        backend = check_backend(backend)
        from gpux.api import load
        from gpux.cli.console import print_json
        from gpux.pipeline.inputs import from_request, parse_cli_inputs
        from gpux.pipeline.outputs import check_output_path, outputs_to_json, write_outputs

        reporter = None
        from gpux.api import looks_like_path

        if looks_like_path(target) and not target.endswith(".onnx"):
            from gpux.cli.progress import RichReporter

            reporter = RichReporter(quiet=True)
        model = load(target, backend=backend, warmup=False, reporter=reporter)
        reason = model.placement.fallback_reason
        if reason:
            from gpux import notes

            if notes.first_time(reason):  # a fact about the machine: said once, kept in JSON
                # Plain text: importing Rich for one line would cost every run ~60 ms.
                sys.stderr.write(
                    f"note: running on {model.placement.backend}; better backends were passed "
                    f"over: {reason} {notes.ONCE}\n"
                )
        if model.pipeline is not None and not _tensor_inputs(inputs, model):
            from gpux.cli.predict import run_pipeline

            run_pipeline(model, inputs, output, raw, interactive, batch_size, full, draw)
            return
        if draw is not None:
            from gpux.errors import UsageError

            raise UsageError(
                "--draw draws the boxes of detection results on an image: it needs a pipeline "
                "(preprocess/postprocess in the GPUXfile) and an image as input",
                "drop --draw, or run a detector whose GPUXfile declares an image input",
            )
        if output is not None:
            check_output_path(output)  # before the model runs, not after
        if interactive:
            from gpux.errors import UsageError

            raise UsageError(
                "--interactive needs a pipeline (preprocess/postprocess in the GPUXfile)",
                "declare one, or pass tensors with --input",
            )
        names = [tensor.name for tensor in model.inputs]
        values = (
            parse_cli_inputs(inputs, model.inputs) if inputs else from_request(_read_stdin(), names)
        )
        started = time.perf_counter()
        outputs = model.run(values)
        elapsed_ms = (time.perf_counter() - started) * 1e3
        placement = model.placement
        result = {
            "model": model.image.name if model.image else target,
            "backend": placement.backend,
            "latency_ms": round(elapsed_ms, 3),
            "outputs": outputs_to_json(outputs, full=full),
        }
        if placement.fallback_reason:
            result["fallback_reason"] = placement.fallback_reason
        if output is not None:
            result["written"] = [str(p) for p in write_outputs(outputs, output)]
        print_json(result)


def _tensor_inputs(inputs: list[str], model: object) -> bool:
    """True when every --input names a model input the pipeline does not: tensors given
    directly, past the pipeline (e.g. to compare with another runtime)."""
    from gpux.api import Model
    from gpux.pipeline.runner import Pipeline

    assert isinstance(model, Model) and isinstance(model.pipeline, Pipeline)
    pipeline_names = set(model.pipeline.input_names)
    tensor_names = {t.name for t in model.inputs} - pipeline_names
    names = [item.partition("=")[0] for item in inputs if "=" in item]
    return bool(inputs) and len(names) == len(inputs) and set(names) <= tensor_names


def _read_stdin() -> object:
    from gpux import json_text
    from gpux.errors import UsageError

    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError(
            "no inputs given",
            "pass --input NAME=VALUE (see 'gpux inspect' for the input names), "
            "or pipe a JSON request on stdin",
        )
    text = sys.stdin.read()
    if not text.strip():
        raise UsageError(
            "no inputs given: stdin is empty",
            "pipe a JSON request, e.g. echo '{\"x\": [1.0]}' | gpux run NAME",
        )
    try:
        return json_text.loads(text)
    except ValueError as exc:
        from gpux.errors import InputError

        raise InputError(
            f"the request on stdin is not valid JSON: {exc}",
            'send an object of input names to values, e.g. {"x": [[1.0, 2.0]]}',
        ) from None
