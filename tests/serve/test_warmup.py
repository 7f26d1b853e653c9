"""The warm-up holds readiness: a server listens (live) at once, but reports itself and its
model ready only once every preferred batch size has run (gpux/serve/warmup.py).

The warm-up runs on the model's own thread; here that thread is held by a task of the test
until the readiness answers were checked, so the order is certain, not a race against a fast
CPU."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import tritonclient.http as triton_http
import uvicorn

from tests.cli.expect import BoundCLI
from tests.serve.conftest import EXAMPLES, free_port

pytestmark = [pytest.mark.zoo, pytest.mark.slow]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> BoundCLI:
    cli = BoundCLI(tmp_path_factory.mktemp("warmup-home"))
    cli.ok("build", str(EXAMPLES / "minilm-embeddings"), "-q")
    return cli


@pytest.fixture
def held(home: BoundCLI) -> Iterator[tuple[str, threading.Event]]:
    """A real server on loopback whose model thread is busy until the event is set."""
    from gpux.serve.app import create_app
    from gpux.serve.load import load_served
    from gpux.store import Store

    (served,) = load_served(
        ["minilm:1.0"],
        "cpu",
        store=Store(home.home),
        overrides={"max_batch_size": 8, "preferred_batch_sizes": "2,8"},
    )
    gate = threading.Event()
    served.executor.submit(gate.wait, 60)  # the model's only thread (CPU) waits for the test
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app([served]), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield url, gate
    finally:
        gate.set()
        server.should_exit = True
        thread.join(30)


def test_readiness_waits_for_the_warm_up(held: tuple[str, threading.Event]) -> None:
    url, gate = held
    assert httpx.get(url + "/v2/health/live").status_code == 200  # listening, alive
    ready = httpx.get(url + "/v2/health/ready")
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "waiting": {"minilm": "warming up"}}
    model = httpx.get(url + "/v2/models/minilm/ready")
    assert model.status_code == 503 and model.json()["reason"] == "warming up"
    client = triton_http.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_live() and not client.is_server_ready()
    assert not client.is_model_ready("minilm")
    index = httpx.post(url + "/v2/repository/index").json()
    assert index == [{"name": "minilm", "version": "1", "state": "LOADING"}]

    gate.set()  # the warm-up runs now: batch 2, then 8
    deadline = time.monotonic() + 60
    while httpx.get(url + "/v2/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "the server never became ready"
        time.sleep(0.05)
    assert client.is_server_ready() and client.is_model_ready("minilm")
    assert httpx.post(url + "/v2/repository/index").json()[0]["state"] == "READY"
