"""Elementwise fusion (``gpux/runtime/wgpu/fusion.py``) on small made-up models: chains run
as one kernel and equal ONNX Runtime CPU; a value something outside the chain reads (another
node, the caller) keeps its buffer; the placement proof still counts every node by op.
Skipped where wgpu sees no adapter (lavapipe counts here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpux.runtime.wgpu.backend import WgpuBackend
from tests.runtime.wgpu.graphs import load_checked, save_graph

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

SHAPE = [2, 8]


pytestmark = pytest.mark.usefixtures("software_adapter")


def _model(
    tmp_path: Path,
    nodes: list[Any],
    inputs: dict[str, int],
    outputs: dict[str, int],
    constants: dict[str, np.ndarray[Any, Any]],
) -> Path:
    return save_graph(
        tmp_path,
        nodes,
        [helper.make_tensor_value_info(n, t, SHAPE) for n, t in inputs.items()],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs.items()],
        constants,
    )


def _run_both(
    path: Path, feed: dict[str, np.ndarray[Any, Any]]
) -> tuple[WgpuBackend, list[dict[str, Any]]]:
    """Check the engine's outputs against ONNX Runtime CPU's; the backend and its profile
    (empty without timestamp queries)."""
    backend, expected = load_checked(path, feed, rtol=1e-5, atol=1e-6)
    try:
        times: list[dict[str, Any]] = []
        if "timestamp-query" in backend.executor.gpu.features:
            outputs, times = backend.executor.profile(feed)
            for name, value in expected.items():
                np.testing.assert_allclose(outputs[name], value, rtol=1e-5, atol=1e-6)
    except BaseException:
        backend.close()
        raise
    return backend, times


def _kernels(backend: WgpuBackend) -> list[str]:
    return [
        lowered.node.op_type
        for segment in backend.executor.partition.segments
        for lowered in segment.lowered
    ]


def test_a_chain_with_a_bias_a_scalar_and_a_value_read_twice_is_one_kernel(
    tmp_path: Path,
) -> None:
    """y = tanh((x + bias) * 0.5) * (x + bias) - x: the sum is read twice, both inside."""
    nodes = [
        helper.make_node("Add", ["x", "bias"], ["a"]),
        helper.make_node("Mul", ["a", "half"], ["b"]),
        helper.make_node("Tanh", ["b"], ["c"]),
        helper.make_node("Mul", ["c", "a"], ["d"]),
        helper.make_node("Sub", ["d", "x"], ["y"]),
    ]
    constants = {
        "bias": np.linspace(-1, 1, SHAPE[-1], dtype=np.float32),
        "half": np.array(0.5, dtype=np.float32),
    }
    path = _model(tmp_path, nodes, {"x": TensorProto.FLOAT}, {"y": TensorProto.FLOAT}, constants)
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    backend, times = _run_both(path, {"x": x})
    try:
        assert _kernels(backend) == ["Add+Mul+Tanh+Mul+Sub"]
        assert backend.placement.details["dispatches"] == 1
        assignment = backend.placement.details["assignment"]
        assert assignment["nodes_on_backend"] == assignment["nodes"] == 5
        # Only x, the bias and y have buffers: the scalar is a literal, a-d live in registers.
        assert set(backend.executor.memory.location) == {"x", "bias", "y"}
        if times:
            (entry,) = times
            assert entry["op"] == "Add+Mul+Tanh+Mul+Sub"
            assert len(entry["fused"]) == 5 and entry["dispatches"] == 1
    finally:
        backend.close()


def test_comparisons_not_where_and_cast_fuse_across_dtypes(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Equal", ["k", "three"], ["e"]),
        helper.make_node("Not", ["e"], ["n"]),
        helper.make_node("Greater", ["x", "zero"], ["g"]),
        helper.make_node("And", ["n", "g"], ["c"]),  # ORT folds a Not that feeds a Where
        helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
        helper.make_node("Where", ["c", "x", "kf"], ["w"]),
        helper.make_node("Add", ["w", "kf"], ["y"]),
    ]
    constants = {"three": np.array(3, dtype=np.int64), "zero": np.array(0.0, dtype=np.float32)}
    path = _model(
        tmp_path,
        nodes,
        {"x": TensorProto.FLOAT, "k": TensorProto.INT64},
        {"y": TensorProto.FLOAT},
        constants,
    )
    rng = np.random.default_rng(1)
    feed = {
        "x": rng.standard_normal(SHAPE).astype(np.float32),
        "k": rng.integers(0, 6, SHAPE).astype(np.int64),
    }
    backend, _ = _run_both(path, feed)
    try:
        (fused,) = _kernels(backend)
        assert sorted(fused.split("+")) == [
            "Add",
            "And",
            "Cast",
            "Equal",
            "Greater",
            "Not",
            "Where",
        ]
        assert backend.placement.details["dispatches"] == 1
    finally:
        backend.close()


def test_a_value_another_node_or_the_caller_reads_keeps_its_buffer(tmp_path: Path) -> None:
    """a feeds a MatMul as well as the chain; s is a graph output as well as read by it."""
    nodes = [
        helper.make_node("Add", ["x", "bias"], ["a"]),
        helper.make_node("MatMul", ["a", "w"], ["m"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Sigmoid", ["m"], ["s"]),
        helper.make_node("Mul", ["r", "s"], ["p"]),
        helper.make_node("Neg", ["p"], ["y"]),
    ]
    rng = np.random.default_rng(2)
    constants = {
        "bias": rng.standard_normal(SHAPE[-1:]).astype(np.float32),
        "w": rng.standard_normal([SHAPE[-1], SHAPE[-1]]).astype(np.float32),
    }
    path = _model(
        tmp_path,
        nodes,
        {"x": TensorProto.FLOAT},
        {"s": TensorProto.FLOAT, "y": TensorProto.FLOAT},
        constants,
    )
    backend, _ = _run_both(path, {"x": rng.standard_normal(SHAPE).astype(np.float32)})
    try:
        kernels = _kernels(backend)
        assert "Relu+Mul+Neg" in kernels, kernels
        # The Sigmoid is the MatMul's epilogue: its value s, the caller's, is still stored.
        assert "MatMul+Sigmoid" in kernels and "Add" in kernels, kernels
        location = backend.executor.memory.location
        assert {"a", "s", "y"} <= set(location)
        assert not {"r", "p"} & set(location)
    finally:
        backend.close()
