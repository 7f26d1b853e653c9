"""Batch buckets on the wgpu engine: a call of any batch size runs on an executor built for one
of a few sizes (padded up, cut back), outputs equal ONNX Runtime CPU's, no padded row reaches
the caller, a batch past the largest bucket runs in chunks, and a model whose axis 0 is not one
batch keeps exact sizes. Skipped where wgpu sees no adapter (lavapipe counts here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpux.config.schema import Runtime
from gpux.runtime.sized_sessions import batch_sizes, powers_of_two
from gpux.runtime.wgpu.backend import WgpuBackend
from gpux.runtime.wgpu.buckets import Buckets, batch_symbol
from gpux.runtime.wgpu.device import Gpu

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

Array = np.ndarray[Any, Any]


@pytest.fixture(autouse=True)
def _software_adapter(monkeypatch: pytest.MonkeyPatch, gpu: Gpu) -> None:
    monkeypatch.setenv("GPUX_WGPU_ALLOW_SOFTWARE", "1")


def _model(tmp_path: Path, output_axis0: str = "batch") -> Path:
    """y = Softmax(x @ w + mask) over the last axis; x [batch, 8], mask [batch, 4]."""
    w = onnx.numpy_helper.from_array(
        np.random.default_rng(7).standard_normal((8, 4)).astype(np.float32), "w"
    )
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["scores"]),
        helper.make_node("Add", ["scores", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [output_axis0, 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "softmax.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _feed(rows: int) -> dict[str, Array]:
    rng = np.random.default_rng(rows)
    return {
        "x": rng.standard_normal((rows, 8)).astype(np.float32),
        "mask": rng.standard_normal((rows, 4)).astype(np.float32),
    }


def _reference(path: Path, feed: dict[str, Array]) -> Array:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["y"], feed)[0])


def _built_batches(backend: WgpuBackend) -> list[int]:
    return [shapes["x"][0] for shapes in backend.built_shapes]


def test_sizes_come_from_the_gpuxfile_or_powers_of_two() -> None:
    assert powers_of_two(24) == (1, 2, 4, 8, 16) and powers_of_two(0) == ()
    assert batch_sizes(None, 24) == (1, 2, 4, 8, 16, 24)
    assert batch_sizes(None, 1) == (1,)
    assert batch_sizes([8, 1, 64], 32) == (1, 8)
    assert batch_sizes([], 32) == ()


def test_buckets_pick_the_smallest_that_holds_and_chunk_past_the_largest() -> None:
    buckets = Buckets.of([8, 2, 2, 0, 4])
    assert buckets is not None and buckets.sizes == (2, 4, 8)
    assert [buckets.bucket(n) for n in (1, 2, 3, 5, 8)] == [2, 2, 4, 8, 8]
    assert buckets.chunks(5) == [(0, 5)]
    assert buckets.chunks(19) == [(0, 8), (8, 16), (16, 19)]
    assert Buckets.of([]) is None


def test_the_batch_is_one_symbol_on_every_input_and_output(tmp_path: Path) -> None:
    model = onnx.load(str(_model(tmp_path)))
    assert batch_symbol(model, {}) == "batch"
    assert batch_symbol(model, {"batch": 2}) is None  # the GPUXfile fixed it: nothing varies
    other = onnx.load(str(_model(tmp_path, output_axis0="rows")))
    assert batch_symbol(other, {}) is None


def test_calls_pad_to_buckets_and_equal_onnx_runtime(tmp_path: Path) -> None:
    path = _model(tmp_path)
    backend = WgpuBackend.load(path, Runtime(backend="wgpu"))  # batch open: 1 at load
    try:
        backend.use_batch_buckets((1, 4, 8))
        assert backend.placement.details["batch_buckets"] == [1, 4, 8]
        for rows in (1, 3, 5, 2, 7, 4, 8, 3):
            feed = _feed(rows)
            y = backend.run(feed)["y"]
            assert y.shape == (rows, 4)
            np.testing.assert_allclose(y, _reference(path, feed), rtol=1e-5, atol=1e-6)
            # No padded row is reachable through the array (a view would keep them in .base).
            assert (y if y.base is None else y.base).size == y.size
        assert sorted(_built_batches(backend)) == [1, 4, 8]  # buckets, not one per size
    finally:
        backend.close()


def test_a_batch_past_the_largest_bucket_runs_in_chunks(tmp_path: Path) -> None:
    path = _model(tmp_path)
    backend = WgpuBackend.load(path, Runtime(backend="wgpu"))
    try:
        backend.use_batch_buckets((2, 4))
        feed = _feed(11)  # 4 + 4 + 3 (padded to 4)
        y = backend.run(feed)["y"]
        assert y.shape == (11, 4)
        np.testing.assert_allclose(y, _reference(path, feed), rtol=1e-5, atol=1e-6)
        assert sorted(_built_batches(backend)) == [1, 4]  # the loaded one, and bucket 4
    finally:
        backend.close()


def test_without_one_batch_symbol_sizes_stay_exact(tmp_path: Path) -> None:
    path = _model(tmp_path, output_axis0="rows")
    backend = WgpuBackend.load(path, Runtime(backend="wgpu"))
    try:
        backend.use_batch_buckets((4, 8))
        assert "batch_buckets" not in backend.placement.details
        feed = _feed(3)
        np.testing.assert_allclose(
            backend.run(feed)["y"], _reference(path, feed), rtol=1e-5, atol=1e-6
        )
        assert _built_batches(backend) == [1, 3]
    finally:
        backend.close()


def test_the_buckets_share_one_copy_of_the_weights(tmp_path: Path) -> None:
    path = _model(tmp_path)
    backend = WgpuBackend.load(path, Runtime(backend="wgpu"))
    try:
        executors = [backend.executor_for(_feed(rows)) for rows in (1, 4)]
        weights = set(executors[0].graph.constants) & set(executors[1].graph.constants)
        assert weights
        for name in weights:
            first, second = (e.buffers[e.memory.location[name]] for e in executors)
            assert first is second
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("serving", "buckets"),
    [
        ("", [1]),  # nothing declared: max_batch_size 1
        ("serving:\n  max_batch_size: 6\n", [1, 2, 4, 6]),
        ("serving:\n  max_batch_size: 8\n  preferred_batch_sizes: [2, 8]\n", [2, 8]),
    ],
)
def test_an_image_gets_its_gpuxfiles_sizes_as_buckets(
    tmp_path: Path, gpux_home: Path, serving: str, buckets: list[int]
) -> None:
    import gpux
    from gpux.api import load_image
    from tests import generated_models

    folder = tmp_path / "p"
    folder.mkdir()
    generated_models.linear(folder / "linear.onnx")
    (folder / "GPUXfile").write_text(f"name: lin\nmodel: ./linear.onnx\n{serving}")
    image = gpux.build(str(folder), backend="cpu").image
    model = load_image(image, "wgpu", warmup=False)
    cpu = load_image(image, "cpu", warmup=False)
    try:
        assert model.placement.details["batch_buckets"] == buckets
        x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
        np.testing.assert_allclose(
            model.run({"x": x})["y"], cpu.run({"x": x})["y"], rtol=1e-5, atol=1e-6
        )
    finally:
        model.close()
        cpu.close()
