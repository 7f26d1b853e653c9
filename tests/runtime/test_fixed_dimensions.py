"""Sizes the GPUXfile fixes reach ONNX Runtime; a missing ONNX Runtime is a clear error."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

import gpux.api
from gpux.builder.signature import fixed_dimensions
from gpux.config.schema import TensorSpec
from gpux.errors import BackendError
from gpux.runtime import engines
from gpux.runtime.tensors import TensorSignature
from gpux.store import Store


def test_declared_sizes_become_fixed_dimensions() -> None:
    model = [
        TensorSignature("x", "float32", ["batch", 4]),
        TensorSignature("m", "int64", ["batch", "seq"]),
    ]
    declared = [TensorSpec(name="x", shape=[1, 4]), TensorSpec(name="m", shape=[1, "seq"])]
    assert fixed_dimensions(declared, model) == {"batch": 1}
    # One symbol fixed to two sizes cannot be told to ONNX Runtime: left out.
    clash = [TensorSpec(name="x", shape=[1, 4]), TensorSpec(name="m", shape=[2, "seq"])]
    assert fixed_dimensions(clash, model) == {}
    assert fixed_dimensions(None, model) == {}


def test_onnx_runtime_sees_the_fixed_sizes(
    gpux_home: Path, add_project: Callable[..., Path], symbolic_model: Path
) -> None:
    gpuxfile = "model: ./linear.onnx\ninputs:\n  - name: x\n    shape: [2, 4]\n"
    image = gpux.api.build(add_project("fixed", symbolic_model, gpuxfile)).image
    assert image.config["model"]["fixed_dimensions"] == {"batch": 2}
    with gpux.api.load("fixed", warmup=False) as model:
        session = model.backend.session  # type: ignore[attr-defined]
        assert session.get_inputs()[0].shape == [2, 4]
        assert model.run({"x": [[1, 2, 3, 4], [0, 0, 0, 0]]})["y"].shape == (2, 3)
    assert Store().check() == []


def test_no_onnx_runtime_installed_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxruntime" else real(name, *a),
    )
    with pytest.raises(BackendError) as info:
        engines.engine()
    assert info.value.message == "ONNX Runtime is not installed"
    assert info.value.hint and "gpux[cpu]" in info.value.hint and "gpux[cuda]" in info.value.hint
