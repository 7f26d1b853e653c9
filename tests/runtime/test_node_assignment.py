"""Which nodes each execution provider received: the proof of where a model really runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from gpux.config.schema import GraphOptimization, Runtime
from gpux.runtime.onnxruntime_backend import node_assignment, session_options
from tests import generated_models

CPU = "CPUExecutionProvider"


def conv_net(path: Path) -> Path:
    """x[1, 1, 4, 4] -> Conv(2 filters, 3x3) -> Relu -> Flatten -> MatMul -> y[1, 3]."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "K"], ["c"]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Flatten", ["r"], ["f"]),
            helper.make_node("MatMul", ["f", "W"], ["y"]),
        ],
        "conv_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [
            numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "K"),
            numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "W"),
        ],
    )
    model = helper.make_model(graph, opset_imports=generated_models.OPSET)
    onnx.save(model, str(path))
    return path


def cpu_session(path: Path, level: str = "disable") -> Any:
    runtime = Runtime(graph_optimization=GraphOptimization(level))
    return ort.InferenceSession(str(path), sess_options=session_options(runtime), providers=[CPU])


def test_a_cpu_session_reports_every_node_on_the_cpu(tmp_path: Path) -> None:
    session = cpu_session(conv_net(tmp_path / "conv.onnx"))
    assert node_assignment(session, CPU) == {
        "known": True,
        "nodes": 4,
        "nodes_on_backend": 4,
        "share": 1.0,
        "compute_nodes": 2,  # Conv and MatMul carry the arithmetic; Relu and Flatten do not
        "compute_share": 1.0,
        "by_provider": {CPU: 4},
        "elsewhere": {},
    }


def test_the_share_of_a_provider_that_got_nothing_lists_where_nodes_went(tmp_path: Path) -> None:
    session = cpu_session(conv_net(tmp_path / "conv.onnx"))
    assignment = node_assignment(session, "CUDAExecutionProvider")
    assert assignment["known"] is True
    assert assignment["nodes_on_backend"] == 0
    assert assignment["share"] == 0.0
    assert assignment["compute_share"] == 0.0
    assert assignment["elsewhere"] == {
        f"Conv@{CPU}": 1,
        f"Relu@{CPU}": 1,
        f"Flatten@{CPU}": 1,
        f"MatMul@{CPU}": 1,
    }


def test_fused_nodes_still_count_as_compute(tmp_path: Path) -> None:
    # With every optimisation on, Conv+Relu fuse and MatMul+Add become Gemm or FusedMatMul.
    for path in (conv_net(tmp_path / "conv.onnx"), generated_models.linear(tmp_path / "lin.onnx")):
        assignment = node_assignment(cpu_session(path, "all"), CPU)
        assert assignment["known"] and assignment["share"] == 1.0
        assert assignment["nodes"] >= 1
        assert assignment["compute_nodes"] >= 1
        assert assignment["compute_share"] == 1.0


def test_without_the_recording_entry_onnx_runtime_refuses_and_says_why(tmp_path: Path) -> None:
    session = ort.InferenceSession(
        str(generated_models.linear(tmp_path / "lin.onnx")), providers=[CPU]
    )
    assignment = node_assignment(session, CPU)
    assert assignment["known"] is False
    assert "session.record_ep_graph_assignment_info" in assignment["why"]
    assert not assignment["why"].startswith("[ONNXRuntimeError]")


def test_an_older_onnx_runtime_cannot_report_placement() -> None:
    old_session = SimpleNamespace(get_providers=lambda: [CPU])
    assert node_assignment(old_session, CPU) == {
        "known": False,
        "why": "this ONNX Runtime cannot report node placement",
    }


def test_a_failing_report_gives_its_first_line() -> None:
    def fail() -> list[Any]:
        raise RuntimeError("[ONNXRuntimeError] : placement unavailable\nsecond line")

    session = SimpleNamespace(get_provider_graph_assignment_info=fail)
    assert node_assignment(session, CPU) == {"known": False, "why": "placement unavailable"}


def _subgraph(ep: str, *ops: str) -> SimpleNamespace:
    nodes = [SimpleNamespace(op_type=op) for op in ops]
    return SimpleNamespace(ep_name=ep, get_nodes=lambda: nodes)


@pytest.mark.parametrize(
    ("subgraphs", "expected"),
    [
        (
            [
                _subgraph("CUDAExecutionProvider", "Conv", "Relu", "MatMul"),
                _subgraph(CPU, "Shape", "Gather"),
            ],
            {"nodes": 5, "nodes_on_backend": 3, "share": 0.6, "compute_share": 1.0},
        ),
        (
            [
                _subgraph("CUDAExecutionProvider", "Conv", "Relu"),
                _subgraph(CPU, "MatMul", "NonZero"),
                _subgraph("CUDAExecutionProvider", "Add"),
            ],
            {"nodes": 5, "nodes_on_backend": 3, "share": 0.6, "compute_share": 0.5},
        ),
        (
            [_subgraph("CUDAExecutionProvider", "Add", "Relu")],
            {"nodes": 2, "nodes_on_backend": 2, "share": 1.0, "compute_share": None},
        ),
        ([], {"nodes": 0, "nodes_on_backend": 0, "share": 0.0, "compute_share": None}),
    ],
    ids=["cpu helpers", "compute split", "no compute ops", "empty"],
)
def test_mixed_placement(subgraphs: list[SimpleNamespace], expected: dict[str, Any]) -> None:
    session = SimpleNamespace(get_provider_graph_assignment_info=lambda: subgraphs)
    assignment = node_assignment(session, "CUDAExecutionProvider")
    assert assignment["known"] is True
    assert {key: assignment[key] for key in expected} == expected


def test_elsewhere_keeps_the_ten_most_common() -> None:
    ops = [f"Op{i}" for i in range(12) for _ in range(i + 1)]
    session = SimpleNamespace(
        get_provider_graph_assignment_info=lambda: [
            _subgraph(CPU, *ops),
            _subgraph("WebGpuExecutionProvider", "MatMul"),
        ]
    )
    elsewhere = node_assignment(session, "WebGpuExecutionProvider")["elsewhere"]
    assert list(elsewhere) == [f"Op{i}@{CPU}" for i in range(11, 1, -1)]
    assert elsewhere[f"Op11@{CPU}"] == 12
