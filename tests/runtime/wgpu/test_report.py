"""``gpux doctor``'s word on the wgpu engine: the ops it claims and the adapter it would use."""

from __future__ import annotations

import pytest

from gpux.runtime import discovery
from gpux.runtime.wgpu.report import adapter_choice, engine_report


def _adapter(name: str, kind: str, backend: str = "Vulkan") -> discovery.Adapter:
    return discovery.Adapter(name, "Vendor", 1, kind, backend, "")


LAVAPIPE = _adapter("llvmpipe", "CPU")
IGPU = _adapter("Intel UHD", "IntegratedGPU")
GL_DGPU = _adapter("RTX (GL)", "DiscreteGPU", "OpenGL")
DGPU = _adapter("RTX", "DiscreteGPU")


def test_a_discrete_gpu_on_a_native_api_comes_first_and_software_never_unless_allowed() -> None:
    assert adapter_choice([LAVAPIPE, IGPU, GL_DGPU, DGPU], allow_software=False) == DGPU
    assert adapter_choice([LAVAPIPE, IGPU], allow_software=False) == IGPU
    assert adapter_choice([LAVAPIPE], allow_software=False) is None
    assert adapter_choice([LAVAPIPE], allow_software=True) == LAVAPIPE


def test_the_report_lists_claimed_ops_and_why_no_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPUX_WGPU_ALLOW_SOFTWARE", raising=False)
    report = engine_report([LAVAPIPE, LAVAPIPE])
    assert "Add" in report["claimed_ops"] and report["claimed_ops"] == sorted(report["claimed_ops"])
    assert report["adapter"] is None
    assert report["why"].startswith("only software adapters (llvmpipe)")
    assert "GPUX_WGPU_ALLOW_SOFTWARE=1" in report["why"]
    monkeypatch.setenv("GPUX_WGPU_ALLOW_SOFTWARE", "1")
    assert engine_report([LAVAPIPE])["adapter"]["name"] == "llvmpipe"
