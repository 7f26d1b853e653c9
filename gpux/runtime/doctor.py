"""``gpux doctor`` as data: what this machine offers and which backend ``auto`` would pick."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import Any

from gpux.runtime import discovery, instances, libraries, selection
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


# Each onnxruntime-genai build links the ONNX Runtime build it was made with; the gpux extras pair
# them ([cpu], [cuda]). All install the same `onnxruntime_genai` module.
GENAI_PAIRS = {
    "onnxruntime-genai": "onnxruntime",
    "onnxruntime-genai-cuda": "onnxruntime-gpu",
    "onnxruntime-genai-directml": "onnxruntime-directml",
}
_EXTRA_OF = {"onnxruntime": "gpux[cpu]", "onnxruntime-gpu": "gpux[cuda]"}


def genai_hints(onnxruntime: list[str], genai: list[str]) -> list[str]:
    """Hints about the generation engine's packages (``"name version"`` lists, as installed)."""
    names = [entry.split()[0] for entry in genai]
    runtimes = [entry.split()[0] for entry in onnxruntime]
    if len(names) > 1:
        return [
            f"several onnxruntime-genai packages are installed ({', '.join(genai)}); they "
            "overwrite each other's files. Keep the one paired with your ONNX Runtime: pip "
            f"uninstall -y {' '.join(names)} && pip install 'gpux[cpu]' (or 'gpux[cuda]')"
        ]
    if names and GENAI_PAIRS.get(names[0]) not in runtimes:
        paired = GENAI_PAIRS.get(names[0], "its own ONNX Runtime build")
        installed = ", ".join(onnxruntime) or "no ONNX Runtime"
        fix = _EXTRA_OF.get(runtimes[0], "gpux[cpu]") if len(runtimes) == 1 else "gpux[cpu]"
        return [
            f"{genai[0]} runs on {paired}, but {installed} is installed: generative models "
            f"will not load. Install the pair: pip uninstall -y {names[0]} && pip install "
            f"'{fix}'"
        ]
    return []


def diagnose(gpus: str | None = None) -> dict[str, Any]:
    """The machine: GPUs, ONNX Runtime backends, libraries and what ``auto`` would pick (``gpux
    doctor``; ``gpux.api.diagnose`` adds a model's placement). ``gpus`` (as ``--gpus``): the
    instances a model would get on the GPU backend ``auto`` would pick."""
    runtime = discovery.runtime()
    found, adapter_error = discovery.adapters()
    vendors = discovery.hardware_vendors()
    plan = selection.plan("auto", describe_adapters=True)
    genai = [
        f"{name} {version}" for name, version in discovery.installed_versions(*GENAI_PAIRS).items()
    ]
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
        "cuda_gpus": [gpu.to_json() for gpu in instances.nvidia_gpus()],
        "wgpu_engine": wgpu_engine(found),
        "onnxruntime_genai": {"distributions": genai},
        "hints": _hints(runtime, vendors, plan) + genai_hints(runtime.distributions, genai),
    }
    if gpus is not None:
        report["instances"] = planned_instances(gpus, plan)
    return report


def wgpu_engine(adapters: Sequence[discovery.Adapter]) -> dict[str, Any]:
    """GPUX's own WebGPU engine (``--backend wgpu``): the ops it claims, the adapter it would
    use."""
    from gpux.runtime.wgpu.report import engine_report

    return engine_report(adapters)


def planned_instances(gpus: str, plan: selection.Plan) -> dict[str, Any]:
    """``--gpus``'s instances on the GPU backend ``auto`` would pick, or why there are none."""
    from gpux.errors import GPUXError

    backend = next(
        (c.backend for c in plan.candidates if c.backend in instances.DEVICE_BACKENDS), None
    )
    answer: dict[str, Any] = {"request": gpus, "backend": backend}
    try:
        request = instances.GpuRequest.parse(gpus)
        if backend is None:
            answer["error"] = "no GPU backend works here (the backends list says why)"
            return answer
        found = instances.machine_gpus(backend)
        plans = instances.plan(request, found, backend, os.cpu_count() or 1)
    except GPUXError as exc:
        answer["error"] = exc.message
        return answer
    names = {gpu.index: gpu for gpu in found}
    answer["instances"] = [
        {
            "instance": index,
            "device": one.label,
            **({"gpu": names[one.device].to_json()} if one.device in names else {}),
        }
        for index, one in enumerate(plans)
    ]
    return answer
