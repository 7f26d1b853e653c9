"""Which backend runs a model: the fastest one that really works, and why the others did not.

``plan`` turns a request (``auto`` or a backend name) into candidates, best first, and a list of
skipped backends with the cause and the fix. Causes are checked before ONNX Runtime is asked,
because ONNX Runtime lists providers whose libraries are missing and silently runs on CPU when
one cannot start.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from gpux.runtime import discovery, libraries
from gpux.runtime.providers import INSTALL_HINTS, PRIORITY, PROVIDERS

# Hardware that makes a backend worth mentioning when ``auto`` passes it over.
RELEVANT_VENDORS = {
    "tensorrt": {"NVIDIA"},
    "cuda": {"NVIDIA"},
    "rocm": {"AMD"},
    "coreml": {"Apple"},
    "directml": {"NVIDIA", "AMD", "Intel", "Qualcomm"},
    "openvino": {"Intel"},
    "webgpu": {"NVIDIA", "AMD", "Intel", "Apple", "Qualcomm"},
}
# Backends that exist on one operating system only: elsewhere the hardware does not make them
# worth a word (DirectML on a Linux NVIDIA machine, CoreML on Asahi Linux).
PLATFORM_ONLY = {"coreml": "darwin", "directml": "win32"}


@dataclass
class Candidate:
    backend: str
    provider: str
    devices: list[discovery.EpDevice] = field(default_factory=list)  # set: use the device API

    @property
    def via(self) -> str:
        return "device API" if self.devices else "providers list"


@dataclass
class Skip:
    backend: str
    reason: str
    hint: str
    relevant: bool  # worth telling an `auto` user (the hardware or the package is present)

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "reason": self.reason, "hint": self.hint}


@dataclass
class Plan:
    requested: str
    candidates: list[Candidate]
    skipped: list[Skip]

    def explanation(self, chosen: str | None = None) -> str | None:
        """Why backends better than ``chosen`` (default: the first candidate) were passed over,
        for `auto` (None when no relevant one was). Backends ranked below it are no fallback."""
        if chosen is None and self.candidates:
            chosen = self.candidates[0].backend
        rank = _rank(chosen) if chosen else len(PRIORITY)
        reasons = [
            f"{s.backend}: {s.reason}"
            for s in self.skipped
            if s.relevant and _rank(s.backend) < rank
        ]
        return "; ".join(reasons) or None


def _rank(backend: str) -> int:
    return PRIORITY.index(backend) if backend in PRIORITY else len(PRIORITY)


def _check(
    backend: str,
    runtime: discovery.Runtime,
    vendors: set[str],
    describe_adapters: bool = False,
) -> Candidate | Skip:
    relevant_hardware = bool(RELEVANT_VENDORS.get(backend, set()) & vendors) and (
        PLATFORM_ONLY.get(backend, sys.platform) == sys.platform
    )
    plugin_names = {name for plugin in runtime.plugins for name in plugin.ep_names}
    for provider in PROVIDERS[backend]:
        devices = [
            d for d in runtime.devices_for(provider) if backend == "cpu" or d.device_type != "CPU"
        ]
        in_build = provider in runtime.providers
        # A plugin EP only starts through the device API; ONNX Runtime >= 1.31 also lists it in
        # the classic providers list, where asking for it by name silently yields the CPU.
        if provider in plugin_names:
            if devices:
                return Candidate(backend, provider, devices)
            if describe_adapters:
                seen = (
                    ", ".join(
                        f"{a.name} ({a.backend}{', software' if a.is_software else ''})"
                        for a in discovery.adapters()[0]
                    )
                    or "none"
                )
                where = f"adapters wgpu sees: {seen}"
            else:  # enumerating adapters costs ~300 ms: only `gpux doctor` pays for it
                where = "'gpux doctor' lists the adapters"
            return Skip(
                backend,
                f"the {provider} plugin is installed but reports no GPU device ({where})",
                "run on a machine with a Vulkan, Metal or D3D12 GPU and its driver; software "
                "adapters such as lavapipe are not used",
                True,
            )
        if in_build:
            missing = _missing_libraries(backend)
            if missing:
                reason, hint = missing
                return Skip(backend, reason, hint, True)
            return Candidate(backend, provider)
    installed = ", ".join(runtime.distributions) or "no onnxruntime package"
    offered = ", ".join(p for p in runtime.providers if p != "AzureExecutionProvider")
    return Skip(
        backend,
        f"not in this ONNX Runtime build ({installed} offers {offered})",
        f"{INSTALL_HINTS[backend]}, or use --backend auto",
        relevant_hardware,
    )


def _missing_libraries(backend: str) -> tuple[str, str] | None:
    """(reason, hint) when a library the backend needs cannot be loaded."""
    if backend in ("cuda", "tensorrt"):
        if not libraries.find("nvidia-driver").found:
            return (
                "no NVIDIA driver (libcuda not found)",
                "install the NVIDIA driver; without an NVIDIA GPU use --backend auto or cpu",
            )
        preload_error = libraries.preload_onnxruntime_gpu()
        for name, what, fix in (
            (
                "cuda-runtime",
                "the CUDA runtime",
                "pip install 'gpux[cuda]' (brings CUDA 13 wheels)",
            ),
            ("cudnn", "cuDNN 9", "pip install nvidia-cudnn-cu13"),
        ):
            library = libraries.find(name)
            if not library.found:
                detail = f"; preload said: {preload_error}" if preload_error else ""
                return (
                    f"{what} is missing ({' / '.join(library.tried)} not found){detail}",
                    fix,
                )
    if backend == "tensorrt":
        library = libraries.find("tensorrt")
        if not library.found:
            return (
                "ONNX Runtime lists TensorrtExecutionProvider but TensorRT's libraries are "
                f"missing ({' / '.join(library.tried)} not found)",
                "pip install 'tensorrt-cu13<11' (TensorRT 10), or use --backend cuda",
            )
    if backend == "rocm" and not (libraries.find("rocm").found or libraries.find("migraphx").found):
        return ("ROCm libraries are missing (libamdhip64 not found)", INSTALL_HINTS["rocm"])
    return None


def plan(requested: str, describe_adapters: bool = False) -> Plan:
    runtime = discovery.runtime()
    vendors = discovery.hardware_vendors()
    names = PRIORITY if requested == "auto" else [requested]
    candidates: list[Candidate] = []
    skipped: list[Skip] = []
    for backend in names:
        outcome = _check(backend, runtime, vendors, describe_adapters)
        if isinstance(outcome, Candidate):
            candidates.append(outcome)
        else:
            skipped.append(outcome)
    return Plan(requested, candidates, skipped)
