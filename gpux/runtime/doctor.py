"""``gpux doctor`` as data: what this machine offers and which backend ``auto`` would pick."""

from __future__ import annotations

import os
import platform
from typing import Any

from gpux.runtime import discovery, libraries, selection
from gpux.runtime.providers import PRIORITY


def _hints(runtime: discovery.Runtime, vendors: set[str], plan: selection.Plan) -> list[str]:
    hints = []
    if len(runtime.distributions) > 1:
        hints.append(
            f"several ONNX Runtime packages are installed ({', '.join(runtime.distributions)}); "
            "they overwrite each other's files. Keep one: pip uninstall -y "
            + " ".join(d.split()[0] for d in runtime.distributions)
            + " && pip install onnxruntime-gpu (or the one you need)"
        )
    chosen = plan.candidates[0].backend if plan.candidates else None
    if "NVIDIA" in vendors and "CUDAExecutionProvider" not in runtime.providers:
        hints.append(
            "NVIDIA GPU found but onnxruntime-gpu is not installed: pip install 'gpux[cuda]'"
        )
    if vendors and not any(p.ep_names for p in runtime.plugins) and chosen == "cpu":
        hints.append(
            f"{'/'.join(sorted(vendors))} GPU found but no GPU backend is installed; the WebGPU "
            "backend runs on any Vulkan/Metal/D3D12 GPU: pip install 'gpux[cpu,webgpu]'"
        )
    for skip in plan.skipped:
        if skip.relevant:
            hints.append(f"{skip.backend}: {skip.reason}. Fix: {skip.hint}")
    return hints


def diagnose() -> dict[str, Any]:
    """The machine: GPUs, ONNX Runtime backends, libraries and what ``auto`` would pick (``gpux
    doctor``; ``gpux.api.diagnose`` adds a model's placement)."""
    runtime = discovery.runtime()
    found, adapter_error = discovery.adapters()
    vendors = discovery.hardware_vendors()
    plan = selection.plan("auto", describe_adapters=True)
    report: dict[str, Any] = {
        "system": {
            "os": f"{platform.system()} {platform.release()}",
            "machine": platform.machine(),
            "cpu_cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "adapters": [a.to_json() for a in found],
        "adapter_error": adapter_error,
        "nvidia": {
            "driver": libraries.nvidia_driver_version(),
            "gpus": libraries.gpu_models(),
            "libraries": [
                libraries.find(name).to_json()
                for name in ("nvidia-driver", "cuda-runtime", "cublas", "cudnn", "tensorrt")
            ],
        },
        "onnxruntime": runtime.to_json(),
        "auto": {
            "order": PRIORITY,
            "candidates": [
                {"backend": c.backend, "provider": c.provider, "via": c.via}
                for c in plan.candidates
            ],
            "choice": plan.candidates[0].backend if plan.candidates else None,
            "skipped": [s.to_json() | {"relevant": s.relevant} for s in plan.skipped],
        },
        "hints": _hints(runtime, vendors, plan),
    }
    return report
