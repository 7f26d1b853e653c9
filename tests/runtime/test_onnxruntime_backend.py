"""The ONNX Runtime backend: explicit backends fail loudly, ``auto`` reports what it picked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from gpux.config.schema import Backend, Runtime
from gpux.errors import BackendError, InputError
from gpux.runtime import providers
from gpux.runtime.backend import Placement
from gpux.runtime.engines import engine
from gpux.runtime.onnxruntime_backend import OnnxRuntimeBackend
from tests import generated_models
from tests.generated_models import LINEAR_B, LINEAR_W

AVAILABLE = ort.get_available_providers()
cpu_only = pytest.mark.skipif(
    any(p in AVAILABLE for p in providers.ACCELERATED_PROVIDERS),
    reason="this machine offers an accelerated backend",
)


@cpu_only
def test_requesting_cuda_without_it_names_the_backend_and_how_to_install(
    symbolic_model: Path,
) -> None:
    with pytest.raises(BackendError) as info:
        OnnxRuntimeBackend.load(symbolic_model, Runtime(backend=Backend.cuda))
    error = info.value
    assert error.exit_code == 7
    assert "backend 'cuda' is not available" in error.message
    assert "CPUExecutionProvider" in error.message  # what this build does offer
    assert error.hint is not None
    assert "pip install 'gpux[cuda]'" in error.hint
    assert "onnxruntime-gpu" in error.hint
    assert "--backend auto" in error.hint


@cpu_only
@pytest.mark.parametrize("backend", ["tensorrt", "rocm", "openvino", "webgpu"])
def test_every_missing_backend_has_its_own_install_hint(symbolic_model: Path, backend: str) -> None:
    with pytest.raises(BackendError) as info:
        OnnxRuntimeBackend.load(symbolic_model, Runtime(backend=Backend(backend)))
    assert f"backend '{backend}'" in info.value.message
    assert info.value.hint is not None
    if backend == "webgpu" and "plugin is installed" in info.value.message:
        # The dev environment carries the WebGPU plugin: the cause is the missing device.
        assert "software adapters" in info.value.hint
    else:
        assert info.value.hint.startswith(providers.INSTALL_HINTS[backend])


@cpu_only
def test_auto_picks_cpu_and_runs(symbolic_model: Path) -> None:
    backend = engine().load(symbolic_model, Runtime(backend=Backend.auto))
    assert isinstance(backend, OnnxRuntimeBackend)
    placement = backend.placement
    assert placement.backend == "cpu"
    assert placement.providers == ["CPUExecutionProvider"]
    assert placement.requested == "auto"
    # Nothing better than the CPU exists here; the only backend worth a word is an installed
    # WebGPU plugin that finds no GPU (the dev environment has one).
    assert placement.fallback_reason is None or placement.fallback_reason.startswith("webgpu: ")
    assert placement.device.startswith("CPU (")
    assignment = placement.details["assignment"]
    assert assignment["known"] and assignment["share"] == 1.0
    assert assignment["nodes"] == assignment["nodes_on_backend"] >= 1  # MatMul+Add may fuse
    x = np.array([[1, 2, 3, 4], [0, 0, 0, 0]], dtype=np.float32)
    outputs = backend.run({"x": x})
    assert list(outputs) == ["y"]
    np.testing.assert_allclose(outputs["y"], x @ LINEAR_W + LINEAR_B, rtol=1e-6)
    backend.close()


def test_explicit_cpu_backend(symbolic_model: Path) -> None:
    backend = OnnxRuntimeBackend.load(symbolic_model, Runtime(backend=Backend.cpu, threads=1))
    assert backend.placement.backend == "cpu"
    assert backend.placement.requested == "cpu"
    assert backend.placement.providers == ["CPUExecutionProvider"]


def test_a_model_that_cannot_load_is_a_backend_error(tmp_path: Path) -> None:
    broken = generated_models.corrupt(tmp_path / "broken.onnx")
    with pytest.raises(BackendError) as info:
        OnnxRuntimeBackend.load(broken, Runtime(backend=Backend.cpu))
    assert info.value.message.startswith("backend 'cpu' failed to start: ")
    with pytest.raises(BackendError) as info:
        OnnxRuntimeBackend.load(broken, Runtime(backend=Backend.auto))
    assert info.value.message.startswith("no execution backend could load the model: cpu: ")
    assert info.value.hint and "--debug" in info.value.hint


def test_a_feed_the_runtime_refuses_is_an_input_error(symbolic_model: Path) -> None:
    backend = OnnxRuntimeBackend.load(symbolic_model, Runtime(backend=Backend.cpu))
    with pytest.raises(InputError) as info:
        backend.run({"x": np.zeros((1, 5), np.float32)})  # unchecked feed: wrong width
    assert info.value.message == (
        "the model cannot run on this input: Got invalid dimensions for input: x for the "
        "following indices; index: 1 Got: 5 Expected: 4"
    )


def test_a_failing_run_is_a_backend_error_naming_the_backend(tmp_path: Path) -> None:
    """Running out of memory is the machine's failure (a 500), whatever input caused it."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "ConstantOfShape",
                ["shape"],
                ["y"],
                value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
            )
        ],
        "fill",
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = tmp_path / "fill.onnx"
    onnx.save(helper.make_model(graph, opset_imports=generated_models.OPSET), str(model))
    backend = OnnxRuntimeBackend.load(model, Runtime(backend=Backend.cpu))
    with pytest.raises(BackendError) as info:
        backend.run({"shape": np.array([2**48], np.int64)})  # 1 PiB: malloc refuses at once
    assert info.value.message.startswith("the model failed to run on cpu: ")
    assert "Failed to allocate memory" in info.value.message


def test_real_model_runs_on_auto(zoo_file: Callable[[str], Path]) -> None:
    backend = OnnxRuntimeBackend.load(zoo_file("minilm"), Runtime())
    ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
    outputs = backend.run(
        {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids),
        }
    )
    hidden = outputs["last_hidden_state"]
    assert hidden.shape == (1, 4, 384)
    assert np.isfinite(hidden).all()
    assert backend.placement.requested == "auto"


def test_placement_to_json() -> None:
    placement = Placement(
        backend="cpu",
        providers=["CPUExecutionProvider"],
        device="CPU (x86_64, 2 cores)",
        requested="auto",
        fallback_reason="cuda: CUDAExecutionProvider did not start",
    )
    assert placement.to_json() == {
        "backend": "cpu",
        "providers": ["CPUExecutionProvider"],
        "device": "CPU (x86_64, 2 cores)",
        "requested": "auto",
        "fallback_reason": "cuda: CUDAExecutionProvider did not start",
    }
    placement.details = {"gpu_memory": 0}
    assert placement.to_json()["details"] == {"gpu_memory": 0}


def test_unknown_engine_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="unknown engine 'tvm'") as info:
        engine("tvm")
    assert info.value.hint == "known engines: onnxruntime, wgpu"


def test_run_on_device_matches_run_and_returns_ortvalues(symbolic_model: Path) -> None:
    import onnxruntime as ort

    import gpux.api

    with gpux.api._load_onnx_file(symbolic_model, "cpu") as model:
        x = np.array([[1, 2, 3, 4]], dtype=np.float32)
        on_device = model.run_on_device({"x": x})
        assert isinstance(on_device["y"], ort.OrtValue)
        np.testing.assert_array_equal(on_device["y"].numpy(), model.run({"x": x})["y"])
        # An OrtValue input is passed as it is, without a host round trip.
        again = model.run_on_device({"x": ort.OrtValue.ortvalue_from_numpy(x)})
        np.testing.assert_array_equal(again["y"].numpy(), on_device["y"].numpy())


def test_a_graph_runner_gives_each_thread_its_own_answer(tmp_path: Path) -> None:
    """The runner behind CUDA (and WebGPU) graph replay copies every call's input into one
    fixed buffer and reads one fixed output buffer: calls from a server's threads in flight
    must take turns, or one caller reads another's answer. Here over CPU buffers (the same
    IOBinding code; this machine has no GPU), 8 threads x 200 calls of distinct inputs over two
    runners. And a thread's first calls of a runner, which capture a graph on the CUDA EP (one
    per thread), run while no other call of any runner does: a capture fails on another
    thread's CUDA work."""
    import threading
    import time

    from gpux.runtime.onnxruntime_backend import CAPTURE_RUNS, _GraphRunner

    path = tmp_path / "double.onnx"
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 256])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    in_flight = [0]
    counted = threading.Lock()
    company: dict[tuple[int, int], list[int]] = {}  # (runner, thread) -> calls in flight beside

    class Recording:  # the session as a runner sees it: who else runs during each call
        def __init__(self, index: int) -> None:
            self.index = index
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def __getattr__(self, name: str) -> object:
            return getattr(self.session, name)

        def run_with_iobinding(self, binding: object) -> None:
            with counted:
                in_flight[0] += 1
                beside = in_flight[0] - 1
            time.sleep(0.0005)  # long enough for the others to overlap
            self.session.run_with_iobinding(binding)
            with counted:
                in_flight[0] -= 1
                beside = max(beside, in_flight[0])
            company.setdefault((self.index, threading.get_ident()), []).append(beside)

    runners = [_GraphRunner(Recording(i), 0, kind="cpu") for i in range(2)]
    wrong: list[int] = []

    def caller(index: int) -> None:
        for call in range(200):
            value = float(index * 1000 + call)
            (got,) = runners[call % 2].run(["y"], {"x": np.full((64, 256), value, np.float32)})
            if not np.all(got == 2 * value):
                wrong.append(index)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert len(company) == 16
    for calls in company.values():
        assert calls[:CAPTURE_RUNS] == [0] * CAPTURE_RUNS, calls[:10]
    # Later calls of the two runners ran side by side (else the guard serialised everything).
    assert any(beside for calls in company.values() for beside in calls[CAPTURE_RUNS:])
