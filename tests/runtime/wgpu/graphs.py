"""Small ONNX graphs for the engine's tests, and the engine loaded on one of them with its
outputs checked against ONNX Runtime CPU's (test_fusion.py, test_epilogue.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gpux.config.schema import Runtime
from gpux.runtime.wgpu.backend import WgpuBackend


def save_graph(
    folder: Path,
    nodes: list[Any],
    inputs: list[Any],
    outputs: list[Any],
    constants: dict[str, np.ndarray[Any, Any]],
) -> Path:
    """``folder/model.onnx``: ``nodes`` between the value infos ``inputs`` and ``outputs``."""
    from onnx import helper, numpy_helper

    graph = helper.make_graph(
        nodes, "g", inputs, outputs, [numpy_helper.from_array(v, n) for n, v in constants.items()]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def load_checked(
    path: Path, feed: dict[str, np.ndarray[Any, Any]], rtol: float, atol: float
) -> tuple[WgpuBackend, dict[str, np.ndarray[Any, Any]]]:
    """The engine on ``path``, after its outputs for ``feed`` equalled ONNX Runtime CPU's
    (returned too); closed again if they did not."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(None, feed), strict=True))
    backend = WgpuBackend.load(path, Runtime(backend="wgpu"), dimensions={})
    try:
        produced = backend.run(feed)
        for name, value in expected.items():
            np.testing.assert_allclose(produced[name], value, rtol=rtol, atol=atol, err_msg=name)
    except BaseException:
        backend.close()
        raise
    return backend, expected


def checked_kernels(
    path: Path, feed: dict[str, np.ndarray[Any, Any]], rtol: float = 1e-5, atol: float = 1e-5
) -> list[str]:
    """The engine's kernels for ``path`` by op (views, which dispatch nothing, left out), after
    checking its outputs against ONNX Runtime CPU's and that the proof counts every node on
    the engine."""
    backend, _ = load_checked(path, feed, rtol, atol)
    try:
        assignment = backend.placement.details["assignment"]
        assert assignment["nodes_on_backend"] == assignment["nodes"]
        return [
            lowered.node.op_type
            for segment in backend.executor.partition.segments
            for lowered in segment.lowered
            if lowered.lowering.dispatches
        ]
    finally:
        backend.close()
