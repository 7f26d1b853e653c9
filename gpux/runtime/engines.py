"""Engines by name: ``onnxruntime`` runs every GPUX backend but ``wgpu``, GPUX's own WebGPU
engine (``gpux.runtime.wgpu``)."""

from __future__ import annotations

from gpux.errors import BackendError
from gpux.runtime.backend import Backend

_ENGINES: dict[str, str] = {
    "onnxruntime": "gpux.runtime.onnxruntime_backend:OnnxRuntimeBackend",
    "wgpu": "gpux.runtime.wgpu.backend:WgpuBackend",
}
# GPUX backend names (``--backend``) that an engine other than ONNX Runtime runs.
BACKEND_ENGINES: dict[str, str] = {"wgpu": "wgpu"}


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


def engine_for(backend: str) -> type[Backend]:
    """The engine that runs the GPUX backend ``backend`` (``runtime.backend``, ``--backend``)."""
    return engine(BACKEND_ENGINES.get(str(backend), "onnxruntime"))
