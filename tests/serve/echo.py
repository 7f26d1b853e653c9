"""``echo:1`` (y = x, float32 [n]) built into a store of its own, for tests of the request path
that need a real served model and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from gpux.serve.app import ServedModel
from gpux.serve.load import load_served
from gpux.store import Store
from tests import generated_models
from tests.cli.expect import BoundCLI


def echo_models(root: Path) -> Callable[[], list[ServedModel]]:
    """Build ``echo:1`` under ``root``; the loader returned loads it anew for each app: a
    model's batchers belong to the event loop of the app that made them, and each TestClient
    runs its own."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "echo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    (root / "echo").mkdir()
    onnx.save(helper.make_model(graph, opset_imports=generated_models.OPSET), root / "echo/e.onnx")
    (root / "echo/GPUXfile").write_text("name: echo\nversion: '1'\nmodel: ./e.onnx\n")
    BoundCLI(root / "home").ok("build", str(root / "echo"), "-q")
    return lambda: load_served(["echo:1"], "cpu", store=Store(root / "home"))
