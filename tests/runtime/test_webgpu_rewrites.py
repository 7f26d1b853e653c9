"""The WebGPU rewrite of IsNaN into Not(Equal(x, x)): same answers on every float, including NaN
and infinities, made once per model file, and never a write without a cache folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from gpux.runtime.webgpu_rewrites import webgpu_model


def masked_softmax_model(path: Path, external: bool = False) -> Path:
    """Softmax, then NaN rows zeroed as transformers' SDPA export does: Where(IsNaN(p), 0, p)."""
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    weight = onnx.numpy_helper.from_array(
        np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4), "weight"
    )
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "weight"], ["scores"]),
            helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
            helper.make_node("IsNaN", ["p"], ["nan"], name="layer0/IsNaN"),
            helper.make_node("Where", ["nan", "zero", "p"], ["y"]),
            helper.make_node("IsNaN", ["x"], ["x_nan"]),
        ],
        "masked",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4]),
            helper.make_tensor_value_info("x_nan", TensorProto.BOOL, [2, 4]),
        ],
        [zero, weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path), save_as_external_data=external, size_threshold=0)
    return path


def run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return list(session.run(None, {"x": x}))


@pytest.mark.parametrize("external", [False, True])
def test_isnan_becomes_not_equal_with_the_same_answers(tmp_path: Path, external: bool) -> None:
    source = masked_softmax_model(tmp_path / "m.onnx", external)
    rewritten, rewrites = webgpu_model(source, tmp_path / "cache")
    assert rewrites == {"IsNaN -> Not(Equal(x, x))": 2}
    assert isinstance(rewritten, Path)
    assert rewritten != source and rewritten.is_relative_to(tmp_path / "cache")
    ops = [n.op_type for n in onnx.load(str(rewritten)).graph.node]
    assert "IsNaN" not in ops and ops.count("Equal") == 2 and ops.count("Not") == 2
    x = np.array([[np.nan, 1, 2, 3], [np.inf, -np.inf, 0, -5]], dtype=np.float32)
    for want, got in zip(run(source, x), run(rewritten, x), strict=True):
        np.testing.assert_array_equal(got, want)
    assert run(rewritten, x)[1].tolist() == [[True] + [False] * 3, [False] * 4]


def test_the_rewrite_is_made_once_and_models_without_isnan_stay(tmp_path: Path) -> None:
    source = masked_softmax_model(tmp_path / "m.onnx")
    first, _ = webgpu_model(source, tmp_path / "cache")
    assert isinstance(first, Path)
    made = first.stat().st_mtime_ns
    again, rewrites = webgpu_model(source, tmp_path / "cache")
    assert isinstance(again, Path)
    assert again == first and again.stat().st_mtime_ns == made and rewrites
    plain = tmp_path / "plain.onnx"
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    onnx.save(helper.make_model(graph), str(plain))
    assert webgpu_model(plain, tmp_path / "cache") == (plain, {})
    assert webgpu_model(plain, tmp_path / "cache") == (plain, {})  # from the recorded verdict
    assert not list((tmp_path / "cache").rglob(".partial-*"))


def test_without_a_cache_folder_the_rewrite_is_made_in_memory_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    source = masked_softmax_model(tmp_path / "m.onnx")
    before = sorted(tmp_path.rglob("*"))
    rewritten, rewrites = webgpu_model(source, None)
    assert isinstance(rewritten, bytes) and rewrites == {"IsNaN -> Not(Equal(x, x))": 2}
    assert sorted(tmp_path.rglob("*")) == before
    x = np.array([[np.nan, 1, 2, 3], [np.inf, -np.inf, 0, -5]], dtype=np.float32)
    session = ort.InferenceSession(rewritten, providers=["CPUExecutionProvider"])
    for want, got in zip(run(source, x), session.run(None, {"x": x}), strict=True):
        np.testing.assert_array_equal(got, want)
    # Weights beside the file: the EP must read the file itself, left as it is.
    (tmp_path / "beside").mkdir()
    beside = masked_softmax_model(tmp_path / "beside" / "m.onnx", external=True)
    assert webgpu_model(beside, None) == (beside, {})
