"""``runtime.device`` on the wgpu engine: an index among wgpu's adapters, best first (the order
``open_device`` ranks them in); a bad index is one error naming the adapters there are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpux.config.schema import Runtime
from gpux.errors import BackendError
from gpux.runtime.wgpu.backend import WgpuBackend
from gpux.runtime.wgpu.device import Gpu, adapter_rank, ranked_adapters

onnx = pytest.importorskip("onnx")
wgpu = pytest.importorskip("wgpu")


@pytest.fixture(autouse=True)
def _software_adapter(monkeypatch: pytest.MonkeyPatch, gpu: Gpu) -> None:
    monkeypatch.setenv("GPUX_WGPU_ALLOW_SOFTWARE", "1")


def _model(folder: Path) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "square.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _summary(adapter: object) -> str:
    info = adapter.info  # type: ignore[attr-defined]
    return f"{info['device']} ({info['backend_type']}, {info['adapter_type']})"


def test_adapters_are_ranked_best_first() -> None:
    assert adapter_rank("DiscreteGPU", "Vulkan") < adapter_rank("IntegratedGPU", "Vulkan")
    assert adapter_rank("IntegratedGPU", "Metal") < adapter_rank("IntegratedGPU", "OpenGL")
    assert adapter_rank("IntegratedGPU", "OpenGL") < adapter_rank("CPU", "Vulkan")
    ranked = ranked_adapters(wgpu.gpu.enumerate_adapters_sync(), allow_software=True)
    keys = [adapter_rank(str(a.info["adapter_type"]), str(a.info["backend_type"])) for a in ranked]
    assert keys == sorted(keys)


def test_runtime_device_picks_the_adapter_by_index(tmp_path: Path) -> None:
    ranked = ranked_adapters(wgpu.gpu.enumerate_adapters_sync(), allow_software=True)
    if len(ranked) < 2:
        pytest.skip("wgpu sees one adapter here")
    path = _model(tmp_path)
    for index in (0, len(ranked) - 1):
        backend = WgpuBackend.load(path, Runtime(backend="wgpu", device=index))
        try:
            assert backend.placement.device == _summary(ranked[index])
            x = np.arange(6, dtype=np.float32).reshape(2, 3)
            np.testing.assert_array_equal(backend.run({"x": x})["y"], x * x)
        finally:
            backend.close()


def test_a_bad_index_names_the_adapters_there_are(tmp_path: Path) -> None:
    ranked = ranked_adapters(wgpu.gpu.enumerate_adapters_sync(), allow_software=True)
    bad = len(ranked) + 3
    with pytest.raises(BackendError) as caught:
        WgpuBackend.load(_model(tmp_path), Runtime(backend="wgpu", device=bad))
    message = caught.value.message
    assert f"runtime.device {bad}: wgpu has no adapter {bad}" in message
    assert f"0: {_summary(ranked[0])}" in message
    assert f"0..{len(ranked) - 1}" in (caught.value.hint or "")
