"""Client mistakes are 400s with a JSON ``{error, hint}``, never a 500 (issue #12, item 9).

Each request below is one an outside attack sent to ``gpux serve``; before the fix each became
``500 internal error`` (an AttributeError, TypeError, ValueError, OverflowError or RecursionError
in the server) or, for ``1e39`` as FP32, a silent ``inf``. The same library code serves
``gpux run`` and the Python API, so those are checked too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure
from tests.conftest import make_project
from tests.serve.conftest import Server, start_server, stop_server

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

# PP-OCR's detector halves its feature maps five times and adds them back up: sides that are not
# a multiple of 32 fit its declared [?, 3, ?, ?] input but fail inside ONNX Runtime.
ODD_IMAGE = [1, 3, 33, 35]


def identity(path: Path, dtype: int) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", dtype, ["n"])],
        [helper.make_tensor_value_info("y", dtype, ["n"])],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=generated_models.OPSET), str(path))
    return path


def plus_three(path: Path) -> Path:
    """y[n] = x[n] + [1, 2, 3]: any n passes the declared shape; ONNX Runtime's Add takes 1 or 3."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        "plus_three",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.array([1, 2, 3], np.float32), "c")],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=generated_models.OPSET), str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, zoo_file: Callable[[str], Path]) -> BoundCLI:
    root = tmp_path_factory.mktemp("mistakes")
    cli = BoundCLI(root / "home")
    projects = {
        "f32": identity(root / "f32" / "f32.onnx", TensorProto.FLOAT),
        "u8": identity(root / "u8" / "u8.onnx", TensorProto.UINT8),
        "i64": identity(root / "i64" / "i64.onnx", TensorProto.INT64),
        "plus-three": plus_three(root / "plus-three" / "plus_three.onnx"),
    }
    for name, model in projects.items():
        (model.parent / "GPUXfile").write_text(
            f"name: {name}\nversion: '1'\nmodel: ./{model.name}\n"
        )
        cli.ok("build", str(model.parent), "-q")
    detector = make_project(
        root / "detector",
        zoo_file("ppocr-det"),
        "name: detector\nversion: '1'\nmodel: ./ch_PP-OCRv4_det_infer.onnx\n",
    )
    cli.ok("build", str(detector), "-q")
    return cli


@pytest.fixture(scope="module")
def server(models: BoundCLI) -> Iterator[Server]:
    served = start_server(
        models, "f32:1", "u8:1", "i64:1", "plus-three:1", "detector:1", "--backend", "cpu"
    )
    yield served
    assert stop_server(served) == 0, served.log()
    log = served.log()
    assert "Traceback" not in log and "internal error" not in log, log


def tensor(datatype: str, shape: list[Any], data: Any = None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "x", "datatype": datatype, "shape": shape, **extra}
    if data is not None:
        entry["data"] = data
    return entry


def body(*inputs: dict[str, Any], **request: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **request}).encode()


def binary(header: dict[str, Any], data: bytes = b"") -> tuple[bytes, dict[bytes, bytes]]:
    text = json.dumps(header).encode()
    return text + data, {
        b"Content-Type": b"application/octet-stream",
        b"Inference-Header-Content-Length": str(len(text)).encode(),
    }


FP32_ONE = tensor("FP32", [1], [1.0])
NESTED = b"[" * 100_000 + b"]" * 100_000
ATTACKS: dict[str, tuple[str, bytes, dict[bytes, bytes], str]] = {
    # name: (model, body, headers, fragment of the error)
    "parameters as a list": ("f32", body(FP32_ONE, parameters=[1]), {}, "must be an object"),
    "input parameters as a string": (
        "f32",
        body(tensor("FP32", [1], [1.0], parameters="binary")),
        {},
        "input 'x': 'parameters' must be an object, got a string",
    ),
    "output parameters as a list": (
        "f32",
        body(FP32_ONE, outputs=[{"name": "y", "parameters": ["binary_data"]}]),
        {},
        "output 'y': 'parameters' must be an object, got a list",
    ),
    "shape [false] with binary data": (
        "f32",
        *binary({"inputs": [tensor("FP32", [False], parameters={"binary_data_size": 0})]}),
        "'shape' must be a list of sizes",
    ),
    "shape 2^32 x 2^32 with 0 bytes": (
        "f32",
        *binary({"inputs": [tensor("FP32", [2**32, 2**32], parameters={"binary_data_size": 0})]}),
        "describes 18446744073709551616 elements",
    ),
    "superscript two as header length": (
        "f32",
        body(FP32_ONE),
        # Servers read header bytes as Latin-1, where 0xB2 is "²" and "²".isdigit() is true.
        {
            b"Content-Type": b"application/octet-stream",
            b"Inference-Header-Content-Length": "²".encode("latin-1"),
        },
        "Inference-Header-Content-Length must be a byte count",
    ),
    "10**400 as FP32": (
        "f32",
        body(tensor("FP32", [1], [10**400])),
        {},
        "input 'x' holds 10000000... (401 digits), too large for any float32 value",
    ),
    "1e39 as FP32": (
        "f32",
        body(tensor("FP32", [1], [1e39])),
        {},
        "input 'x' holds 1e+39, too large for float32 (range [-3.403e+38, 3.403e+38])",
    ),
    "300 as UINT8": (
        "u8",
        body(tensor("UINT8", [1], [300])),
        {},
        "input 'x' holds 300, outside the range of uint8 [0, 255]",
    ),
    "-1 as UINT8": (
        "u8",
        body(tensor("UINT8", [1], [-1])),
        {},
        "input 'x' holds -1, outside the range of uint8 [0, 255]",
    ),
    "2^64 as INT64": (
        "i64",
        body(tensor("INT64", [1], [2**64])),
        {},
        "input 'x' holds 18446744073709551616, too large for any int64 value",
    ),
    "data nested 100k deep": (
        "f32",
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ' + NESTED + b"}]}",
        {},
        "nests 100003 levels deep",
    ),
    "a size the model's Add cannot broadcast": (
        "plus-three",
        body(tensor("FP32", [4], [1.0, 2.0, 3.0, 4.0])),
        {},
        "the model cannot run on this input",
    ),
    "an image size the detector cannot take": (
        "detector",
        body(tensor("FP32", ODD_IMAGE, [0.0] * int(np.prod(ODD_IMAGE)))),
        {},
        "the model cannot run on this input",
    ),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_client_mistake_is_a_400_with_a_json_error(server: Server, attack: str) -> None:
    model, content, headers, fragment = ATTACKS[attack]
    response = httpx.post(
        f"{server.url}/v2/models/{model}/infer",
        content=content,
        headers={b"Content-Type": b"application/json", **headers},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    answer = response.json()
    assert fragment in answer["error"], answer
    assert answer["hint"], answer
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200


def test_the_runtime_names_what_it_refused(server: Server) -> None:
    """The 400 carries ONNX Runtime's own words (which node, which sizes), not a bare status."""
    response = httpx.post(
        f"{server.url}/v2/models/plus-three/infer",
        json={"inputs": [tensor("FP32", [4], [1.0, 2.0, 3.0, 4.0])]},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "Add node" in error and "4" in error, error
    assert "/onnxruntime_src/" not in error, error


def test_valid_requests_still_work(server: Server) -> None:
    """The checks refuse only mistakes: edge values of each type and binary data still pass."""
    cases = [
        ("f32", tensor("FP32", [2], [3.4e38, -3.4e38])),
        ("u8", tensor("UINT8", [2], [0, 255])),
        ("i64", tensor("INT64", [2], [2**63 - 1, -(2**63)])),
        ("plus-three", tensor("FP32", [1], [1.0])),
    ]
    for model, entry in cases:
        response = httpx.post(f"{server.url}/v2/models/{model}/infer", json={"inputs": [entry]})
        assert response.status_code == 200, response.text
        output = response.json()["outputs"][0]
        if model != "plus-three":
            assert output["data"] == pytest.approx(entry["data"], rel=1e-6)
    content, headers = binary(
        {"inputs": [tensor("UINT8", [3], parameters={"binary_data_size": 3})]}, bytes([1, 2, 255])
    )
    response = httpx.post(f"{server.url}/v2/models/u8/infer", content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1, 2, 255]


@pytest.mark.parametrize(
    ("model", "datatype", "value", "fragment"),
    [
        ("u8", "UINT8", 300, "outside the range of uint8 [0, 255]"),
        ("f32", "FP32", 1e39, "too large for float32"),
        ("i64", "INT64", 2**64, "too large for any int64 value"),
    ],
)
def test_gpux_run_refuses_the_same_values(
    models: BoundCLI, model: str, datatype: str, value: Any, fragment: str
) -> None:
    request = json.dumps({"inputs": [tensor(datatype, [1], [value])]})
    assert_failure(models("run", f"{model}:1", "--backend", "cpu", stdin=request), 6, fragment)


def test_gpux_run_reports_a_runtime_refusal_as_an_input_error(
    models: BoundCLI, tmp_path: Path
) -> None:
    image = tmp_path / "odd.npy"
    np.save(image, np.zeros(ODD_IMAGE, np.float32))
    result = models("run", "detector:1", "--input", f"x=@{image}", "--backend", "cpu")
    assert_failure(result, 6, "the model cannot run on this input", "Add node")


def test_the_python_api_raises_input_error_for_a_runtime_refusal(
    models: BoundCLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gpux
    from gpux.errors import InputError

    monkeypatch.setenv("GPUX_HOME", str(models.home))
    with gpux.load("plus-three:1", backend="cpu") as model:
        with pytest.raises(InputError, match="the model cannot run on this input"):
            model.run({"x": np.ones(4, np.float32)})
        assert model.run({"x": np.ones(3, np.float32)})["y"].tolist() == [2.0, 3.0, 4.0]
