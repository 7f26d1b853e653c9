"""The header read timeout and the unread-body deadline hold on both HTTP parsers.

``gpux serve`` uses httptools when it is installed and h11 otherwise
(gpux/serve/connection.py); tests/serve/test_hardening.py checks the one a real server picks,
this module checks each, on uvicorn in a thread of this process with a tiny app.
"""

from __future__ import annotations

import select
import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gpux.serve.connection import timed_protocol
from gpux.serve.policy import RequestPolicy
from tests.serve.conftest import free_port

PROTOCOLS = {"httptools": HttpToolsProtocol, "h11": H11Protocol}
PATIENCE = 10.0  # the timeouts below are 0.5 s; a server that ignores them hits this


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers ``ok`` without reading the body (as a refusal would), or echoes its size and
    the number of messages it came in."""
    assert scope["type"] == "http"
    body = b"ok"
    if scope["path"] == "/read":
        size, messages, more = 0, 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            messages += 1
            more = message.get("more_body", False)
        body = f"{size} {messages}".encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module", params=["httptools", "h11"])
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    protocol = timed_protocol(RequestPolicy(header_timeout=0.5, body_timeout=0.5), request.param)
    assert issubclass(protocol, PROTOCOLS[request.param])
    chosen = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=chosen, http=protocol, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield chosen
    server.should_exit = True
    thread.join(10)


def read_until_closed(sock: socket.socket, drip: bytes = b"") -> bytes:
    """Everything the server sends until it closes; ``drip`` is sent every 0.1 s meanwhile."""
    received, deadline = b"", time.monotonic() + PATIENCE
    while True:
        assert time.monotonic() < deadline, f"the connection stayed open after {received!r}"
        if select.select([sock], [], [], 0.1)[0]:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk
        elif drip:
            try:
                sock.sendall(drip)
            except OSError:
                continue  # closed while sending: read what it said


def test_half_sent_headers_get_408_and_close(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        sent = read_until_closed(sock, drip=b"X-a: b\r\n")
    assert sent.startswith(b"HTTP/1.1 408 "), sent
    assert b"--header-timeout" in sent


def test_an_idle_connection_closes_without_a_word(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
        assert read_until_closed(sock) == b""


def test_the_second_request_on_a_connection_has_its_own_deadline(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
        sock.sendall(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        time.sleep(0.8)  # longer than the timeout: the first request's timer must be gone
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        sent = read_until_closed(sock, drip=b"X-a: b\r\n")
    first, _, rest = sent.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 ") and rest.startswith(b"3"), sent
    assert b"HTTP/1.1 408 " in rest, sent


def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    request = b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
        sock.sendall(request * 3 + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sent = read_until_closed(sock)
    assert sent.count(b"HTTP/1.1 200 ") == 4, sent
    assert sent.endswith(b"ok"), sent


def post_in_pieces(port: int, head: bytes, pieces: list[bytes]) -> tuple[int, int]:
    """The size and message count /read saw of a body sent in ``pieces``, a few ms apart (so
    that the server reads it in many chunks)."""
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
        sock.sendall(b"POST /read HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + head)
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.003)
        sent = read_until_closed(sock)
    assert sent.startswith(b"HTTP/1.1 200 "), sent
    size, messages = sent.partition(b"\r\n\r\n")[2].split()
    return int(size), int(messages)


def test_a_body_of_known_length_reaches_the_app_whole(
    port: int, request: pytest.FixtureRequest
) -> None:
    """httptools hands each chunk on by itself; bodies of up to 1 MiB are held and given to
    the application in one message (gpux/serve/connection_httptools.py). Larger or chunked
    bodies still stream, under uvicorn's flow control."""
    body = bytes(range(256)) * 2352  # 602 KB, a ResNet-50 image
    pieces = [body[i : i + 32768] for i in range(0, len(body), 32768)]
    head = b"Content-Length: %d\r\n\r\n" % len(body)
    size, messages = post_in_pieces(port, head, pieces)
    assert size == len(body)
    if request.node.callspec.params["port"] == "httptools":
        assert messages == 1
    large = [bytes(65536)] * 24  # 1.5 MiB
    size, messages = post_in_pieces(port, b"Content-Length: %d\r\n\r\n" % (65536 * 24), large)
    assert size == 65536 * 24 and messages > 1
    chunked = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]
    size, messages = post_in_pieces(port, b"Transfer-Encoding: chunked\r\n\r\n", chunked)
    assert size == len(body) and messages > 1


def test_an_unread_body_trickled_after_the_answer_is_cut_off(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        sent = read_until_closed(sock, drip=b" ")
    assert sent.startswith(b"HTTP/1.1 200 "), sent


def test_without_httptools_the_h11_protocol_is_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpux.serve.connection_httptools", None)  # import fails
    protocol = timed_protocol(RequestPolicy(header_timeout=7))
    assert issubclass(protocol, H11Protocol) and protocol.header_timeout == 7
    with pytest.raises(ImportError):
        timed_protocol(RequestPolicy(), "httptools")


def test_with_httptools_it_is_the_default() -> None:
    protocol = timed_protocol(RequestPolicy(body_timeout=3))
    assert issubclass(protocol, HttpToolsProtocol) and protocol.body_timeout == 3
