"""GPUXfile runtime options in ONNX Runtime's vocabulary, and bad option values as GPUXfile
errors. No GPU is needed: the options are plain dicts, checked before any session exists."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpux.config.schema import Runtime
from gpux.runtime.onnxruntime_backend import _with_cuda_graph, provider_options
from tests.cli.expect import assert_failure, hint_of
from tests.conftest import CLI


def runtime(**settings: Any) -> Runtime:
    return Runtime.model_validate(settings)


@pytest.mark.parametrize(
    ("search", "expected"),
    [("exhaustive", "EXHAUSTIVE"), ("heuristic", "HEURISTIC"), ("default", "DEFAULT")],
)
def test_cuda_conv_algo_search(search: str, expected: str) -> None:
    options = provider_options("cuda", runtime(cuda={"conv_algo_search": search}), None)
    assert options["cudnn_conv_algo_search"] == expected


def test_cuda_defaults_and_device() -> None:
    assert provider_options("cuda", runtime(), None) == {
        "device_id": "0",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "enable_cuda_graph": "0",
    }
    assert provider_options("cuda", runtime(device=2), None)["device_id"] == "2"


def test_cuda_graphs_are_enabled_only_once_the_model_qualifies() -> None:
    # The first session never captures: _with_cuda_graph recreates it with enable_cuda_graph=1
    # after checking node placement and fixed shapes.
    off = provider_options("cuda", runtime(cuda={"cuda_graphs": False}), None)
    on = provider_options("cuda", runtime(cuda={"cuda_graphs": True}), None)
    assert off["enable_cuda_graph"] == on["enable_cuda_graph"] == "0"
    assert on == off


class FakeValue:
    def __init__(self, name: str, shape: list[Any]) -> None:
        self.name, self.shape = name, shape


class FakeSession:
    def __init__(self, inputs: list[FakeValue], outputs: list[FakeValue]) -> None:
        self._inputs, self._outputs = inputs, outputs

    def get_inputs(self) -> list[FakeValue]:
        return self._inputs

    def get_outputs(self) -> list[FakeValue]:
        return self._outputs


def _no_session() -> Any:
    raise AssertionError("a model that does not qualify must not get a second session")


def test_cuda_graphs_refused_when_a_node_is_not_on_cuda(tmp_path: Path) -> None:
    session = FakeSession([FakeValue("x", [1, 4])], [FakeValue("y", [1, 3])])
    assignment = {
        "known": True,
        "nodes": 3,
        "nodes_on_backend": 2,
        "share": 0.6667,
        "elsewhere": {"NonZero@CPUExecutionProvider": 1},
    }
    kept, runner, note = _with_cuda_graph(
        session, tmp_path / "m.onnx", runtime(), _no_session, {}, assignment
    )
    assert kept is session and runner is None
    assert note == {
        "enabled": False,
        "why": "1 of 3 nodes are not on CUDA (NonZero@CPUExecutionProvider x1); a CUDA graph "
        "needs every node on the GPU",
    }


@pytest.mark.parametrize(
    ("inputs", "outputs", "named"),
    [
        ([FakeValue("x", ["batch", 4])], [FakeValue("y", [1, 3])], "x ['batch', 4]"),
        ([FakeValue("x", [1, 4])], [FakeValue("y", [None, 3])], "y [None, 3]"),
    ],
)
def test_cuda_graphs_refused_for_shapes_that_are_not_fixed(
    tmp_path: Path, inputs: list[FakeValue], outputs: list[FakeValue], named: str
) -> None:
    assignment = {"known": True, "nodes": 2, "nodes_on_backend": 2, "share": 1.0}
    session = FakeSession(inputs, outputs)
    kept, runner, note = _with_cuda_graph(
        session, tmp_path / "m.onnx", runtime(), _no_session, {}, assignment
    )
    assert kept is session and runner is None and note["enabled"] is False
    assert f"and {named} is not" in note["why"]
    assert "inputs[].shape" in note["why"]


@pytest.mark.parametrize("fp16", [True, False])
def test_tensorrt_fp16(fp16: bool) -> None:
    options = provider_options("tensorrt", runtime(tensorrt={"fp16": fp16}), None)
    assert options == {"device_id": "0", "trt_fp16_enable": str(fp16)}  # no cache dir: no cache


def test_tensorrt_engine_cache_points_into_the_cache_dir(tmp_path: Path) -> None:
    cache = tmp_path / "store" / "cache" / "trt" / "sha256-abc"
    options = provider_options("tensorrt", runtime(device=1), cache)
    assert cache.is_dir()  # created, TensorRT does not create it
    assert options == {
        "device_id": "1",
        "trt_fp16_enable": "False",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
    }


def test_tensorrt_engine_cache_off_leaves_the_cache_dir_alone(tmp_path: Path) -> None:
    cache = tmp_path / "never"
    options = provider_options("tensorrt", runtime(tensorrt={"engine_cache": False}), cache)
    assert not any(key.startswith("trt_engine_cache") for key in options)
    assert not cache.exists()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_webgpu_preferred_layout(layout: str) -> None:
    options = provider_options("webgpu", runtime(webgpu={"preferred_layout": layout}), None)
    assert options == {"preferredLayout": layout}


@pytest.mark.parametrize(
    "device_type", ["AUTO", "CPU", "GPU", "NPU", "GPU.1", "GPU_FP16", "GPU.0_FP32"]
)
def test_openvino_device_type(device_type: str) -> None:
    options = provider_options("openvino", runtime(openvino={"device_type": device_type}), None)
    assert options == {"device_type": device_type}


def test_other_backends() -> None:
    assert provider_options("openvino", runtime(), None) == {"device_type": "AUTO"}
    assert provider_options("rocm", runtime(device=3), None) == {"device_id": "3"}
    assert provider_options("directml", runtime(), None) == {"device_id": "0"}
    assert provider_options("coreml", runtime(), None) == {}
    assert provider_options("cpu", runtime(device=5), None) == {}


# -- bad values are GPUXfile errors (exit 3), found before any model is loaded ---------------

BAD_OPTIONS = [
    pytest.param(
        "{cuda: {conv_algo_search: fast}}",
        [
            "runtime.cuda.conv_algo_search: expected 'exhaustive', 'heuristic' or 'default'",
            "(got 'fast')",
        ],
        "must be one of: exhaustive, heuristic, default",
        id="conv_algo_search fast",
    ),
    pytest.param(
        "{cuda: {conv_algo_search: exhastive}}",
        ["(got 'exhastive'); did you mean 'exhaustive'?"],
        "must be one of: exhaustive, heuristic, default",
        id="conv_algo_search typo",
    ),
    pytest.param(
        "{openvino: {device_type: TPU}}",
        ["runtime.openvino.device_type:", "AUTO|CPU|GPU|NPU", "(got 'TPU')"],
        None,
        id="openvino TPU",
    ),
    pytest.param(
        "{webgpu: {preferred_layout: nhwc}}",
        ["runtime.webgpu.preferred_layout: expected 'NCHW' or 'NHWC'", "did you mean 'NHWC'?"],
        "must be one of: NCHW, NHWC",
        id="layout in lowercase",
    ),
    pytest.param(
        "{cuda: {cuda_graph: true}}",
        ["unknown key 'cuda_graph' in runtime.cuda; did you mean 'cuda_graphs'?"],
        "valid keys in runtime.cuda: conv_algo_search, cuda_graphs",
        id="cuda_graph typo",
    ),
    pytest.param(
        "{tensorrt: {fp16: maybe}}",
        ["runtime.tensorrt.fp16: expected boolean", "(got 'maybe')"],
        None,
        id="fp16 not a boolean",
    ),
    pytest.param(
        "{backend: webgpuu}",
        ["runtime.backend:", "(got 'webgpuu'); did you mean 'webgpu'?"],
        "runtime.backend must be one of: auto, cpu, cuda",
        id="backend typo",
    ),
]


@pytest.mark.parametrize(("runtime_yaml", "fragments", "hint"), BAD_OPTIONS)
def test_a_bad_option_value_is_a_gpuxfile_error(
    cli: CLI,
    add_project: Callable[..., Path],
    symbolic_model: Path,
    runtime_yaml: str,
    fragments: list[str],
    hint: str | None,
) -> None:
    project = add_project(
        "bad", symbolic_model, f"name: bad\nmodel: ./linear.onnx\nruntime: {runtime_yaml}\n"
    )
    result = cli("build", str(project))
    assert_failure(result, 3, "GPUXfile:3:", *fragments)
    if hint:
        assert hint in hint_of(result)


def test_bad_option_values_fail_in_process_too() -> None:
    from pydantic import ValidationError

    for bad in (
        {"cuda": {"conv_algo_search": "fast"}},
        {"openvino": {"device_type": "TPU"}},
        {"openvino": {"device_type": "gpu"}},
        {"webgpu": {"preferred_layout": "NWHC"}},
        {"tensorrt": {"engine_cache": "sometimes"}},
    ):
        with pytest.raises(ValidationError):
            runtime(**bad)
