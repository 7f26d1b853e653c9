"""``gpux run`` with tensors: a model without a pipeline, or ``--input NAME=VALUE`` naming
model inputs past it. Values come as JSON or .npy/.json files (``--input``), or as a JSON
request on stdin; outputs are printed as JSON (summarised unless ``--full``) and written to
.json/.npy/.npz with ``-o``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from gpux import json_text
from gpux.api import Model
from gpux.cli.console import print_json
from gpux.errors import InputError, UsageError
from gpux.pipeline.inputs import from_request, parse_cli_inputs
from gpux.pipeline.outputs import check_output_path, outputs_to_json, write_outputs


def run_tensors(
    model: Model,
    target: str,
    inputs: list[str],
    output: Path | None,
    full: bool,
    interactive: bool,
    draw: Path | None,
) -> None:
    """One model call on the tensors given; refuses the options that need a pipeline."""
    if draw is not None:
        raise UsageError(
            "--draw draws the boxes of detection results on an image: it needs a pipeline "
            "(preprocess/postprocess in the GPUXfile) and an image as input",
            "drop --draw, or run a detector whose GPUXfile declares an image input",
        )
    if output is not None:
        check_output_path(output)  # before the model runs, not after
    if interactive:
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


def _read_stdin() -> object:
    """The JSON request piped on stdin (no --input given)."""
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
        raise InputError(
            f"the request on stdin is not valid JSON: {exc}",
            'send an object of input names to values, e.g. {"x": [[1.0, 2.0]]}',
        ) from None
