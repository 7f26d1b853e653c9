"""One wgpu device for the engine's tests: lavapipe on CI, any adapter elsewhere. Tests that
need it skip with the reason when wgpu is missing or sees no adapter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gpux.errors import BackendError
from gpux.runtime.wgpu.device import Gpu, open_device


@pytest.fixture(scope="session")
def gpu() -> Iterator[Gpu]:
    try:
        opened = open_device(allow_software=True)
    except BackendError as exc:
        pytest.skip(f"no wgpu device: {exc.message}")
    yield opened


@pytest.fixture
def software_adapter(monkeypatch: pytest.MonkeyPatch, gpu: Gpu) -> None:
    """Let ``WgpuBackend.load`` take the device these tests have (lavapipe on CI), which
    ``auto`` never picks."""
    monkeypatch.setenv("GPUX_WGPU_ALLOW_SOFTWARE", "1")
