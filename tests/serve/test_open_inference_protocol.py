"""tritonclient.http, unchanged, against ``gpux serve``: binary (its default) and JSON tensors,
with results equal to ``gpux run`` on the same inputs."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.serve.conftest import Server

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

IDS = np.array([[101, 7592, 2088, 102, 0, 0], [101, 14246, 2595, 3216, 4275, 102]], np.int64)
MASK = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], np.int64)


def client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"127.0.0.1:{server.port}")


def gpux_run(server: Server, tmp_path: Path, name: str, feed: dict[str, np.ndarray]) -> Any:
    args = []
    for key, value in feed.items():
        np.save(tmp_path / f"{key}.npy", value)
        args += ["--input", f"{key}=@{tmp_path / f'{key}.npy'}"]
    out = tmp_path / "out.npz"
    server.cli.ok("run", name, *args, "--backend", "cpu", "-o", str(out))
    return dict(np.load(out))


def minilm_inputs(binary: bool) -> list[triton.InferInput]:
    inputs = []
    for name, value in (("input_ids", IDS), ("attention_mask", MASK), ("token_type_ids", 0 * IDS)):
        tensor = triton.InferInput(name, list(value.shape), "INT64")
        tensor.set_data_from_numpy(value, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_server_and_model_metadata(served: Server) -> None:
    triton_client = client(served)
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready("minilm") and triton_client.is_model_ready("minilm", "1.0")
    assert not triton_client.is_model_ready("nope")
    metadata = triton_client.get_model_metadata("document-orientation")
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]
    assert metadata["versions"] == ["1"]  # Triton numbers versions: the tag 1.0 is version 1
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_minilm_results_equal_gpux_run(served: Server, tmp_path: Path, binary: bool) -> None:
    outputs = [triton.InferRequestedOutput("last_hidden_state", binary_data=binary)]
    result = client(served).infer("minilm", minilm_inputs(binary), outputs=outputs)
    hidden = result.as_numpy("last_hidden_state")
    expected = gpux_run(
        served,
        tmp_path,
        "minilm:1.0",
        {"input_ids": IDS, "attention_mask": MASK, "token_type_ids": 0 * IDS},
    )["last_hidden_state"]
    assert hidden.shape == (2, 6, 384) and hidden.dtype == np.float32
    if binary:
        np.testing.assert_array_equal(hidden, expected)
    else:  # JSON numbers round-trip through decimal text
        np.testing.assert_allclose(hidden, expected, rtol=1e-6, atol=1e-7)


def test_compressed_request_and_response_through_tritonclient(served: Server) -> None:
    outputs = [triton.InferRequestedOutput("last_hidden_state", binary_data=True)]
    plain = client(served).infer("minilm", minilm_inputs(True), outputs=outputs)
    squeezed = client(served).infer(
        "minilm",
        minilm_inputs(True),
        outputs=outputs,
        request_compression_algorithm="gzip",
        response_compression_algorithm="gzip",
    )
    np.testing.assert_array_equal(
        squeezed.as_numpy("last_hidden_state"), plain.as_numpy("last_hidden_state")
    )


def test_orientation_with_default_client_settings(
    served: Server, tmp_path: Path, zoo_file: Callable[[str], Path]
) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)  # binary by default
    result = client(served).infer("document-orientation", [tensor])  # all outputs, binary
    name = result.get_response()["outputs"][0]["name"]
    expected = gpux_run(served, tmp_path, "document-orientation:1.0", {"x": x})[name]
    np.testing.assert_array_equal(result.as_numpy(name), expected)


def test_gzip_request_and_version_path(served: Server) -> None:
    request = {
        "id": "r1",
        "inputs": [
            {
                "name": "input_ids",
                "shape": [1, 4],
                "datatype": "INT64",
                "data": [101, 7592, 2088, 102],
            },
            {"name": "attention_mask", "shape": [1, 4], "datatype": "INT64", "data": [1, 1, 1, 1]},
            {"name": "token_type_ids", "shape": [1, 4], "datatype": "INT64", "data": [0, 0, 0, 0]},
        ],
    }
    response = httpx.post(
        served.url + "/v2/models/minilm/versions/1.0/infer",
        content=gzip.compress(json.dumps(request).encode()),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    # httpx asked for it (and inflated it); the answer, 30 KB, passes the server's --gzip-min-kb 16
    assert response.headers["content-encoding"] == "gzip"
    body = response.json()
    assert body["id"] == "r1" and body["model_version"] == "1"
    assert body["outputs"][0]["shape"] == [1, 4, 384]


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v2/models/minilm/infer", b"{not json", 400, "not valid JSON"),
        ("/v2/models/nope/infer", b'{"inputs": []}', 404, "model 'nope' is not served here"),
        ("/v2/models/minilm/versions/9/infer", b'{"inputs": []}', 404, "minilm/versions/9"),
        (
            "/v2/models/document-orientation/infer",
            json.dumps(
                {
                    "inputs": [
                        {"name": "x", "shape": [1, 3, 2, 2], "datatype": "FP32", "data": [0.0] * 12}
                    ]
                }
            ).encode(),
            400,
            "x",
        ),
        (
            "/v2/models/document-orientation/infer",
            json.dumps(
                {"inputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [0.0]}]}
            ).encode(),
            400,
            "'y'",
        ),
        (
            "/v2/models/document-orientation/infer",
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "x",
                            "shape": [1, 3, 224, 224],
                            "datatype": "INT64",
                            "data": [0] * (3 * 224 * 224),
                        }
                    ]
                }
            ).encode(),
            400,
            "x",
        ),
    ],
    ids=[
        "malformed JSON",
        "unknown model",
        "unknown version",
        "wrong shape",
        "unknown input",
        "wrong dtype",
    ],
)
def test_bad_requests_get_a_status_and_a_message(
    served: Server, path: str, body: bytes, status: int, fragment: str
) -> None:
    response = httpx.post(served.url + path, content=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert httpx.get(served.url + "/v2/health/ready").status_code == 200  # still up


def test_predict_returns_decoded_results(served: Server, zoo_file: Callable[[str], Path]) -> None:
    page = zoo_file("page.png").read_bytes()
    with_file = httpx.post(
        served.url + "/v1/models/document-orientation/predict", files={"image": ("page.png", page)}
    )
    assert with_file.status_code == 200, with_file.text
    assert with_file.json()["result"]["orientation"][0]["label"] == "0"
    import base64

    as_json = httpx.post(
        served.url + "/v1/models/document-orientation/predict",
        json={"image": base64.b64encode(page).decode()},
    )
    assert as_json.json()["result"] == with_file.json()["result"]
    batch = httpx.post(
        served.url + "/v1/models/minilm/predict",
        json=["A man plays guitar.", "Someone plays a guitar."],
    ).json()["results"]
    a, b = (np.array(r["embedding"]) for r in batch)
    assert float(a @ b) > 0.6
    refused = httpx.post(
        served.url + "/v1/models/document-orientation/predict",
        json={"image": str(zoo_file("page.png"))},
    )
    assert refused.status_code == 400


def test_metrics_count_requests_by_status(served: Server) -> None:
    httpx.post(served.url + "/v2/models/minilm/infer", content=b"{bad")
    text = httpx.get(served.url + "/metrics").text
    assert 'gpux_requests_total{endpoint="infer",model="minilm",status="400"}' in text
    assert 'gpux_model_backend{backend="cpu",model="minilm"} 1.0' in text
    assert "gpux_request_seconds_bucket" in text


def test_classification_extension_names_the_labels(served: Server) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    plain = client(served).infer("document-orientation", [tensor]).as_numpy("fetch_name_0")
    wanted = [triton.InferRequestedOutput("fetch_name_0", class_count=2)]
    classes = client(served).infer("document-orientation", [tensor], outputs=wanted)
    top = classes.as_numpy("fetch_name_0")
    assert top.shape == (2, 2)
    labels = ["0", "90", "180", "270"]
    for row, scores in zip(top, plain, strict=True):
        best = np.argsort(-scores)[:2]
        parsed = [entry.decode().split(":") for entry in row]
        assert [int(p[1]) for p in parsed] == best.tolist()
        assert [p[2] for p in parsed] == [labels[i] for i in best]
        np.testing.assert_allclose([float(p[0]) for p in parsed], scores[best], rtol=1e-5)


def test_predict_finds_speech_segments(served: Server, tmp_path: Path) -> None:
    from tests.pipeline.speech import silence_and_noise, speak

    speech = speak("The server finds speech in a recording.", tmp_path / "speech.wav")
    found = httpx.post(
        served.url + "/v1/models/silero-vad/predict",
        files={"audio": ("speech.wav", speech.read_bytes(), "audio/wav")},
        timeout=60,
    )
    assert found.status_code == 200, found.text
    segments = found.json()["result"]["speech"]
    assert segments and segments[0]["start"] < 0.5
    quiet = silence_and_noise(tmp_path / "quiet.wav", 2)
    silent = httpx.post(
        served.url + "/v1/models/silero-vad/predict",
        files={"audio": ("quiet.wav", quiet.read_bytes(), "audio/wav")},
    )
    assert silent.json()["result"]["speech"] == []


def test_access_log_has_one_json_line_per_request(served: Server) -> None:
    httpx.post(served.url + "/v1/models/minilm/predict?raw=0", json={"text": "logged"})
    entries = []
    for line in served.log().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    mine = [e for e in entries if e["path"] == "/v1/models/minilm/predict"]
    assert mine, served.log()[-2000:]
    last = mine[-1]
    assert last["method"] == "POST" and last["status"] == 200
    assert last["bytes_in"] > 0 and last["bytes_out"] > 0 and last["ms"] > 0
    assert last["client"].startswith("127.0.0.1:")
