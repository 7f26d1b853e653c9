"""``gpux run --backend wgpu`` end to end: the engine behind the CLI, its placement in the JSON
answer, and the refusal of a software adapter that was not allowed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpux.runtime.wgpu.device import Gpu
from tests.conftest import CLI

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _model(folder: Path) -> Path:
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Mul", ["x", "x"], ["squared"]),
        helper.make_node("Add", ["squared", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "square_plus.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_run_on_the_wgpu_backend(cli: CLI, gpu: Gpu, tmp_path: Path) -> None:
    path = _model(tmp_path)
    values = [[0.5, -1.0, 2.0, 3.0]]
    result = cli(
        "run", str(path), "--backend", "wgpu", "--json", "-i", f"x={values}",
        env={"GPUX_WGPU_ALLOW_SOFTWARE": "1"},
    )  # fmt: skip
    assert result.code == 0, result.output
    answer = result.json()
    assert isinstance(answer, dict) and answer["backend"] == "wgpu"
    x = np.array(values, dtype=np.float32)
    np.testing.assert_allclose(answer["outputs"]["y"]["data"], x * x + x, rtol=1e-6)


def test_a_software_adapter_not_allowed_is_exit_7_naming_the_switch(
    cli: CLI, gpu: Gpu, tmp_path: Path
) -> None:
    if not gpu.is_software:
        pytest.skip("this machine has a real GPU")
    result = cli(
        "run", str(_model(tmp_path)), "--backend", "wgpu", "-i", "x=[[1, 2, 3, 4]]",
        env={"GPUX_WGPU_ALLOW_SOFTWARE": ""},
    )  # fmt: skip
    assert result.code == 7, result.output
    assert "backend 'wgpu' cannot start" in result.stderr
    assert "GPUX_WGPU_ALLOW_SOFTWARE=1" in result.stderr
