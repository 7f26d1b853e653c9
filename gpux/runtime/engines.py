"""Backends by name. ``onnxruntime`` is the default engine behind every GPUX backend today."""

from __future__ import annotations

from gpux.errors import BackendError
from gpux.runtime.backend import Backend

_ENGINES: dict[str, str] = {
    "onnxruntime": "gpux.runtime.onnxruntime_backend:OnnxRuntimeBackend",
}


def register(name: str, target: str) -> None:
    """Register an engine as ``module:Class``; imported only when first used."""
    _ENGINES[name] = target


def require_onnxruntime() -> None:
    """A clear error when no ONNX Runtime build is installed (the base package carries none)."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        raise BackendError(
            "ONNX Runtime is not installed",
            "install one build: pip install 'gpux[cpu]', 'gpux[cuda]' (NVIDIA) or "
            "'gpux[openvino]' (Intel); add 'webgpu' for any Vulkan/Metal/D3D12 GPU",
        )


def engine(name: str = "onnxruntime") -> type[Backend]:
    import importlib

    if name == "onnxruntime":
        require_onnxruntime()
    if name not in _ENGINES:
        raise BackendError(
            f"unknown engine '{name}'", f"known engines: {', '.join(sorted(_ENGINES))}"
        )
    module_name, _, class_name = _ENGINES[name].partition(":")
    backend_class: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return backend_class
