"""A machine made up for the selection and doctor tests: which ONNX Runtime providers, plugin EPs,
devices, GPU adapters and native libraries it has. ``machine`` patches the discovery functions
(cached with functools.cache, so the module attributes are replaced) to read from it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gpux.runtime import discovery, libraries
from gpux.runtime.providers import PROVIDERS

NVIDIA_STACK = {"nvidia-driver", "cuda-runtime", "cublas", "cudnn", "tensorrt"}


def device(
    ep: str, kind: str = "GPU", vendor: str = "NVIDIA", **metadata: str
) -> discovery.EpDevice:
    vendor_id = {v: k for k, v in discovery.VENDORS.items()}.get(vendor, 0)
    return discovery.EpDevice(ep, kind, vendor, vendor_id, 0x2684, dict(metadata), handle=object())


def adapter(
    name: str = "llvmpipe (LLVM 15.0.6, 256 bits)",
    vendor: str = "Mesa",
    kind: str = "CPU",
    backend: str = "Vulkan",
) -> discovery.Adapter:
    vendor_id = {v: k for k, v in discovery.VENDORS.items()}.get(vendor, 0)
    return discovery.Adapter(name, vendor, vendor_id, kind, backend, "")


WEBGPU_PLUGIN = discovery.Plugin(
    "onnxruntime_ep_webgpu", "/site-packages/libwebgpu.so", ["WebGpuExecutionProvider"]
)


@dataclass
class Machine:
    providers: list[str] = field(
        default_factory=lambda: ["AzureExecutionProvider", "CPUExecutionProvider"]
    )
    devices: list[discovery.EpDevice] = field(
        default_factory=lambda: [device("CPUExecutionProvider", "CPU", "Intel")]
    )
    plugins: list[discovery.Plugin] = field(default_factory=list)
    distributions: list[str] = field(default_factory=lambda: ["onnxruntime 1.32.0"])
    vendors: set[str] = field(default_factory=set)  # what hardware_vendors() reports
    adapters: list[discovery.Adapter] = field(default_factory=list)
    adapter_error: str | None = None
    libraries: set[str] = field(default_factory=set)  # names (as libraries.find takes) that load
    preload_error: str | None = None
    driver: str | None = None
    gpus: list[str] = field(default_factory=list)
    preloads: int = 0  # how often preload_onnxruntime_gpu was called

    def offer(self, *backends: str) -> Machine:
        """ONNX Runtime offers the first provider of each backend, and the CPU."""
        self.providers = [PROVIDERS[b][0] for b in backends if b != "cpu"] + [
            "CPUExecutionProvider"
        ]
        return self

    def nvidia(self, *missing: str) -> Machine:
        """An NVIDIA GPU with its driver and every CUDA library except ``missing``."""
        self.vendors.add("NVIDIA")
        self.libraries |= NVIDIA_STACK - set(missing)
        if "nvidia-driver" not in missing:
            self.driver = "580.65.06"
            self.gpus = ["NVIDIA GeForce RTX 4090"]
        return self

    def lavapipe(self) -> Machine:
        """The dev/CI box: the WebGPU plugin registered, no device; wgpu sees llvmpipe only."""
        self.plugins = [WEBGPU_PLUGIN]
        self.adapters = [adapter(), adapter(backend="OpenGL")]
        return self

    def runtime(self) -> discovery.Runtime:
        return discovery.Runtime(
            version="1.32.0",
            distributions=list(self.distributions),
            build_info="ORT Build Info: test",
            providers=list(self.providers),
            devices=list(self.devices),
            plugins=list(self.plugins),
        )

    def find(self, name: str) -> libraries.Library:
        tried = libraries._LINUX.get(name, ())
        return libraries.Library(name, tried[0] if name in self.libraries else None, tried)

    def preload(self) -> str | None:
        self.preloads += 1
        return self.preload_error


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Machine:
    """A bare CPU machine (no GPU, no plugin) until the test adds to it."""
    fake = Machine()
    monkeypatch.setattr(discovery, "runtime", fake.runtime)
    monkeypatch.setattr(discovery, "adapters", lambda: (tuple(fake.adapters), fake.adapter_error))
    monkeypatch.setattr(discovery, "hardware_vendors", lambda: set(fake.vendors))
    monkeypatch.setattr(libraries, "find", fake.find)
    monkeypatch.setattr(libraries, "preload_onnxruntime_gpu", fake.preload)
    monkeypatch.setattr(libraries, "nvidia_driver_version", lambda: fake.driver)
    monkeypatch.setattr(libraries, "gpu_models", lambda: list(fake.gpus))
    return fake
