"""Where an onnxruntime-genai model runs.

genai creates its ONNX Runtime sessions itself, so GPUX cannot ask them for their providers. Two
sources are read instead, and ``Placement.details["proof"]`` says which one stands behind the
answer: ``onnxruntime-log`` (ONNX Runtime's own verbose log of the session creation, which lists
the nodes placed on each execution provider: read with ``prove_placement=True``, as the build
does) or ``genai-device`` (the device onnxruntime-genai reports for the model,
``og.Model.device_type``: where its buffers live, not a per-node proof).
"""

from __future__ import annotations

import re
from typing import Any

from gpux.runtime.backend import Placement

_BACKEND_OF_DEVICE = {
    "CPU": "cpu",
    "CUDA": "cuda",
    "DML": "directml",
    "WEBGPU": "webgpu",
    "OPENVINO": "openvino",
}
_PLACED = re.compile(r"placed on \[(\w+)\]\. Number of nodes: (\d+)")


def placements_in_log(log: str) -> dict[str, int]:
    """``{"CPUExecutionProvider": 137}``: nodes per provider, from ONNX Runtime's verbose log."""
    found: dict[str, int] = {}
    for provider, count in _PLACED.findall(log):
        found[provider] = found.get(provider, 0) + int(count)
    return found


def genai_placement(model: Any, requested: str, provider: str | None, log: str) -> Placement:
    device = str(model.device_type)  # "CPU", "CUDA", "DML" ...
    nodes = placements_in_log(log)
    backend = _BACKEND_OF_DEVICE.get(device.upper(), device.lower())
    if nodes:
        details: dict[str, Any] = {"proof": "onnxruntime-log", "nodes": nodes}
        providers = sorted(nodes, key=lambda name: -nodes[name])
    else:
        details = {
            "proof": "genai-device",
            "unproven": "which execution provider runs each node (ONNX Runtime's placement "
            "log was not read for this load)",
        }
        providers = ["CPUExecutionProvider"] if backend == "cpu" else []
    details["engine"] = "onnxruntime-genai"
    details["genai_provider"] = provider or "the folder's genai_config.json"
    return Placement(
        backend=backend,
        providers=providers,
        device=f"{device} (onnxruntime-genai)",
        requested=requested,
        details=details,
    )
