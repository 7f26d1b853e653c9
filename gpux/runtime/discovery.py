"""What this machine offers: ONNX Runtime's providers and devices, plugin EPs, GPU adapters.

Plugin execution providers (``onnxruntime_ep_webgpu`` and any ``onnxruntime_ep_*`` package with a
``get_library_path()``) are registered here, once per process, so that ``auto`` and ``doctor`` see
them with no configuration.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

PLUGIN_PREFIX = "onnxruntime_ep_"
PCI_DEVICES = "/sys/bus/pci/devices"

VENDORS = {
    0x10DE: "NVIDIA",
    0x1002: "AMD",
    0x8086: "Intel",
    0x106B: "Apple",
    0x5143: "Qualcomm",
    0x10005: "Mesa",
}


@dataclass
class EpDevice:
    """One (execution provider, hardware device) pair from ``onnxruntime.get_ep_devices()``."""

    ep_name: str
    device_type: str  # "CPU" | "GPU" | "NPU"
    vendor: str
    vendor_id: int
    device_id: int
    metadata: dict[str, str]
    handle: Any = field(repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "ep": self.ep_name,
            "type": self.device_type,
            "vendor": self.vendor,
            "vendor_id": self.vendor_id,
            "device_id": self.device_id,
            "metadata": self.metadata,
        }


@dataclass
class Plugin:
    module: str
    library: str | None
    ep_names: list[str]
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "library": self.library,
            "eps": self.ep_names,
            "error": self.error,
        }


@dataclass
class Adapter:
    """A GPU adapter seen by wgpu (Vulkan, Metal, D3D12 or GL)."""

    name: str
    vendor: str
    vendor_id: int
    adapter_type: str  # "DiscreteGPU" | "IntegratedGPU" | "CPU" | ...
    backend: str  # "Vulkan" | "Metal" | "D3D12" | "OpenGL"
    description: str

    @property
    def is_software(self) -> bool:
        return self.adapter_type == "CPU"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "vendor": self.vendor,
            "vendor_id": self.vendor_id,
            "type": self.adapter_type,
            "backend": self.backend,
            "description": self.description,
        }


@dataclass
class Runtime:
    """ONNX Runtime as installed here."""

    version: str
    distributions: list[str]  # onnxruntime, onnxruntime-gpu ... (two is a broken install)
    build_info: str
    providers: list[str]  # the classic get_available_providers() list
    devices: list[EpDevice]
    plugins: list[Plugin]

    def devices_for(self, ep_name: str) -> list[EpDevice]:
        return [d for d in self.devices if d.ep_name == ep_name]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "distributions": self.distributions,
            "build_info": self.build_info,
            "providers": self.providers,
            "devices": [d.to_json() for d in self.devices],
            "plugins": [p.to_json() for p in self.plugins],
        }


def _plugin_modules() -> list[str]:
    return sorted(
        module.name for module in pkgutil.iter_modules() if module.name.startswith(PLUGIN_PREFIX)
    )


def register_plugins() -> list[Plugin]:
    """Register every installed plugin EP package with ONNX Runtime (idempotent)."""
    return list(_register_plugins())


@cache
def _register_plugins() -> tuple[Plugin, ...]:
    import onnxruntime as ort

    register = getattr(ort, "register_execution_provider_library", None)
    plugins = []
    for name in _plugin_modules():
        try:
            module = importlib.import_module(name)
            library = str(module.get_library_path())
            names_of = getattr(module, "get_ep_names", None)
            ep_names = list(names_of()) if names_of else [str(module.get_ep_name())]
        except Exception as exc:  # a broken plugin package must not break GPUX
            plugins.append(Plugin(name, None, [], f"cannot load: {exc}"))
            continue
        if register is None:
            plugins.append(
                Plugin(
                    name,
                    library,
                    ep_names,
                    "this ONNX Runtime is too old for plugin EPs (needs >= 1.23)",
                )
            )
            continue
        try:
            register(ep_names[0], library)
            plugins.append(Plugin(name, library, ep_names))
        except Exception as exc:
            already = "already registered" in str(exc).lower()
            plugins.append(Plugin(name, library, ep_names, None if already else str(exc)))
    return tuple(plugins)


def installed_versions(*distributions: str) -> dict[str, str]:
    """Versions of the installed distributions among ``distributions``, in the order given."""
    from importlib import metadata

    found = {}
    for dist in distributions:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


ONNXRUNTIME_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-rocm",
    "onnxruntime-migraphx",
    "onnxruntime-qnn",
)


@cache
def runtime() -> Runtime:
    from gpux.runtime.engines import require_onnxruntime

    require_onnxruntime()
    import onnxruntime as ort

    plugins = register_plugins()
    devices = []
    for device in getattr(ort, "get_ep_devices", list)():
        hardware = device.device
        devices.append(
            EpDevice(
                ep_name=device.ep_name,
                device_type=str(hardware.type).rsplit(".", 1)[-1],
                vendor=hardware.vendor,
                vendor_id=int(hardware.vendor_id),
                device_id=int(hardware.device_id),
                metadata=dict(hardware.metadata),
                handle=device,
            )
        )
    build_info = getattr(ort, "get_build_info", lambda: "")()
    return Runtime(
        version=ort.__version__,
        distributions=[
            f"{dist} {version}"
            for dist, version in installed_versions(*ONNXRUNTIME_DISTRIBUTIONS).items()
        ],
        build_info=str(build_info),
        providers=list(ort.get_available_providers()),
        devices=devices,
        plugins=plugins,
    )


@contextlib.contextmanager
def captured_native_stderr() -> Iterator[list[str]]:
    """Capture what native libraries (Mesa, Vulkan loaders) print on fd 2 while probing."""
    captured: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.extend(sink.read().decode(errors="replace").splitlines())


@cache
def adapters() -> tuple[tuple[Adapter, ...], str | None]:
    """GPU adapters seen by wgpu, and an error text if wgpu could not look."""
    try:
        with captured_native_stderr():
            import wgpu

            found = wgpu.gpu.enumerate_adapters_sync()
            infos = [adapter.info for adapter in found]
    except ImportError:
        # wgpu ships with the webgpu extra only; doctor still reports everything else.
        return (), "wgpu is not installed (pip install 'gpux[webgpu]' to list GPU adapters)"
    except Exception as exc:  # no wgpu-native for this platform, no loader ...
        return (), f"wgpu could not enumerate adapters: {exc}"
    result = []
    for info in infos:
        vendor_id = int(info.get("vendor_id", 0) or 0)
        result.append(
            Adapter(
                name=str(info.get("device", "")),
                vendor=VENDORS.get(vendor_id) or str(info.get("vendor") or "unknown"),
                vendor_id=vendor_id,
                adapter_type=str(info.get("adapter_type", "")),
                backend=str(info.get("backend_type", "")),
                description=str(info.get("description", "")),
            )
        )
    return tuple(result), None


@cache
def hardware_vendors() -> set[str]:
    """Vendors of the GPUs in this machine, cheaply: PCI display controllers on Linux, the
    platform elsewhere. (wgpu's adapter enumeration costs ~300 ms; only ``doctor`` pays it.)"""
    import platform
    from pathlib import Path

    from gpux.runtime import libraries

    vendors: set[str] = set()
    for device in Path(PCI_DEVICES).glob("*"):
        try:
            if not (device / "class").read_text().startswith("0x03"):  # display controller
                continue
            vendor = VENDORS.get(int((device / "vendor").read_text(), 16))
        except (OSError, ValueError):
            continue
        if vendor:
            vendors.add(vendor)
    if libraries.nvidia_driver_version():
        vendors.add("NVIDIA")
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        vendors.add("Apple")
    return vendors
