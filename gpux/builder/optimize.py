"""Offline graph optimisation with ONNX Runtime, saved as a portable ``.onnx`` artefact.

Only the *basic* level is applied offline: its rewrites (constant folding, redundant node
elimination, semantics-preserving fusions) are provider-independent, so the optimised model runs
on every backend. Extended and layout optimisations are hardware-specific; ONNX Runtime applies
them when the session is created on the target machine (``runtime.graph_optimization``).
"""

from __future__ import annotations

import os
from pathlib import Path

from gpux.errors import ModelError

OFFLINE_LEVEL = "basic"


def optimize(model_path: Path, output_path: Path) -> None:
    from gpux.runtime.engines import require_onnxruntime

    require_onnxruntime()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = os.fspath(output_path)
    try:
        ort.InferenceSession(os.fspath(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime's pybind errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"ONNX Runtime cannot load the model: {first}",
            "the model uses an operator or opset this ONNX Runtime does not support; "
            "re-export with an older opset, or build with --no-optimize to see the raw error",
        ) from None
    if not output_path.is_file():
        raise ModelError(
            "ONNX Runtime did not write the optimised model",
            "build with --no-optimize",
        )
