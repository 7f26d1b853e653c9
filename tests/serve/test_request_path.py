"""The request path as clients see it, in process (Starlette's TestClient on the real app): gzip
only when asked and large enough, JSON refusals as 400s, binary tensors exact both ways."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from gpux.cli.serve import _policy_options
from gpux.serve import protocol
from gpux.serve.app import ServedModel, create_app
from gpux.serve.policy import RequestPolicy
from tests.serve.echo import echo_models

URL = "/v2/models/echo/infer"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], list[ServedModel]]:
    return echo_models(tmp_path_factory.mktemp("request-path"))


def client_for(served: Callable[[], list[ServedModel]], **policy: Any) -> Iterator[TestClient]:
    app = create_app(served(), policy=RequestPolicy(**policy))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture(scope="module")
def client(served: Callable[[], list[ServedModel]]) -> Iterator[TestClient]:
    yield from client_for(served, gzip_min_bytes=8 * 1024)


def json_request(values: list[float]) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [len(values)], "datatype": "FP32", "data": values}]}


@pytest.mark.parametrize(
    ("count", "accept", "compressed"),
    [
        (4000, "gzip", True),  # ~20 KB of JSON: over the 8 KiB floor
        (100, "gzip", False),  # under it
        (4000, "identity", False),  # not asked for
        (4000, "br, gzip;q=0.5", True),
    ],
)
def test_answers_are_compressed_only_when_asked_and_large(
    client: TestClient, count: int, accept: str, compressed: bool
) -> None:
    values = [float(i) for i in range(count)]
    response = client.post(URL, json=json_request(values), headers={"Accept-Encoding": accept})
    assert response.status_code == 200, response.text
    assert (response.headers.get("content-encoding") == "gzip") is compressed
    assert response.json()["outputs"][0]["data"] == values  # inflated by the client
    if compressed:
        assert response.headers["vary"] == "Accept-Encoding"
        assert int(response.headers["content-length"]) < len(json.dumps(values))


def test_by_default_answers_are_not_compressed(served: Callable[[], list[ServedModel]]) -> None:
    for client in client_for(served):
        body = json_request([0.5] * 40000)  # ~160 KB of JSON
        large = client.post(URL, json=body, headers={"Accept-Encoding": "gzip"})
        assert large.status_code == 200 and "content-encoding" not in large.headers


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"inputs": [', "not valid JSON"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [NaN]}]}', "NaN"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1e39]}]}',
            "too large for float32",
        ),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["\\ud800"]}]}', ""),
    ],
)
def test_json_mistakes_are_400s_with_a_json_error(
    client: TestClient, body: bytes, fragment: str
) -> None:
    response = client.post(URL, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()
    assert set(error) == {"error", "hint"} and fragment in error["error"], error


def test_unicode_ids_and_big_answers_come_back_as_sent(client: TestClient) -> None:
    values = np.random.default_rng(0).standard_normal(3000).astype(np.float32)
    body = {**json_request(values.tolist()), "id": "été-😀"}
    answer = client.post(URL, json=body).json()
    assert answer["id"] == "été-😀"
    np.testing.assert_array_equal(np.array(answer["outputs"][0]["data"], np.float32), values)


@pytest.mark.parametrize("accept", ["gzip", "identity"])  # one compressed body, or parts
@pytest.mark.parametrize("count", [150_528, 1, 0])  # 602 KB (a ResNet-50 image), one, none
def test_binary_tensors_round_trip_exactly(client: TestClient, count: int, accept: str) -> None:
    values = np.random.default_rng(1).standard_normal(count).astype(np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [values.size],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": values.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    response = client.post(
        URL,
        content=header + values.tobytes(),
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
            "Accept-Encoding": accept,
        },
    )
    assert response.status_code == 200, response.text
    compressed = accept == "gzip" and count * 4 >= 8 * 1024
    assert (response.headers.get("content-encoding") == "gzip") is compressed
    if not compressed:
        assert int(response.headers["content-length"]) == len(response.content)
    length = int(response.headers["inference-header-content-length"])
    answer = json.loads(response.content[:length])
    assert answer["outputs"][0]["parameters"]["binary_data_size"] == values.nbytes
    np.testing.assert_array_equal(np.frombuffer(response.content[length:], np.float32), values)


def test_gzip_requests_are_still_inflated_within_the_limit(
    served: Callable[[], list[ServedModel]],
) -> None:
    for client in client_for(served, max_body_bytes=64 * 1024):
        small = gzip.compress(json.dumps(json_request([1.0] * 100)).encode())
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        assert client.post(URL, content=small, headers=headers).status_code == 200
        bomb = gzip.compress(json.dumps(json_request([0.0] * 100_000)).encode())
        assert len(bomb) < 64 * 1024
        refused = client.post(URL, content=bomb, headers=headers)
        assert refused.status_code == 413, refused.text


def test_a_detached_server_gets_the_same_gzip_floor() -> None:
    assert "--gzip-min-kb=64.0" in _policy_options(RequestPolicy(gzip_min_bytes=64 << 10), 64)
    assert not any("gzip" in flag for flag in _policy_options(RequestPolicy(), 64))


def test_binary_bodies_are_decoded_on_the_loop_unless_they_may_hold_bytes() -> None:
    """Binary tensors become views of the body (no work): only the JSON header counts, unless
    it could name BYTES, whose elements are unpacked one by one (then the whole body)."""
    tensors = b"\0" * 1_000_000
    plain = b'{"inputs": [{"name": "x", "datatype": "FP32"}]}'
    assert protocol.decode_cost(plain + tensors, len(plain)) == len(plain)
    for header in (b'{"datatype": "BYTES"}', b'{"datatype": "bytes"}', b'{"d": "\\u0042YTES"}'):
        assert protocol.decode_cost(header + tensors, len(header)) == len(header) + len(tensors)
    assert protocol.decode_cost(plain, None) == len(plain)  # JSON alone
