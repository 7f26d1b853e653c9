"""Structured access logs: one JSON object per request on the ``gpux.access`` logger (stderr by
default), with the fields an operator filters on.

The line is formatted by hand and, while the logger has only its default handler, written to
that handler's stream directly: ``json.dumps`` of a dict and a trip through ``logging`` took
14 us a line, this takes 4 (docs/benchmarks.md, c=1). Reconfigure the logger (other handlers,
filters, a formatter, a level above INFO, ``disabled``) and lines go through ``logging`` as
before, or not at all.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("gpux.access")

_formatter = logging.Formatter("%(message)s")
_handler: logging.StreamHandler[Any] | None = None  # the default handler, once made


def ensure_handler() -> None:
    """The default handler (stderr, the bare message), unless the logger has handlers."""
    global _handler
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_formatter)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        _handler = handler


def line(
    client: tuple[str, int] | None,
    method: str | None,
    path: str | None,
    status: int,
    seconds: float,
    bytes_in: int,
    bytes_out: int,
) -> str:
    """The JSON object of one request, byte for byte what ``json.dumps(entry,
    separators=(",", ":"))`` wrote (ASCII, ``repr`` of the float)."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
    shown = _json_string(f"{client[0]}:{client[1]}") if client else "null"
    return (
        f'{{"time":"{stamp}","client":{shown},"method":{_text(method)},"path":{_text(path)},'
        f'"status":{status},"ms":{round(seconds * 1e3, 3)!r},"bytes_in":{bytes_in},'
        f'"bytes_out":{bytes_out}}}'
    )


def _text(value: str | None) -> str:
    return "null" if value is None else _json_string(value)


def write(text: str) -> None:
    """``text`` as one line of the access log, unless the logger is off for INFO."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _handler
    plain = (
        handler is not None
        and logger.handlers == [handler]
        and not logger.filters
        and not handler.filters
        and handler.formatter is _formatter
        and handler.level <= logging.INFO
    )
    if plain and handler is not None and handler.lock is not None:
        try:
            with handler.lock:  # as StreamHandler.emit: lines from other threads stay whole
                handler.stream.write(text + "\n")
                handler.stream.flush()
            return
        except (OSError, ValueError):  # a closed or broken stream: logging reports it
            pass
    logger.info(text)


def log_request(scope: Scope, status: int, started: float, bytes_in: int, bytes_out: int) -> None:
    """The line of an HTTP request that began at ``started`` (``time.perf_counter()``)."""
    if logger.isEnabledFor(logging.INFO):  # else not even formatted
        seconds = time.perf_counter() - started
        method, path = scope.get("method"), scope.get("path")
        write(line(scope.get("client"), method, path, status, seconds, bytes_in, bytes_out))


class AccessLog:
    """ASGI middleware: logs method, path, status, duration, sizes and the client address."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        ensure_handler()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent = 0
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            log_request(scope, status, started, received, sent)
