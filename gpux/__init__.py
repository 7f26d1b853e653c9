"""GPUX: Docker for ML inference on any GPU.

Python API (the CLI and the server call the same functions)::

    import gpux
    model = gpux.load("sentiment:latest")
    outputs = model.run({"input_ids": ids, "attention_mask": mask})

Heavy dependencies (onnx, onnxruntime) are imported only when a model is built or loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
