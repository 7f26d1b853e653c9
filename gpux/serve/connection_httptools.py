"""The header read timeout and the unread-body deadline of gpux/serve/connection.py, on
uvicorn's httptools protocol (importing this module fails when httptools is not installed).

httptools reports a request in callbacks: ``on_message_begin`` (its first byte),
``on_headers_complete``, ``on_body``, ``on_message_complete``. Between a message's completion
(or the connection's opening) and the next ``on_headers_complete``, headers are awaited: that
span gets ``header_timeout`` from its first byte, as with h11.

A body of known length up to ``whole_body_bytes`` (1 MiB, or the body limit if smaller) reaches
the application as one ``http.request`` message, at ``on_message_complete``. uvicorn hands on
each ``on_body`` chunk (one per socket read) as a message of its own, pausing and resuming the
socket between them past 64 KiB: a 602 KB ResNet-50 image took 4 to 10 round trips through the
body reader and every middleware's ``receive``, and three copies (uvicorn's bytearray,
``bytes()`` of it, the join). Held here, it takes one join, or none for a body that came in one
chunk: the server's CPU per ResNet-50 request fell by 12-18% (docs/benchmarks.md). The socket
is not paused meanwhile: what is held is bounded by the size, as uvicorn's 64 KiB high-water
mark bounded it before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gpux.serve.connection import DeadlineTimers, late_headers_answer
from gpux.serve.policy import RequestPolicy

WHOLE_BODY_BYTES = 1 << 20


class TimedHttpToolsProtocol(DeadlineTimers, HttpToolsProtocol):
    header_timeout: float = RequestPolicy.header_timeout
    body_timeout: float = RequestPolicy.body_timeout
    whole_body_bytes: int = WHOLE_BODY_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self._body_parts: list[bytes] | None = None  # the current request's body, held whole
        self._awaiting_headers = True  # no request, or one whose headers are incomplete
        self._started = False  # a byte of the awaited request has come
        self._draining: object = None  # the request cycle whose unread body is being discarded

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            self._request_started()
        super().data_received(data)

    def on_message_begin(self) -> None:
        # Also for a request that starts in the chunk that ended the one before it.
        self._request_started()
        super().on_message_begin()

    def _request_started(self) -> None:
        self._started = True
        if self._header_timer is None:  # the next request on a kept-alive connection
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def on_headers_complete(self) -> None:
        # Here, not after data_received: the same chunk may end this request and begin the next.
        self._awaiting_headers = False
        self._cancel_header_timer()
        previous = self.cycle
        super().on_headers_complete()
        # No new cycle: an upgrade, whose bytes uvicorn handles.
        held = self.cycle is not previous and self._known_length() <= self.whole_body_bytes
        self._body_parts = [] if held else None

    def _known_length(self) -> int:
        """The body's Content-Length; past any limit when it has none (chunked)."""
        length = None
        for name, value in self.headers:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                return 1 << 62
        return int(length) if length is not None and length.isdigit() else 1 << 62

    def on_body(self, body: bytes) -> None:
        parts = self._body_parts
        if parts is None or self.cycle.response_complete:
            super().on_body(body)  # streamed with uvicorn's flow control, or discarded
        else:
            parts.append(body)

    def on_message_complete(self) -> None:
        parts, self._body_parts = self._body_parts, None
        if parts and not self.cycle.response_complete:
            # uvicorn's receive() passes bytes(cycle.body) on, which is the object itself when
            # it is already bytes: the body is not copied again.
            self.cycle.body = parts[0] if len(parts) == 1 else b"".join(parts)  # type: ignore[assignment]
        super().on_message_complete()
        self._awaiting_headers, self._started = True, False

    def on_response_complete(self) -> None:
        answered = self.cycle
        super().on_response_complete()  # may start the next pipelined request's cycle
        unread = self.cycle is answered and answered.more_body and not self._awaiting_headers
        if unread:
            self._body_parts = None  # the rest of the body is discarded as it comes
        if unread and not self.transport.is_closing():
            # Answered before its body was read: uvicorn discards the rest as it comes, for
            # as long as the client keeps sending. Give that a deadline too.
            self._draining = answered
            self._drain_timer = self.loop.call_later(self.body_timeout, self._drain_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._awaiting_headers:
            return
        if self._started:  # part of a request came: say why it ends
            self.transport.write(late_headers_answer(self.header_timeout))
        self.transport.close()

    def _drain_late(self) -> None:
        self._drain_timer = None
        # Still the same request (not a later one on this connection), still sending.
        cycle = self.cycle
        draining = self._draining is cycle and cycle.more_body and not self._awaiting_headers
        if draining and not self.transport.is_closing():
            self.transport.close()
