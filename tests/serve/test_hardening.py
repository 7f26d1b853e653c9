"""The attacks of issue #12 on a real ``gpux serve``, each answered as it should be now: unknown
model names do not grow ``/metrics`` (item 2), large bodies are parsed off the event loop (4),
multipart is bounded (5), DNS rebinding and blind cross-site requests are refused (8), slow
clients are cut off (10), unknown routes answer JSON, and the Bearer scheme is case-insensitive.

The servers that need no new flag start as they would have on the old main, so that each test
reproduces the attack there too."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.expect import BoundCLI, assert_failure
from tests.serve.conftest import EXAMPLES, Server, start_server, stop_server

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SENTENCE = {"text": "GPUX runs ONNX models on any GPU."}
# Bounds on waiting for the server, not assertions about its speed: a test that reaches one has
# already failed (the server held the connection, or never answered).
PATIENCE = 60.0


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> BoundCLI:
    cli = BoundCLI(tmp_path_factory.mktemp("hardening-home"))
    cli.ok("build", str(EXAMPLES / "minilm-embeddings"), "-q")
    return cli


def _server(home: BoundCLI, *args: str) -> Iterator[Server]:
    server = start_server(home, "minilm:1.0", "--backend", "cpu", *args)
    yield server
    assert stop_server(server) == 0, server.log()


@pytest.fixture(scope="module")
def plain(home: BoundCLI) -> Iterator[Server]:
    """Started as a user would, with the defaults: loopback, no token."""
    yield from _server(home)


@pytest.fixture(scope="module")
def tokened(home: BoundCLI) -> Iterator[Server]:
    yield from _server(home, "--token", TOKEN)


@pytest.fixture(scope="module")
def strict(home: BoundCLI) -> Iterator[Server]:
    """The new flags, with values small enough for a test to reach them."""
    yield from _server(
        home,
        "--max-body-mb", "1",
        "--max-form-parts", "4",
        "--header-timeout", "1",
        "--body-timeout", "1",
        "--allowed-host", "gpux.test",
        "--cors-origin", "http://app.test",
    )  # fmt: skip


def assert_error(response: httpx.Response, status: int, *fragments: str) -> dict[str, str]:
    """A refusal as every GPUX error looks: the status, JSON ``{error, hint}``, the fragments."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert set(body) == {"error", "hint"}, body
    text = body["error"] + "\n" + body["hint"]
    for fragment in fragments:
        assert fragment in text, body
    return body


# ------------------------------------------------------------------ item 2: /metrics cardinality
def metric_series(server: Server) -> set[str]:
    """Every series ``/metrics`` exposes, without the values."""
    text = httpx.get(server.url + "/metrics").text
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"}


def test_unknown_model_names_do_not_grow_metrics(tokened: Server) -> None:
    def infer(name: str, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{tokened.url}/v2/models/{name}/infer", json={}, headers=headers)

    # The first unknown name creates the one series that all unknown names share.
    assert infer("warm-up", AUTH).status_code == 404
    before = metric_series(tokened)
    names = [f"m-{uuid.uuid4().hex}" for _ in range(40)]
    for name in names:
        # The token is checked before routing: a stranger learns nothing about model names.
        assert_error(infer(name, {}), 401, "bearer token")
        assert_error(infer(name, AUTH), 404, name)
    after = metric_series(tokened)
    assert after == before
    assert not [series for series in after if "m-" in series]
    assert any('model="minilm"' in series for series in after)  # served models still count


def test_the_bearer_scheme_is_case_insensitive(tokened: Server) -> None:
    for scheme in ("bearer", "BEARER", "Bearer"):
        response = httpx.get(
            tokened.url + "/v2/models/minilm", headers={"authorization": f"{scheme} {TOKEN}"}
        )
        assert response.status_code == 200, (scheme, response.text)
    wrong = httpx.get(tokened.url + "/v2/models/minilm", headers={"authorization": "Basic x"})
    assert_error(wrong, 401, "Bearer")
    assert wrong.headers["www-authenticate"] == "Bearer"


# --------------------------------------------------------------- item 4: large bodies off the loop
def memory(server: Server, kind: str) -> int:
    """The server process's resident memory in bytes: ``VmRSS`` now, ``VmHWM`` at its peak."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(re.search(rf"{kind}:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def _unread_bytes(port: int, client_port: int) -> int:
    """Bytes of the connection ``client_port`` -> ``port`` that the server has not read yet
    (its receive queue) plus those the client has not delivered (its send queue)."""
    waiting = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
            send_queue, receive_queue = (int(q, 16) for q in fields[4].split(":"))
            if (local, remote) == (port, client_port):
                waiting += receive_queue
            elif (local, remote) == (client_port, port):
                waiting += send_queue
    return waiting


def test_health_answers_while_a_60_mb_json_body_is_parsed(plain: Server) -> None:
    """The health check must not wait for ``json.loads``, which holds the interpreter lock for
    its whole run even on a worker thread (gpux/serve/parsing.py). Compared as a share of the
    request's own time, not in seconds, so that a slow machine does not change the verdict:
    parsed on a thread (GPUX_PARSE_PROCESSES=0) a check waited 3.64 s of a 3.77 s request; in
    the parse process the slowest waited 60 ms of 3.62 s."""
    # 60 MB of JSON: 30 million token ids, all parsed and range-checked before the request fails
    # on its unknown extra input (never reaching the model).
    count = 30_000_000
    ids = b'{"name": "input_ids", "shape": [1, %d], "datatype": "INT64", "data": [%s1]}' % (
        count,
        b"1," * (count - 1),
    )
    extra = b'{"name": "not-an-input", "shape": [1], "datatype": "INT64", "data": [1]}'
    body = b'{"inputs": [' + ids + b", " + extra + b"]}"
    del ids
    head = (
        b"POST /v2/models/minilm/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    before = memory(plain, "VmRSS")
    with socket.create_connection(("127.0.0.1", plain.port), timeout=PATIENCE) as big:
        big.sendall(head + body)
        del body
        # Wait until the server has read every byte, so that it is parsing now: the health
        # check must not slip in while the server is still reading the body.
        client_port = big.getsockname()[1]
        deadline = time.monotonic() + PATIENCE
        while _unread_bytes(plain.port, client_port):
            assert time.monotonic() < deadline, "the server did not read the body"
            time.sleep(0.01)
        read, worst, checks = time.monotonic(), 0.0, 0
        while not select.select([big], [], [], 0)[0]:  # health checks until it is answered
            asked = time.monotonic()
            live = httpx.get(plain.url + "/v2/health/live", timeout=PATIENCE)
            assert live.status_code == 200
            worst, checks = max(worst, time.monotonic() - asked), checks + 1
            time.sleep(0.01)
        answer = b""
        while b"not-an-input" not in answer:  # the error names the unknown input
            chunk = big.recv(65536)
            assert chunk, f"the server closed the connection after {answer!r}"
            answer += chunk
        took = time.monotonic() - read
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    print(f"\n{checks} health checks, the slowest {worst * 1e3:.0f} ms, in {took:.2f} s")
    assert checks > 1 and worst < took / 10, (
        f"a health check waited {worst:.2f} s of the large request's {took:.2f} s"
    )
    # The parsed body (about 500 MB of Python objects) is freed with the failed request, not
    # kept by a reference cycle until the cyclic collector happens to run. The bound leaves
    # room for what the allocator keeps of the body's own two copies (the chunks read and the
    # joined 60 MB): 124-128 MiB were kept without any leak, against ~500 MB with one.
    kept = memory(plain, "VmRSS") - before
    assert kept < 256 << 20, f"the server kept {kept >> 20} MiB after the request"


def _tokens_body(pad_to: int = 0) -> bytes:
    ids = [[101, 7592, 2088, 999, 102]]
    inputs = [
        {"name": name, "shape": [1, 5], "datatype": "INT64", "data": data}
        for name, data in (
            ("input_ids", ids),
            ("attention_mask", [[1] * 5]),
            ("token_type_ids", [[0] * 5]),
        )
    ]
    body = json.dumps({"inputs": inputs}).encode()
    return body + b" " * max(0, pad_to - len(body))  # JSON allows trailing whitespace


def test_a_json_body_parsed_in_the_parse_process_gives_the_same_answer(plain: Server) -> None:
    small = httpx.post(plain.url + "/v2/models/minilm/infer", content=_tokens_body())
    large = httpx.post(  # over gpux/serve/parsing.py's PROCESS_BYTES (4 MiB)
        plain.url + "/v2/models/minilm/infer", content=_tokens_body(5 << 20), timeout=PATIENCE
    )
    assert small.status_code == large.status_code == 200, large.text
    assert large.json()["outputs"] == small.json()["outputs"]
    bad = _tokens_body(5 << 20).replace(b'"INT64"', b'"FP32"', 1)
    refused = httpx.post(plain.url + "/v2/models/minilm/infer", content=bad, timeout=PATIENCE)
    assert refused.status_code == 400
    assert "datatype FP32, but the model expects INT64" in refused.json()["error"]


@pytest.mark.parametrize(
    "variable", ["GPUX_PARSE_PROCESSES", "GPUX_MALLOC_ARENAS", "GPUX_SWITCH_INTERVAL_US"]
)
def test_a_server_setting_that_is_not_a_count_is_refused_before_serving(
    home: BoundCLI, variable: str
) -> None:
    result = home("serve", "minilm:1.0", "--port", "0", env={variable: "two"}, timeout=PATIENCE)
    assert_failure(result, 2, f"{variable}='two' is not a whole number", "unset it")


def _descendants(pid: int) -> dict[int, str]:
    """Processes below ``pid`` (children and theirs), with their state letter."""
    parents: dict[int, tuple[int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended while we looked
            continue
        state, ppid = text.rsplit(")", 1)[1].split()[:2]
        parents[int(stat.parent.name)] = (int(ppid), state)
    found: dict[int, str] = {}
    frontier = {pid}
    while frontier:
        frontier = {p for p, (ppid, _) in parents.items() if ppid in frontier}
        found.update({p: parents[p][1] for p in frontier})
    return found


def test_a_parse_process_killed_mid_parse_gives_503_and_the_next_body_gets_a_new_one(
    plain: Server,
) -> None:
    """What the kernel's out-of-memory killer would do to a parse process: the request gets a
    503 that says so, the server stays up, and the next large body is parsed again."""
    count = 30_000_000
    body = b'{"inputs": [{"name": "input_ids", "shape": [1, %d], "datatype": "INT64", ' % count
    body += b'"data": [%s1]}]}' % (b"1," * (count - 1))
    with socket.create_connection(("127.0.0.1", plain.port), timeout=PATIENCE) as big:
        big.sendall(
            b"POST /v2/models/minilm/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        del body
        deadline, killed = time.monotonic() + PATIENCE, None
        while killed is None:  # the parse process: the busy one the fork server made
            assert time.monotonic() < deadline, "no parse process started"
            before = set(_descendants(plain.process.pid))
            time.sleep(0.05)
            for pid, state in _descendants(plain.process.pid).items():
                if state == "R" and pid in before and _parent(pid) != plain.process.pid:
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = big.recv(65536)
            assert chunk, f"the server closed the connection after {answer!r}"
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert b"stopped before it finished" in answer
    again = httpx.post(
        plain.url + "/v2/models/minilm/infer", content=_tokens_body(5 << 20), timeout=PATIENCE
    )
    assert again.status_code == 200, again.text
    assert plain.process.poll() is None


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


# ------------------------------------------------------------------- item 5: bounded multipart
@pytest.fixture(scope="module")
def uploads(home: BoundCLI) -> Iterator[Server]:
    """A server of its own: the test reads its peak memory."""
    yield from _server(home)


def multipart(parts: list[tuple[str, bytes]], boundary: str = "gpux-test") -> bytes:
    lines = b""
    for name, value in parts:
        lines += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value
            + b"\r\n"
        )
    return lines + f"--{boundary}--\r\n".encode()


def test_a_200_mb_file_part_gets_413_without_being_read_into_memory(uploads: Server) -> None:
    boundary = "gpux-test"
    size, piece = 200 << 20, b"a" * (1 << 20)

    def streamed() -> Iterator[bytes]:  # chunked: no Content-Length to refuse it up front
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="text"; '
            f'filename="big.txt"\r\nContent-Type: text/plain\r\n\r\n'
        ).encode()
        for _ in range(size // len(piece)):
            yield piece
        yield f"\r\n--{boundary}--\r\n".encode()

    before = memory(uploads, "VmHWM")
    response = httpx.post(
        uploads.url + "/predict",
        content=streamed(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=PATIENCE,
    )
    assert_error(response, 413, "64 MiB", "--max-body-mb")
    grown = memory(uploads, "VmHWM") - before
    assert grown < 32 << 20, f"the server's peak memory grew by {grown >> 20} MiB"
    assert httpx.post(uploads.url + "/predict", json=SENTENCE).status_code == 200


def test_too_many_form_parts_get_413(uploads: Server) -> None:
    parts = [(f"field{i}", b"x") for i in range(65)]  # the default allows 64
    response = httpx.post(
        uploads.url + "/predict",
        content=multipart(parts),
        headers={"Content-Type": "multipart/form-data; boundary=gpux-test"},
    )
    assert_error(response, 413, "Too many fields", "--max-form-parts")


def test_the_body_limit_holds_on_multipart_and_json_alike(strict: Server) -> None:
    big = b"a" * (2 << 20)  # over --max-body-mb 1
    form = httpx.post(strict.url + "/predict", files={"text": ("big.txt", big)})
    assert_error(form, 413, "1 MiB", "--max-body-mb")
    chunked = httpx.post(
        strict.url + "/predict",
        content=iter([b'{"text": "', big, b'"}']),
        headers={"Content-Type": "application/json"},
    )
    assert_error(chunked, 413, "1 MiB")
    parts = [(f"field{i}", b"x") for i in range(5)]  # over --max-form-parts 4
    many = httpx.post(
        strict.url + "/predict",
        content=multipart(parts),
        headers={"Content-Type": "multipart/form-data; boundary=gpux-test"},
    )
    assert_error(many, 413, "--max-form-parts")
    files = httpx.post(strict.url + "/predict", files={"text": ("one.txt", b"hello there")})
    assert files.status_code == 200, files.text


# ----------------------------------------------------- item 8: DNS rebinding, cross-site requests
def test_a_loopback_server_refuses_foreign_host_names(plain: Server) -> None:
    response = httpx.get(plain.url + "/v2/health/ready", headers={"Host": "evil.example"})
    assert_error(response, 421, "evil.example", "--allowed-host evil.example")
    for host in ("localhost", f"localhost:{plain.port}", "127.0.0.1", "[::1]:80"):
        answer = httpx.get(plain.url + "/v2/health/ready", headers={"Host": host})
        assert answer.status_code == 200, (host, answer.text)


def test_allowed_hosts_are_answered(strict: Server) -> None:
    answer = httpx.get(strict.url + "/v2/health/ready", headers={"Host": "GPUX.test:8080"})
    assert answer.status_code == 200, answer.text
    other = httpx.get(strict.url + "/v2/health/ready", headers={"Host": "evil.example"})
    assert_error(other, 421, "evil.example")


def test_json_routes_refuse_what_a_form_can_send_cross_site(plain: Server) -> None:
    text = json.dumps(SENTENCE)
    for route in ("/predict", "/v1/models/minilm/predict", "/v2/models/minilm/infer"):
        for media in ("text/plain", "application/x-www-form-urlencoded"):
            response = httpx.post(plain.url + route, content=text, headers={"Content-Type": media})
            assert_error(response, 415, f"Content-Type '{media}'", "application/json")
    sent = httpx.post(
        plain.url + "/predict", content=text, headers={"Content-Type": "application/json"}
    )
    assert sent.status_code == 200, sent.text


def test_pages_of_other_sites_are_refused_and_get_no_cors_headers(plain: Server) -> None:
    foreign = {"Origin": "http://evil.example"}
    response = httpx.post(plain.url + "/predict", json=SENTENCE, headers=foreign)
    assert_error(response, 403, "http://evil.example", "--cors-origin http://evil.example")
    assert "access-control-allow-origin" not in response.headers
    assert_error(httpx.get(plain.url + "/v2", headers=foreign), 403)
    preflight = httpx.options(
        plain.url + "/predict",
        headers={**foreign, "Access-Control-Request-Method": "POST"},
    )
    assert not [h for h in preflight.headers if h.startswith("access-control-")]
    # The server's own pages (the playground) send their own origin.
    own = httpx.post(plain.url + "/predict", json=SENTENCE, headers={"Origin": plain.url})
    assert own.status_code == 200, own.text


def test_cors_origin_lets_that_site_call_the_api(strict: Server) -> None:
    site = {"Origin": "http://app.test"}
    preflight = httpx.options(
        strict.url + "/predict",
        headers={
            **site,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == "http://app.test"
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    response = httpx.post(strict.url + "/predict", json=SENTENCE, headers=site)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "http://app.test"
    other = httpx.post(strict.url + "/predict", json=SENTENCE, headers={"Origin": "http://x.test"})
    assert_error(other, 403, "http://x.test")


# ---------------------------------------------------------------------------- item 10: slowloris
def _trickle(server: Server, start: bytes, drip: bytes) -> bytes:
    """Send ``start``, then ``drip`` every 0.2 s until the server answers or closes; return
    everything it sent before closing."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE) as sock:
        sock.sendall(start)
        deadline = time.monotonic() + PATIENCE
        while not select.select([sock], [], [], 0.2)[0]:
            assert time.monotonic() < deadline, "the server held a half-sent request"
            try:
                sock.sendall(drip)
            except OSError:  # closed while we were sending: read what it said
                break
        received = b""
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                # Closed with our unread drips in its buffer: the kernel resets rather than
                # ends the connection. Closed all the same.
                return received
            if not chunk:
                return received
            received += chunk
        raise AssertionError(f"the connection stayed open after {received!r}")


def test_half_sent_headers_are_cut_off(strict: Server) -> None:
    sent = _trickle(strict, b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"X-a: b\r\n")
    head, _, body = sent.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), sent
    assert b"--header-timeout" in body


def test_an_idle_connection_is_closed(strict: Server) -> None:
    with socket.create_connection(("127.0.0.1", strict.port), timeout=PATIENCE) as sock:
        assert sock.recv(1) == b""  # closed without a word: no request was started


def test_a_slow_body_gets_408_and_the_connection_closes(strict: Server) -> None:
    start = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    sent = _trickle(strict, start, b" ")
    head, _, body = sent.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), sent
    assert b"connection: close" in head.lower()
    assert b"--body-timeout" in body
    assert httpx.get(strict.url + "/v2/health/live").status_code == 200


def test_an_unread_body_trickled_after_the_answer_is_cut_off(strict: Server) -> None:
    with socket.create_connection(("127.0.0.1", strict.port), timeout=PATIENCE) as sock:
        # Answered (405) without its body being read; the body then keeps coming, slowly.
        sock.sendall(
            b"POST /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n"
        )
        deadline = time.monotonic() + PATIENCE
        received = b""
        while True:
            assert time.monotonic() < deadline, f"the connection stayed open after {received!r}"
            if select.select([sock], [], [], 0.2)[0]:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                received += chunk
            try:
                sock.sendall(b" ")
            except OSError:
                break
    assert received.startswith(b"HTTP/1.1 405 "), received


# ------------------------------------------------------------ item 9: routes answer JSON errors
def test_unknown_routes_and_wrong_methods_answer_json(plain: Server) -> None:
    assert_error(httpx.get(plain.url + "/no/such/route"), 404, "/no/such/route", "/docs")
    wrong = httpx.get(plain.url + "/v2/models/minilm/infer")
    assert_error(wrong, 405, "GET", "POST")
    assert wrong.headers["allow"] == "POST"
