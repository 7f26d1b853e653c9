"""The wgpu engine end to end on small made-up models: outputs equal ONNX Runtime CPU's, the
split between wgpu and the CPU is reported by op, a model with no node the engine takes is
refused naming its ops, and inputs the device cannot hold are refused as the caller's fault.
Skipped where wgpu sees no adapter (lavapipe counts here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpux.config.schema import Runtime
from gpux.errors import BackendError, InputError
from gpux.runtime.wgpu import kernel
from gpux.runtime.wgpu.backend import WgpuBackend
from gpux.runtime.wgpu.device import Gpu
from gpux.runtime.wgpu.partition import register_kernels

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

# Ops no kernel is expected to take: the first one unclaimed stands for "an op the engine lacks".
RARE_OPS = ("Hardmax", "Det", "Einsum", "CumSum")


@pytest.fixture(autouse=True)
def _software_adapter(monkeypatch: pytest.MonkeyPatch, gpu: Gpu) -> None:
    """lavapipe is a software adapter: the engine takes it only when told (as on CI)."""
    monkeypatch.setenv("GPUX_WGPU_ALLOW_SOFTWARE", "1")


def _unclaimed_op() -> str:
    register_kernels()
    claimed = set(kernel.claimed_ops())
    for op in RARE_OPS:
        if op not in claimed:
            return op
    pytest.skip("every rare op has a kernel now; pick another for this test")


def _save(
    tmp_path: Path, nodes: list[Any], inputs: list[Any], outputs: list[Any], **kw: Any
) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, kw.get("initializers", []))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _reference(path: Path, feed: dict[str, np.ndarray[Any, Any]]) -> list[Any]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return list(session.run(None, feed))


def _split_model(tmp_path: Path) -> Path:
    """x -> Add(w) -> Mul(self) -> <op no kernel takes> -> Add(prev) -> Sub(x) -> y."""
    rare = _unclaimed_op()
    w = onnx.numpy_helper.from_array(np.linspace(-1, 1, 8, dtype=np.float32), "w")
    if rare == "Det":
        pytest.skip("Det needs square matrices; extend the test for it")
    rare_node = helper.make_node(rare, ["b", "axis"] if rare == "CumSum" else ["b"], ["c"])
    nodes = [
        helper.make_node("Add", ["x", "w"], ["a"]),
        helper.make_node("Mul", ["a", "a"], ["b"]),
        rare_node,
        helper.make_node("Add", ["c", "b"], ["d"]),
        helper.make_node("Sub", ["d", "x"], ["y"]),
    ]
    initializers = [w]
    if rare == "CumSum":
        initializers.append(onnx.numpy_helper.from_array(np.array(1, dtype=np.int64), "axis"))
    return _save(
        tmp_path,
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        initializers=initializers,
    )


def test_an_op_without_kernel_runs_on_the_cpu_and_the_split_is_reported(tmp_path: Path) -> None:
    path = _split_model(tmp_path)
    backend = WgpuBackend.load(path, Runtime(backend="wgpu"), dimensions={"batch": 2})
    try:
        feed = {"x": np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)}
        np.testing.assert_allclose(backend.run(feed)["y"], _reference(path, feed)[0], rtol=1e-5)
        placement = backend.placement
        assert placement.backend == "wgpu" and placement.requested == "wgpu"
        assert placement.providers == ["wgpu", "CPUExecutionProvider"]
        assignment = placement.details["assignment"]
        rare = _unclaimed_op()
        assert assignment["nodes"] == 5 and assignment["nodes_on_backend"] == 4
        assert assignment["elsewhere"] == {f"{rare}@CPUExecutionProvider": 1}
        assert "no kernel" in assignment["why_elsewhere"][rare]
        assert [s["on"] for s in assignment["segments"]] == [
            "wgpu",
            "CPUExecutionProvider",
            "wgpu",
        ]
        assert placement.details["submits_per_call"] == 2
        assert placement.details["adapter"]["backend"]  # Vulkan, Metal, D3D12 ...
        assert placement.details["adapter"]["name"] in placement.device
    finally:
        backend.close()


def test_other_input_sizes_get_their_own_plan(tmp_path: Path) -> None:
    path = _split_model(tmp_path)
    backend = WgpuBackend.load(path, Runtime(backend="wgpu"))  # batch left open: 1 at load
    try:
        assert backend.placement.details["sizes_per_call"] == ["batch"]
        for rows in (1, 3, 1):
            feed = {"x": np.random.default_rng(rows).standard_normal((rows, 8)).astype(np.float32)}
            result = backend.run(feed)["y"]
            assert result.shape == (rows, 8)
            np.testing.assert_allclose(result, _reference(path, feed)[0], rtol=1e-5)
    finally:
        backend.close()


def _upsampled_concat(tmp_path: Path, stride: int) -> Path:
    """x [1, 2, height, width] -> MaxPool (stride) -> Resize (x stride) -> Concat with x: a YOLO
    neck's pattern, which runs only where ``stride`` divides the image's sides."""
    scales = onnx.numpy_helper.from_array(np.array([1, 1, stride, stride], np.float32), "scales")
    return _save(
        tmp_path,
        [
            helper.make_node(
                "MaxPool", ["x"], ["pooled"], kernel_shape=[1, 1], strides=[stride, stride]
            ),
            helper.make_node("Resize", ["pooled", "", "scales"], ["upsampled"], mode="nearest"),
            helper.make_node("Concat", ["x", "upsampled"], ["y"], axis=1),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, "height", "width"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "height", "width"])],
        initializers=[scales],
    )


def test_open_sizes_the_model_cannot_run_at_as_1_are_planned_at_32(tmp_path: Path) -> None:
    """At 1x1 the upsampled map is 2x2 beside a 1x1 one: the load plan must not be made there
    (it failed with ONNX Runtime's shape error from the CPU fallback of the Concat)."""
    path = _upsampled_concat(tmp_path, stride=2)
    backend = WgpuBackend.load(path, Runtime(backend="wgpu"))
    try:
        assert backend.placement.details["sizes_per_call"] == ["height", "width"]
        assert backend.placement.details["input_shapes"] == {"x": [1, 2, 32, 32]}
        feed = {"x": np.random.default_rng(0).standard_normal((1, 2, 16, 24)).astype(np.float32)}
        np.testing.assert_array_equal(backend.run(feed)["y"], _reference(path, feed)[0])
    finally:
        backend.close()


def test_open_sizes_no_stand_in_fits_are_named_in_the_refusal(tmp_path: Path) -> None:
    path = _upsampled_concat(tmp_path, stride=64)
    with pytest.raises(BackendError) as caught:
        WgpuBackend.load(path, Runtime(backend="wgpu"))
    assert "stand-in sizes for the axes it leaves open (height, width)" in caught.value.message
    assert "x 1x2x1x1 or x 1x2x32x32" in caught.value.message
    assert "shapes disagree at x 1x2x32x32: a node (Concat)" in caught.value.message
    assert "ONNXRuntimeError" not in caught.value.message
    assert "dimensions={'height': N, 'width': N}" in (caught.value.hint or "")
    backend = WgpuBackend.load(
        path, Runtime(backend="wgpu"), dimensions={"height": 128, "width": 64}
    )
    try:
        feed = {"x": np.random.default_rng(1).standard_normal((1, 2, 128, 64)).astype(np.float32)}
        np.testing.assert_array_equal(backend.run(feed)["y"], _reference(path, feed)[0])
    finally:
        backend.close()


def test_sizes_the_model_cannot_take_are_named_with_the_node_where_shapes_disagree(
    tmp_path: Path,
) -> None:
    """A side of 5 pools to 3 and upsamples to 6 beside the 5: at load that is the model's
    sizes' fault (BackendError), in a call the caller's (InputError); neither is ONNX Runtime's
    raw shape error from the CPU fallback."""
    path = _upsampled_concat(tmp_path, stride=2)
    with pytest.raises(BackendError) as at_load:
        WgpuBackend.load(path, Runtime(backend="wgpu"), dimensions={"height": 5, "width": 8})
    assert at_load.value.message.startswith("the model's shapes disagree at x 1x2x5x8: ")
    assert "(Concat)" in at_load.value.message
    backend = WgpuBackend.load(path, Runtime(backend="wgpu"))
    try:
        with pytest.raises(InputError) as in_call:
            backend.run({"x": np.zeros((1, 2, 5, 8), np.float32)})
        assert "shapes disagree at x 1x2x5x8" in in_call.value.message
        assert "ONNXRuntimeError" not in in_call.value.message
        feed = {"x": np.ones((1, 2, 6, 8), np.float32)}
        np.testing.assert_array_equal(backend.run(feed)["y"], _reference(path, feed)[0])
    finally:
        backend.close()


def test_an_axis_declared_minus_1_is_open(tmp_path: Path) -> None:
    """Paddle's exports (ppocr's direction classifier) write -1 for an open axis; it was taken
    as a fixed size and refused with a hint to pass dimensions={'axis 0': N}, which no model
    can name."""
    path = _save(
        tmp_path,
        [helper.make_node("Mul", ["x", "x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 8])],
    )
    backend = WgpuBackend.load(path, Runtime(backend="wgpu"))
    try:
        assert backend.placement.details["sizes_per_call"] == ["x[0]"]
        feed = {"x": np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)}
        np.testing.assert_allclose(backend.run(feed)["y"], _reference(path, feed)[0], rtol=1e-6)
    finally:
        backend.close()


def test_a_model_the_engine_cannot_run_at_all_is_refused_naming_its_ops(tmp_path: Path) -> None:
    rare = _unclaimed_op()
    if rare in ("Det", "CumSum"):
        pytest.skip(f"{rare} needs another input layout; extend the test for it")
    path = _save(
        tmp_path,
        [helper.make_node(rare, ["x"], ["h"]), helper.make_node(rare, ["h"], ["y"], axis=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
    )
    with pytest.raises(BackendError) as caught:
        WgpuBackend.load(path, Runtime(backend="wgpu"))
    assert f"{rare} x2" in caught.value.message
    assert "--backend cpu" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("op", "domain", "outputs"),
    [
        # Whisper's decoder as onnxruntime-genai builds it: the sum feeds the next residual.
        ("SkipLayerNormalization", "com.microsoft", ["y", "", "", "sum"]),
        ("LayerNormalization", "", ["y", "", "inverse"]),
    ],
)
def test_a_node_that_omits_an_optional_output_runs_on_wgpu(
    tmp_path: Path, op: str, domain: str, outputs: list[str]
) -> None:
    """An omitted output ("") in the middle of a node's outputs sent the node to the CPU
    ("the shape of output '' is unknown"): 19 of Whisper tiny's 116 nodes."""
    rng = np.random.default_rng(0)
    gamma = onnx.numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "gamma")
    beta = onnx.numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "beta")
    inputs = ["x", "skip", "gamma", "beta"] if op.startswith("Skip") else ["x", "gamma", "beta"]
    node = helper.make_node(op, inputs, outputs, domain=domain, epsilon=1e-5)
    named = [name for name in outputs if name]
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, 16]) for n in ("x", "skip")]
        if op.startswith("Skip")
        else [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 16])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in named],
        [gamma, beta],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    feed = {name.name: rng.standard_normal((2, 3, 16)).astype(np.float32) for name in graph.input}
    backend = WgpuBackend.load(path, Runtime(backend="wgpu"))
    try:
        assignment = backend.placement.details["assignment"]
        assert assignment["nodes_on_backend"] == assignment["nodes"], assignment["why_elsewhere"]
        produced = backend.run(feed)
    finally:
        backend.close()
    for name, expected in zip(named, _reference(path, feed), strict=True):
        np.testing.assert_allclose(produced[name], expected, rtol=1e-5, atol=1e-5)


def test_int64_values_outside_int32_are_the_callers_fault(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [helper.make_node("Add", ["a", "b"], ["y"])],
        [
            helper.make_tensor_value_info("a", TensorProto.INT64, [4]),
            helper.make_tensor_value_info("b", TensorProto.INT64, [4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [4])],
    )
    backend = WgpuBackend.load(path, Runtime(backend="wgpu"))
    try:
        if backend.placement.details["assignment"]["nodes_on_backend"] != 1:
            pytest.skip("no int64 Add kernel")
        small = {"a": np.arange(4, dtype=np.int64), "b": np.full(4, -7, dtype=np.int64)}
        np.testing.assert_array_equal(backend.run(small)["y"], np.arange(4) - 7)
        assert backend.run(small)["y"].dtype == np.int64
        with pytest.raises(InputError, match="outside int32"):
            backend.run({"a": np.full(4, 2**40, dtype=np.int64), "b": small["b"]})
    finally:
        backend.close()


def test_a_software_adapter_is_refused_unless_allowed(
    monkeypatch: pytest.MonkeyPatch, gpu: Gpu, tmp_path: Path
) -> None:
    from gpux.runtime.wgpu import backend as engine

    if not gpu.is_software:
        pytest.skip("this machine has a real GPU")
    monkeypatch.delenv("GPUX_WGPU_ALLOW_SOFTWARE")
    monkeypatch.setattr(engine, "_devices", {})
    with pytest.raises(BackendError) as caught:
        WgpuBackend.load(_split_model(tmp_path), Runtime(backend="wgpu"))
    assert "backend 'wgpu' cannot start" in caught.value.message
    assert "GPUX_WGPU_ALLOW_SOFTWARE=1" in (caught.value.hint or "")


def test_profile_times_every_gpu_node_and_cpu_segment(tmp_path: Path, gpu: Gpu) -> None:
    if "timestamp-query" not in gpu.features:
        pytest.skip(f"{gpu.adapter_summary} has no timestamp queries")
    path = _split_model(tmp_path)
    backend = WgpuBackend.load(path, Runtime(backend="wgpu"), dimensions={"batch": 2})
    try:
        feed = {"x": np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)}
        outputs, times = backend.executor.profile(feed)
        np.testing.assert_allclose(outputs["y"], backend.run(feed)["y"])
        # Elementwise fusion: b (Mul's) leaves for the CPU segment and the later Add, a does not.
        assert [t["on"] for t in times] == ["wgpu", "cpu", "wgpu"]
        assert [t["op"] for t in times if t["on"] == "wgpu"] == ["Add+Mul", "Add+Sub"]
        assert all(t["ms"] >= 0 for t in times)
    finally:
        backend.close()


def test_loading_and_closing_again_and_again_leaks_no_device_object(tmp_path: Path) -> None:
    """Like wgpu-py's tests_mem: after a first cycle (which fills the shared pipeline cache),
    every load, run and close leaves as many live buffers, bind groups and pipelines as before."""
    import gc

    import wgpu

    path = _split_model(tmp_path)
    feed = {"x": np.ones((2, 8), dtype=np.float32)}

    def cycle() -> dict[str, int]:
        backend = WgpuBackend.load(path, Runtime(backend="wgpu"), dimensions={"batch": 2})
        backend.run(feed)
        backend.close()
        del backend
        gc.collect()
        counts = wgpu.diagnostics.object_counts.get_dict()
        return {kind: counts[kind]["count"] for kind in ("Buffer", "BindGroup", "ComputePipeline")}

    first = cycle()
    for _ in range(5):
        assert cycle() == first


def test_reshapes_share_buffers_even_between_an_input_and_an_output(tmp_path: Path) -> None:
    """Flatten and Reshape move no data (``alias_input``): an output that is a reshaped input
    reads back from the input's own buffer, and a reshaped intermediate stays alive as long as
    its alias is read."""
    shape = onnx.numpy_helper.from_array(np.array([2, 6], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Flatten", ["x"], ["x_flat"], axis=1),  # graph output, x's buffer
        helper.make_node("Mul", ["x", "x"], ["squared"]),
        helper.make_node("Reshape", ["squared", "shape"], ["squared_2x6"]),
        helper.make_node("Neg", ["x"], ["negated"]),  # made while squared_2x6 is alive
        helper.make_node("Reshape", ["negated", "shape"], ["negated_2x6"]),
        helper.make_node("Add", ["squared_2x6", "negated_2x6"], ["y"]),
    ]
    path = _save(
        tmp_path,
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 2])],
        [
            helper.make_tensor_value_info("x_flat", TensorProto.FLOAT, [2, 6]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6]),
        ],
        initializers=[shape],
    )
    backend = WgpuBackend.load(path, Runtime(backend="wgpu"))
    try:
        feed = {"x": np.arange(12, dtype=np.float32).reshape(2, 3, 2) - 5}
        produced = backend.run(feed)
        flat, y = _reference(path, feed)
        np.testing.assert_array_equal(produced["x_flat"], flat)
        np.testing.assert_array_equal(produced["y"], y)
        assignment = backend.placement.details["assignment"]
        assert assignment["nodes_on_backend"] == assignment["nodes"] == 6
        memory = backend.executor.memory
        location = memory.location
        assert location["x_flat"] == location["x"]
        assert location["squared_2x6"] == location["squared"]
        assert location["negated"] != location["squared"]
    finally:
        backend.close()


def test_each_call_reads_its_own_inputs_though_its_commands_were_encoded_before(
    tmp_path: Path,
) -> None:
    """A call's commands are encoded during the call before it (executor.py): calls in a row,
    with GPU segments on both sides of a CPU one and with a profiled call between them, each
    answer for their own inputs."""
    register_kernels()
    assert "Einsum" not in kernel.claimed_ops(), "pick another op the engine lacks"
    w = onnx.numpy_helper.from_array(np.linspace(-1, 1, 8, dtype=np.float32), "w")
    path = _save(
        tmp_path,
        [
            helper.make_node("Add", ["x", "w"], ["a"]),
            helper.make_node("Mul", ["a", "a"], ["b"]),
            helper.make_node("Einsum", ["b"], ["c"], equation="ij->ji"),  # on the CPU
            helper.make_node("Transpose", ["c"], ["t"], perm=[1, 0]),
            helper.make_node("Add", ["t", "b"], ["d"]),
            helper.make_node("Sub", ["d", "x"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        initializers=[w],
    )
    backend = WgpuBackend.load(path, Runtime(backend="wgpu"), dimensions={"batch": 2})
    try:
        segments = backend.placement.details["assignment"]["segments"]
        assert [s["on"] for s in segments] == ["wgpu", "CPUExecutionProvider", "wgpu"]
        rng = np.random.default_rng(7)
        executor: Any = None
        for call in range(5):
            feed = {"x": rng.standard_normal((2, 8)).astype(np.float32)}
            if call == 2:  # a profiled call between plain ones
                executor = backend.executor_for(feed)
                got = executor.profile(feed)[0]["y"]
            else:
                got = backend.run(feed)["y"]
            np.testing.assert_allclose(got, _reference(path, feed)[0], rtol=1e-5, atol=1e-6)
        assert executor is not None and executor.last_encode_seconds > 0
    finally:
        backend.close()
