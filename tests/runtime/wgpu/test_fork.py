"""wgpu-native cannot run in a process forked after it started: the engine says so (use spawn)
instead of hanging or crashing the child, and the parent keeps working."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpux.config.schema import Runtime
from gpux.errors import BackendError
from gpux.runtime.wgpu.backend import WgpuBackend, shared_device
from gpux.runtime.wgpu.device import Gpu

onnx = pytest.importorskip("onnx")


@pytest.fixture(autouse=True)
def _software_adapter(monkeypatch: pytest.MonkeyPatch, gpu: Gpu) -> None:
    monkeypatch.setenv("GPUX_WGPU_ALLOW_SOFTWARE", "1")


def _model(folder: Path) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "double.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _use_in_child(backend: WgpuBackend, answers: Any) -> None:
    """In the forked child: a call on the inherited model, then a new load's device."""
    for attempt in (lambda: backend.run({"x": np.ones(4, np.float32)}), shared_device):
        try:
            attempt()
            answers.put("no error")
        except BackendError as exc:
            answers.put(f"{exc.message} | {exc.hint}")


def test_a_forked_child_gets_a_clear_error(tmp_path: Path) -> None:
    backend = WgpuBackend.load(_model(tmp_path), Runtime(backend="wgpu"))
    try:
        x = np.arange(4, dtype=np.float32)
        np.testing.assert_array_equal(backend.run({"x": x})["y"], x + x)
        context = multiprocessing.get_context("fork")
        answers = context.Queue()
        child = context.Process(target=_use_in_child, args=(backend, answers))
        child.start()
        got = [answers.get(timeout=60) for _ in range(2)]
        child.join(60)
        assert child.exitcode == 0
        for answer in got:
            assert "was forked from it: wgpu cannot run in a forked process" in answer
            assert "'spawn'" in answer
        np.testing.assert_array_equal(backend.run({"x": x})["y"], x + x)  # the parent still runs
    finally:
        backend.close()
