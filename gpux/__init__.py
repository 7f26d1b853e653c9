"""GPUX: Docker for ML inference on any GPU.

Python API (the CLI and the server call the same functions)::

    import gpux
    model = gpux.load("sentiment:latest")
    outputs = model.run({"input_ids": ids, "attention_mask": mask})

Heavy dependencies (onnx, onnxruntime) are imported only when a model is built or loaded.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# ONNX Runtime 1.32 sends usage telemetry (1DS, mobile.events.data.microsoft.com) from a native
# thread of any process that imports it, on Linux too, unless this is set before the import.
# GPUX contacts only the hosts its user names; setting the variable to 0 keeps the telemetry.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

if TYPE_CHECKING:
    from gpux.api import Model, build, load

__all__ = ["GPUXError", "Model", "__version__", "build", "load"]

from gpux.errors import GPUXError


def __getattr__(name: str) -> Any:
    if name in {"Model", "build", "load"}:
        from gpux import api

        return getattr(api, name)
    raise AttributeError(f"module 'gpux' has no attribute {name!r}")
