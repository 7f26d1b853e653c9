"""Small ONNX models built in memory with onnx.helper: symbolic shapes, many dtypes, and broken
models for error paths. Weights are fixed so results are checkable by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]
# onnx writes its newest IR version (14 from onnx 1.23), which onnxruntime-gpu 1.31 refuses
# ("max supported IR version: 13"): the models are saved with one every build we allow reads.
IR_VERSION = 10

LINEAR_W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
LINEAR_B = np.array([1.0, -1.0, 0.5], dtype=np.float32)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    model.ir_version = min(model.ir_version, IR_VERSION)
    onnx.save(model, str(path))
    return path


def linear(path: Path) -> Path:
    """y[batch, 3] = x[batch, 4] @ W + b."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(LINEAR_W, "W"), numpy_helper.from_array(LINEAR_B, "b")],
    )
    return _save(helper.make_model(graph, opset_imports=OPSET, producer_name="gpux-tests"), path)


def two_inputs(path: Path) -> Path:
    """sum[batch, seq] = a[batch, seq] (int64) + b[batch, seq] (int64); also a float mean."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Cast", ["sum"], ["sum_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["sum_f"], ["mean"], keepdims=0),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", "seq"]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("mean", TensorProto.FLOAT, []),
        ],
    )
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


def invalid_graph(path: Path) -> Path:
    """A node reads a tensor nobody produces: onnx.checker rejects it."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["missing"], ["y"])],
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=OPSET)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def corrupt(path: Path) -> Path:
    """Not a protobuf at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x01this is not an onnx model" * 10)
    return path


def big(path: Path, megabytes: int = 64) -> Path:
    """y = x + C with a large constant: slow enough to write that a build can be killed mid-write."""
    count = megabytes * (1 << 20) // 4
    constant = np.random.default_rng(0).standard_normal(count).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "C"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [count])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [count])],
        [numpy_helper.from_array(constant, "C")],
    )
    return _save(helper.make_model(graph, opset_imports=OPSET), path)
