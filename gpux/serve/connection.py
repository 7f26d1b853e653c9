"""HTTP/1.1 connections with deadlines: uvicorn's protocols plus a header read timeout.

uvicorn bounds only idle keep-alive connections (``timeout_keep_alive``): a client that sends
half a request line and then a byte every few seconds holds its connection forever (slowloris).
Here a request's headers must be complete within ``header_timeout`` seconds of its first byte
(or of the connection opening), else the client gets 408 and the connection is closed. A body
that the application reads is bounded by :class:`gpux.serve.guards.Guards`; one it never reads
(answered early, e.g. 413) is drained for at most ``body_timeout`` seconds, then the connection
is closed.

Two parsers, one behaviour: httptools (C, llhttp; what ``uvicorn[standard]`` uses) when it is
installed, else h11 (pure Python). On the request path benchmark (benchmarks/request_path.py,
ResNet-50-sized binary bodies) httptools with uvloop cut the server's CPU time per request from
1.54 to 1.24 ms.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from gpux.serve.policy import RequestPolicy

PARSERS = ("auto", "httptools", "h11")


def timed_protocol(policy: RequestPolicy, parser: str = "auto") -> type[asyncio.Protocol]:
    """The protocol class to give ``uvicorn.Config(http=...)`` for ``policy``'s timeouts;
    ``parser`` "auto" is httptools when it can be imported, else h11."""
    base: type[asyncio.Protocol] = TimedH11Protocol
    settings: dict[str, Any] = {
        "header_timeout": policy.header_timeout,
        "body_timeout": policy.body_timeout,
    }
    if parser in ("auto", "httptools"):
        try:
            from gpux.serve.connection_httptools import WHOLE_BODY_BYTES, TimedHttpToolsProtocol
        except ImportError:
            if parser == "httptools":
                raise
        else:
            base = TimedHttpToolsProtocol
            # A body is held whole before the application reads it: never more than it may get.
            settings["whole_body_bytes"] = min(WHOLE_BODY_BYTES, policy.max_body_bytes)
    return type(base.__name__, (base,), settings)


def late_headers_answer(header_timeout: float) -> bytes:
    """The 408 sent to a client whose request headers did not arrive in time."""
    body = json.dumps(
        {
            "error": f"the request headers did not arrive within {header_timeout:g} s",
            "hint": "send the whole request at once; on a slow link start gpux serve "
            "with a larger --header-timeout",
        }
    ).encode()
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )


class DeadlineTimers:
    """What both timed protocols share: their two timers, cancelled when the connection ends
    (mixed in before uvicorn's protocol class, whose ``connection_lost`` runs after)."""

    _header_timer: asyncio.TimerHandle | None
    _drain_timer: asyncio.TimerHandle | None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None


class TimedH11Protocol(DeadlineTimers, H11Protocol):
    header_timeout: float = RequestPolicy.header_timeout
    body_timeout: float = RequestPolicy.body_timeout

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self._draining: object = None  # the request cycle whose unread body is being discarded

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._header_timer is None:
            # The first bytes of the next request on a kept-alive connection.
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        answered = self.cycle
        super().on_response_complete()  # may start the next pipelined request's cycle
        unread = self.cycle is answered and self.conn.their_state is h11.SEND_BODY
        if unread and not self.transport.is_closing():
            # Answered before its body was read: uvicorn discards the rest as it comes, for
            # as long as the client keeps sending. Give that a deadline too.
            self._draining = self.cycle
            self._drain_timer = self.loop.call_later(self.body_timeout, self._drain_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # part of a request came: say why it ends
            self.transport.write(late_headers_answer(self.header_timeout))
        self.transport.close()

    def _drain_late(self) -> None:
        self._drain_timer = None
        # Still the same request (not a later one on this connection), still sending.
        draining = self._draining is self.cycle and self.conn.their_state is h11.SEND_BODY
        if draining and not self.transport.is_closing():
            self.transport.close()
