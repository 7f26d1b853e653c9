"""The ``infer`` route served before the middleware stack (gpux/serve/infer_route.py) keeps every
guarantee of the stack: the token, the host check, the body limit before and while reading,
JSON errors with their status (a 500 raised again for the server's log), the request metric,
the access line; and clients get the same answers as through the stack (a request with an
``Origin`` header still takes it). In process, on Starlette's TestClient and the real app."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from gpux.serve import guards
from gpux.serve.app import ServedModel, create_app
from gpux.serve.policy import RequestPolicy
from tests.serve.echo import echo_models

URL = "/v2/models/echo/infer"
TOKEN = "s3cret"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], list[ServedModel]]:
    return echo_models(tmp_path_factory.mktemp("infer-route"))


class Stack:
    """Counts the requests that went through the middleware stack (its Guards)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = guards.Guards.__call__

        async def counted(self_: guards.Guards, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                self.calls += 1
            await original(self_, scope, receive, send)

        monkeypatch.setattr(guards.Guards, "__call__", counted)


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Stack:
    return Stack(monkeypatch)


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    """What the access log writes, from its default handler's stream."""
    from gpux.serve.access_log import ensure_handler

    ensure_handler()
    handler = logging.getLogger("gpux.access").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    lines = io.StringIO()
    previous = handler.setStream(lines)
    yield lines
    handler.setStream(previous)


def client_for(
    served: Callable[[], list[ServedModel]], token: str | None = None, **policy: Any
) -> Iterator[TestClient]:
    app = create_app(served(), token=token, policy=RequestPolicy(**policy))
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def client(served: Callable[[], list[ServedModel]]) -> Iterator[TestClient]:
    yield from client_for(served, token=TOKEN, max_body_bytes=4096)


def binary_request(values: np.ndarray) -> tuple[bytes, dict[str, str]]:
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
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
        "Authorization": f"Bearer {TOKEN}",
    }
    return header + values.tobytes(), headers


def requests_metric(client: TestClient, status: int, model: str = "echo") -> float:
    wanted = {f'model="{model}"', 'endpoint="infer"', f'status="{status}"'}
    for line in client.get("/metrics").text.splitlines():
        name, _, rest = line.partition("{")
        if name == "gpux_requests_total" and set(rest.partition("}")[0].split(",")) == wanted:
            return float(line.split()[-1])
    return 0.0


def test_binary_requests_take_the_route_and_round_trip(client: TestClient, stack: Stack) -> None:
    values = np.arange(5, dtype=np.float32)
    body, headers = binary_request(values)
    response = client.post(URL, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert stack.calls == 0  # answered before the middleware stack
    length = int(response.headers["inference-header-content-length"])
    assert response.headers["content-type"] == "application/octet-stream"
    assert int(response.headers["content-length"]) == len(response.content)
    np.testing.assert_array_equal(np.frombuffer(response.content[length:], np.float32), values)
    assert client.post("/v2/models/echo/versions/1/infer", content=body, headers=headers).is_success
    assert stack.calls == 0
    client.get("/v2/health/live")
    assert stack.calls == 1  # the other routes still take it


def test_answers_match_the_middleware_stack_s_byte_for_byte(
    client: TestClient, stack: Stack
) -> None:
    """A same-origin request (with ``Origin``) takes the stack: both answers are the same."""
    body, headers = binary_request(np.linspace(0, 1, 7, dtype=np.float32))
    cases = [
        (body, headers),
        (b'{"inputs": [', {**headers, "Content-Type": "application/json"}),  # 400
        (body, {**headers, "Content-Type": "text/plain"}),  # 415
        (body, {**headers, "Inference-Header-Content-Length": "x"}),  # 400
    ]
    for content, sent in cases:
        fast = client.post(URL, content=content, headers=sent)
        assert stack.calls == 0
        full = client.post(URL, content=content, headers={**sent, "Origin": "http://127.0.0.1"})
        assert stack.calls == 1
        stack.calls = 0
        assert fast.status_code == full.status_code
        assert fast.content == full.content
        shown = {k: v for k, v in fast.headers.items() if k != "date"}
        assert shown == {k: v for k, v in full.headers.items() if k != "date"}


def test_with_cors_origins_every_request_takes_the_stack(
    served: Callable[[], list[ServedModel]], stack: Stack
) -> None:
    """CORS answers and headers are the stack's job: a server with --cors-origin sends even
    requests without an Origin header through it (Starlette adds ``Vary: Origin`` to them)."""
    body, headers = binary_request(np.ones(2, np.float32))
    for client in client_for(served, token=TOKEN, cors_origins=("https://app.example",)):
        plain = client.post(URL, content=body, headers=headers)
        assert plain.status_code == 200 and stack.calls == 1
        assert "Origin" in plain.headers["vary"]
        site = client.post(URL, content=body, headers={**headers, "Origin": "https://app.example"})
        assert site.headers["access-control-allow-origin"] == "https://app.example"


def test_the_token_is_checked(client: TestClient) -> None:
    body, headers = binary_request(np.ones(2, np.float32))
    for wrong in ({}, {"Authorization": "Bearer nope"}):
        sent = {k: v for k, v in headers.items() if k != "Authorization"} | wrong
        refused = client.post(URL, content=body, headers=sent)
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == "Bearer"
        assert set(refused.json()) == {"error", "hint"}
    # Refused before routing: no request metric, as for every route behind Guards.
    assert requests_metric(client, 401) == 0


def test_a_foreign_host_is_refused(client: TestClient) -> None:
    body, headers = binary_request(np.ones(2, np.float32))
    refused = client.post(URL, content=body, headers={**headers, "Host": "evil.example"})
    assert refused.status_code == 421 and "evil.example" in refused.json()["error"]


def test_a_foreign_origin_is_refused(client: TestClient) -> None:
    body, headers = binary_request(np.ones(2, np.float32))
    refused = client.post(URL, content=body, headers={**headers, "Origin": "http://evil.example"})
    assert refused.status_code == 403 and "evil.example" in refused.json()["error"]


def test_the_body_limit_holds_before_and_while_reading(client: TestClient) -> None:
    body, headers = binary_request(np.ones(2000, np.float32))  # 8 KB > 4096
    declared = client.post(URL, content=body, headers=headers)
    assert declared.status_code == 413 and "limit" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield body[:3000]
        yield body[3000:]

    streamed = client.post(URL, content=chunks(), headers=headers)
    assert streamed.status_code == 413, streamed.text
    assert requests_metric(client, 413) == 1  # the streamed one was routed, then refused


def test_errors_are_json_with_their_status_and_counted(client: TestClient) -> None:
    body, headers = binary_request(np.ones(2, np.float32))
    unknown = client.post("/v2/models/nope/infer", content=body, headers=headers)
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    assert requests_metric(client, 404, model="") == 1  # unserved names under one label
    bad = client.post(URL, content=body[:-1], headers=headers)
    assert bad.status_code == 400 and set(bad.json()) == {"error", "hint"}
    assert requests_metric(client, 400) == 1
    before = requests_metric(client, 200)
    assert client.post(URL, content=body, headers=headers).status_code == 200
    assert requests_metric(client, 200) == before + 1
    assert 'gpux_inflight_requests{model="echo"} 0.0' in client.get("/metrics").text


def test_an_unexpected_failure_is_a_500_and_raised_for_the_log(
    served: Callable[[], list[ServedModel]],
) -> None:
    models = served()

    def broken(feed: Any) -> Any:
        raise RuntimeError("boom")

    models[0].model.run = broken  # type: ignore[method-assign]
    body, headers = binary_request(np.ones(2, np.float32))
    app = create_app(models, token=TOKEN)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        answer = client.post(URL, content=body, headers=headers)
        assert answer.status_code == 500
        assert answer.json()["error"] == "internal error: RuntimeError"
    with (
        TestClient(app, base_url="http://127.0.0.1") as client,
        pytest.raises(RuntimeError, match="boom"),
    ):
        client.post(URL, content=body, headers=headers)


def test_every_request_has_its_access_line(client: TestClient, access_lines: io.StringIO) -> None:
    body, headers = binary_request(np.ones(3, np.float32))
    answer = client.post(URL, content=body, headers=headers)
    client.post(URL, content=body, headers={"Authorization": "Bearer nope"})
    lines = [json.loads(line) for line in access_lines.getvalue().splitlines()]
    assert [(e["path"], e["status"]) for e in lines] == [(URL, 200), (URL, 401)]
    first = lines[0]
    assert list(first) == [
        "time",
        "client",
        "method",
        "path",
        "status",
        "ms",
        "bytes_in",
        "bytes_out",
    ]
    assert first["method"] == "POST" and first["ms"] > 0
    assert first["bytes_in"] == len(body) and first["bytes_out"] == len(answer.content)
    assert first["client"].startswith("testclient:")


def test_the_access_log_follows_the_logger_s_configuration(
    client: TestClient, access_lines: io.StringIO
) -> None:
    logger = logging.getLogger("gpux.access")
    body, headers = binary_request(np.ones(3, np.float32))
    logger.setLevel(logging.WARNING)
    try:
        client.post(URL, content=body, headers=headers)
    finally:
        logger.setLevel(logging.INFO)
    assert access_lines.getvalue() == ""  # off
    extra = io.StringIO()
    handler = logging.StreamHandler(extra)
    logger.addHandler(handler)
    try:
        client.post(URL, content=body, headers=headers)
    finally:
        logger.removeHandler(handler)
    # Both handlers got the line: with one of its own, the logger is used as configured.
    assert access_lines.getvalue() == extra.getvalue() and extra.getvalue().count("\n") == 1
