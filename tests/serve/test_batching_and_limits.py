"""Dynamic batching under concurrent clients, and the limits that keep a server up: a bounded
queue (503 + Retry-After), a per-request timeout (504), a body limit (413), a bearer token."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.cli.expect import BoundCLI
from tests.serve.conftest import EXAMPLES, Server, start_server, stop_server

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

SENTENCES = [
    f"sentence number {i} about {topic}"
    for i, topic in enumerate(
        ["cats", "the stock market", "guitars", "rain", "football", "bread", "rockets", "tea"] * 3
    )
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> BoundCLI:
    cli = BoundCLI(tmp_path_factory.mktemp("home"))
    for example in ("minilm-embeddings", "document-orientation"):
        cli.ok("build", str(EXAMPLES / example), "-q")
    return cli


@pytest.fixture(scope="module")
def batching(home: BoundCLI) -> Iterator[Server]:
    server = start_server(
        home,
        "minilm:1.0",
        "--backend",
        "cpu",
        "--max-batch-size",
        "16",
        "--max-batch-delay-ms",
        "100",
        "--token",
        "s3cret",
    )
    yield server
    assert stop_server(server) == 0


AUTH = {"Authorization": "Bearer s3cret"}


def tensors(text_ids: list[int]) -> dict[str, object]:
    n = len(text_ids)
    return {
        "inputs": [
            {"name": "input_ids", "shape": [1, n], "datatype": "INT64", "data": text_ids},
            {"name": "attention_mask", "shape": [1, n], "datatype": "INT64", "data": [1] * n},
            {"name": "token_type_ids", "shape": [1, n], "datatype": "INT64", "data": [0] * n},
        ]
    }


def batch_sizes(server: Server) -> tuple[float, float]:
    text = httpx.get(server.url + "/metrics").text
    total = float(re.search(r'gpux_batch_size_sum\{model="minilm"\} (\S+)', text).group(1))  # type: ignore[union-attr]
    calls = float(re.search(r'gpux_batch_size_count\{model="minilm"\} (\S+)', text).group(1))  # type: ignore[union-attr]
    return total, calls


def infer_at_once(
    server: Server, requests: list[list[int]], timeout: float
) -> list[httpx.Response]:
    """Every request's ``infer`` answer, all sent at once (one thread each)."""
    with ThreadPoolExecutor(len(requests)) as pool:
        return list(
            pool.map(
                lambda ids: httpx.post(
                    server.url + "/v2/models/minilm/infer",
                    json=tensors(ids),
                    headers=AUTH,
                    timeout=timeout,
                ),
                requests,
            )
        )


def test_concurrent_infer_requests_share_batches_and_get_their_own_rows(batching: Server) -> None:
    rng = np.random.default_rng(0)
    requests = [[101, *rng.integers(1000, 20000, 6).tolist(), 102] for _ in range(24)]
    alone = [
        httpx.post(batching.url + "/v2/models/minilm/infer", json=tensors(ids), headers=AUTH).json()
        for ids in requests[:4]
    ]
    before = batch_sizes(batching)
    answers = [answer.json() for answer in infer_at_once(batching, requests, timeout=30)]
    after = batch_sizes(batching)
    rows, calls = after[0] - before[0], after[1] - before[1]
    assert rows == 24 and calls < 24, f"{rows} rows in {calls} model calls: no batch formed"
    for answer, single in zip(answers[:4], alone, strict=True):
        ours = np.array(answer["outputs"][0]["data"])
        np.testing.assert_allclose(ours, np.array(single["outputs"][0]["data"]), atol=1e-5)
    assert all(a["outputs"][0]["shape"] == [1, 8, 384] for a in answers)


def test_concurrent_requests_of_two_lengths_are_all_answered_with_their_own_rows(
    batching: Server,
) -> None:
    """Texts of different lengths queue together: each batch takes one length and steps over
    the other. A batch once lost its requests when it stepped over one (a request compared by
    value, numpy tensors raising ValueError), and its callers waited out the timeout."""
    rng = np.random.default_rng(1)
    requests = [
        [101, *rng.integers(1000, 20000, 6 if i % 2 else 10).tolist(), 102] for i in range(24)
    ]
    alone = {
        len(ids): httpx.post(
            batching.url + "/v2/models/minilm/infer", json=tensors(ids), headers=AUTH
        ).json()
        for ids in requests[:2]
    }
    # A timeout under the server's 30 s: a lost request fails here.
    answers = infer_at_once(batching, requests, timeout=20)
    assert [a.status_code for a in answers] == [200] * 24
    for ids, answer in zip(requests, answers, strict=True):
        assert answer.json()["outputs"][0]["shape"] == [1, len(ids), 384]
    for ids, answer in zip(requests[:2], answers[:2], strict=True):
        np.testing.assert_allclose(
            np.array(answer.json()["outputs"][0]["data"]),
            np.array(alone[len(ids)]["outputs"][0]["data"]),
            atol=1e-5,
        )


def test_concurrent_predict_requests_are_padded_together_and_answered_right(
    batching: Server,
) -> None:
    single = {
        s: httpx.post(batching.url + "/predict", json={"text": s}, headers=AUTH).json()["result"]
        for s in SENTENCES[:3]
    }
    with ThreadPoolExecutor(len(SENTENCES)) as pool:
        answers = list(
            pool.map(
                lambda s: httpx.post(
                    batching.url + "/predict", json={"text": s}, headers=AUTH, timeout=30
                ).json(),
                SENTENCES,
            )
        )
    for sentence, answer in zip(SENTENCES[:3], answers[:3], strict=True):
        np.testing.assert_allclose(
            answer["result"]["embedding"], single[sentence]["embedding"], atol=1e-5
        )
    assert len({tuple(np.round(a["result"]["embedding"][:4], 5)) for a in answers}) == len(
        SENTENCES
    )


def test_token_is_required_but_health_stays_open(batching: Server) -> None:
    assert httpx.get(batching.url + "/v2/health/ready").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        response = httpx.post(batching.url + "/predict", json={"text": "x"}, headers=headers)
        assert response.status_code == 401
        assert "bearer token" in response.json()["error"]


def send_heavy(server: Server) -> httpx.Response:
    """A 32-image request (binary tensors): tens of ms of work on this CPU."""
    heavy = np.zeros((32, 3, 224, 224), np.float32).tobytes()
    header = (
        b'{"inputs":[{"name":"x","shape":[32,3,224,224],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":%d}}]}' % len(heavy)
    )
    return httpx.post(
        server.url + "/v2/models/document-orientation/infer",
        content=header + heavy,
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=60,
    )


def test_queue_flood_gets_503_with_retry_after(home: BoundCLI) -> None:
    server = start_server(home, "document-orientation:1.0", "--backend", "cpu", "--max-queue", "1")
    try:
        with ThreadPoolExecutor(13) as pool:
            pending = [pool.submit(send_heavy, server) for _ in range(12)]
            # While the model is busy, health and metrics still answer at once: inference
            # runs off the event loop.
            started = time.perf_counter()
            assert httpx.get(server.url + "/v2/health/ready").status_code == 200
            assert httpx.get(server.url + "/metrics").status_code == 200
            # Generous: on 2 busy cores the event loop also reads the 19 MB bodies, and their
            # JSON is parsed on threads that hold the GIL while they parse (2.8 s once on a
            # loaded CI-like machine). An inference on the loop would add whole model calls.
            assert time.perf_counter() - started < 5.0
            assert not all(f.done() for f in pending), "the model was not busy"
            responses = [f.result() for f in pending]
        statuses = [r.status_code for r in responses]
        assert 503 in statuses and 200 in statuses, statuses
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.headers["Retry-After"] == "1"
        assert "requests waiting" in refused.json()["error"]
        assert httpx.get(server.url + "/v2/health/ready").status_code == 200
        assert send_heavy(server).status_code == 200  # and it serves again
    finally:
        assert stop_server(server) == 0


def test_a_slow_answer_gets_504_and_the_server_stays_up(home: BoundCLI) -> None:
    server = start_server(
        home, "document-orientation:1.0", "--backend", "cpu", "--timeout", "0.005"
    )
    try:
        response = send_heavy(server)
        assert response.status_code == 504, response.text
        assert "did not answer within 0.005 s" in response.json()["error"]
        assert httpx.get(server.url + "/v2/health/ready").status_code == 200
    finally:
        assert stop_server(server) == 0


def test_an_oversized_body_gets_413(batching: Server) -> None:
    response = httpx.post(
        batching.url + "/v2/models/minilm/infer", content=b"0" * (65 << 20), headers=AUTH
    )
    assert response.status_code == 413
    assert httpx.get(batching.url + "/v2/health/ready").status_code == 200


def test_preferred_batch_sizes_pad_batches_and_warm_before_ready(home: BoundCLI) -> None:
    server = start_server(
        home,
        "minilm:1.0",
        "--backend",
        "cpu",
        "--max-batch-size",
        "8",
        "--max-batch-delay-ms",
        "50",
        "--preferred-batch-sizes",
        "4,8",
    )
    try:
        # Ready (start_server waited for it) means warm: the line is logged as it becomes so.
        assert "model minilm ready: batch sizes 4, 8 warm" in server.log()
        rng = np.random.default_rng(1)
        requests = [[101, *rng.integers(1000, 20000, 6).tolist(), 102] for _ in range(11)]
        url = server.url + "/v2/models/minilm/infer"
        alone = httpx.post(url, json=tensors(requests[0]), timeout=30).json()
        with ThreadPoolExecutor(11) as pool:
            answers = list(
                pool.map(
                    lambda ids: httpx.post(url, json=tensors(ids), timeout=30).json(), requests
                )
            )
        assert all(a["outputs"][0]["shape"] == [1, 8, 384] for a in answers)  # no padding rows
        np.testing.assert_allclose(
            answers[0]["outputs"][0]["data"], alone["outputs"][0]["data"], atol=1e-5
        )
        metrics = httpx.get(server.url + "/metrics").text
        padding = re.search(r'gpux_batch_padding_rows_total\{model="minilm"\} (\S+)', metrics)
        assert padding is not None and float(padding.group(1)) > 0
        # Every model call ran 4 or 8 rows: nothing fell in the buckets of 1 and 2.
        small = re.search(r'gpux_batch_size_bucket\{le="2.0",model="minilm"\} (\S+)', metrics)
        assert small is not None and float(small.group(1)) == 0, metrics
        # Triton's statistics say the same: every call ran 4 or 8 rows; 12 real rows answered.
        (stats,) = httpx.get(server.url + "/v2/models/minilm/stats").json()["model_stats"]
        assert {b["batch_size"] for b in stats["batch_stats"]} <= {4, 8}, stats
        assert stats["inference_count"] == 12 and stats["inference_stats"]["success"]["count"] == 12
    finally:
        assert stop_server(server) == 0
