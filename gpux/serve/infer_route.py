"""``POST /v2/models/{m}[/versions/{v}]/infer``, the hot route, served before the middleware stack.

Each layer of the stack that every other route goes through (Starlette's error and exception
middleware, GPUX's access log and guards, the router, the request object) wraps every receive
and send of every request: for a MiniLM-sized binary request at c=1 those layers cost more than
reading, parsing, batching and encoding it (docs/benchmarks.md, "The infer route before the
middleware"). This route does what they do, once, in one coroutine:

* the refusals of :class:`~gpux.serve.guards.Guards` (host, token, declared body size), by the
  same ``RequestChecks``, and the body read through their ``bounded`` receive (size and time);
* errors as JSON with the status of their kind; anything unexpected a 500 that is then raised
  again, for uvicorn to log with its traceback, as Starlette's ServerErrorMiddleware does;
* the request metric of the other routes (only for requests that got past the guards), and the
  access log line (every request, refusals included).

A request with an ``Origin`` header (a browser's) and every request to a server with
``--cors-origin`` take the full stack: CORS answers and headers are its job, not this route's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gpux.errors import GPUXError
from gpux.serve import access_log, protocol
from gpux.serve.bodies import (
    JSON,
    OCTET_STREAM,
    accepted_media,
    gzipped,
    inflated,
    media_of,
    off_loop,
    wants_gzip,
)
from gpux.serve.guards import (
    HTTPError,
    RequestChecks,
    RequestPolicy,
    error_response,
    http_error_response,
)
from gpux.serve.inference import Inference, chosen_outputs, error_status, require_tensors
from gpux.serve.parsing import ParseProcesses

if TYPE_CHECKING:
    from gpux.serve.app import ServedModel

# Starlette's routes for the same paths match {model} and {version} as [^/]+.
INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")

MEDIA_HINT = (
    "send the request as application/json (or application/octet-stream with "
    "Inference-Header-Content-Length for binary tensors)"
)

RawHeaders = list[tuple[bytes, bytes]]


class InferRoute:
    """The ``infer`` route for the requests :meth:`takes` (the app sends the others through
    its stack, where the same work is done by :meth:`answer`)."""

    def __init__(
        self, core: Inference, parser: ParseProcesses, policy: RequestPolicy, checks: RequestChecks
    ) -> None:
        self.core, self.parser, self.policy, self.checks = core, parser, policy, checks
        self.enabled = not policy.cors_origins
        access_log.ensure_handler()  # this route may answer before the stack is built

    def takes(self, scope: Scope) -> tuple[re.Match[str], dict[bytes, bytes]] | None:
        """The path's model and version and the request's headers (the first of each name,
        as Starlette's ``Headers.get``), when this route answers the request."""
        if not self.enabled or scope["type"] != "http" or scope["method"] != "POST":
            return None
        path = INFER_PATH.fullmatch(scope["path"])
        if path is None or scope.get("root_path"):
            return None
        # Names in lower case, as ASGI servers give them and Starlette's Headers expects them.
        headers = dict(reversed(scope["headers"]))
        if b"origin" in headers:
            return None
        return path, headers

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        found: tuple[re.Match[str], dict[bytes, bytes]],
    ) -> None:
        path, headers = found
        started = time.perf_counter()
        status, received, sent = 500, 0, 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        try:
            failure: Exception | None = None
            try:
                self.checks.check_values(
                    scope["path"],
                    host=_text(headers.get(b"host")),
                    origin=None,  # a request with one took the full stack
                    authorization=_text(headers.get(b"authorization")),
                    content_length=_text(headers.get(b"content-length")),
                )
            except HTTPError as exc:  # refused: no request metric, as behind Guards
                response = http_error_response(exc)
                raw_headers, content = response.raw_headers, bytes(response.body)
                status = exc.status
            else:
                status, raw_headers, content, failure = await self._routed(
                    path, headers, self.checks.bounded(counted_receive)
                )
            await send({"type": "http.response.start", "status": status, "headers": raw_headers})
            await send({"type": "http.response.body", "body": content})
            sent = len(content)
        finally:
            access_log.log_request(scope, status, started, received, sent)
        if failure is not None:
            raise failure  # answered with a 500 already; uvicorn logs the traceback

    async def _routed(
        self, path: re.Match[str], headers: dict[bytes, bytes], receive: Receive
    ) -> tuple[int, RawHeaders, bytes, Exception | None]:
        """The answer (or the error) of a request past the guards, with its request metric."""
        started = time.perf_counter()
        status = 500
        try:
            served = self.core.find(path[1], path[2])

            async def read() -> bytes:
                body = await _read_body(receive)
                encoding = _text(headers.get(b"content-encoding")) or ""
                return await inflated(body, encoding, self.policy)

            raw_headers, content = await self.answer(
                served,
                content_type=_text(headers.get(b"content-type")) or "",
                read=read,
                header_length=_text(headers.get(protocol.HEADER_LENGTH.encode())),
                accept_encoding=_text(headers.get(b"accept-encoding")) or "",
            )
            status = 200
            return status, raw_headers, content, None
        except Exception as exc:
            status, message, hint = error_status(exc)
            if isinstance(exc, HTTPError):
                response = http_error_response(exc)
            else:
                response = error_response(status, message, hint)
            unexpected = None if isinstance(exc, HTTPError | GPUXError) else exc
            return status, response.raw_headers, bytes(response.body), unexpected
        finally:  # unserved names count under one label (gpux/serve/metrics.py)
            self.core.metrics.request(path[1], "infer", status, time.perf_counter() - started)

    async def answer(
        self,
        served: ServedModel,
        *,
        content_type: str,
        read: Callable[[], Awaitable[bytes]],
        header_length: str | None,
        accept_encoding: str,
    ) -> tuple[RawHeaders, bytes]:
        """An ``infer`` request's answer: its headers (as Starlette's ``Response`` writes them)
        and body. ``read``: the whole request body, inflated."""
        require_tensors(served)
        accepted_media(media_of(content_type), (JSON, OCTET_STREAM), MEDIA_HINT)
        body = await read()
        length = protocol.parse_header_length(header_length)
        if self.parser.takes(len(body), length):
            parsed, feed = await self.parser.parse(body, length, served.model.inputs)
        else:
            cost = protocol.decode_cost(body, length)  # binary tensors: views, no work
            parsed, feed = await off_loop(cost, _decode, body, length, served)
        outputs = await self.core.run_tensors(served, feed)
        size = protocol.encode_cost(parsed, outputs)
        minimum = self.policy.gzip_min_bytes
        return await off_loop(size, _encode, served, parsed, outputs, accept_encoding, minimum)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


async def _read_body(receive: Receive) -> bytes:
    """The whole body, as Starlette's ``Request.stream()`` reads it (a body that came whole,
    gpux/serve/connection_httptools.py, is the one message's bytes, not a copy)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _decode(
    body: bytes, header_length: int | None, served: ServedModel
) -> tuple[protocol.InferRequest, dict[str, Any]]:
    parsed = protocol.parse_request(body, header_length)
    return parsed, protocol.checked_feed(parsed, served.model.inputs)


def _encode(
    served: ServedModel,
    parsed: protocol.InferRequest,
    outputs: dict[str, Any],
    accept_encoding: str,
    gzip_min_bytes: int,
) -> tuple[RawHeaders, bytes]:
    outputs = chosen_outputs(served, parsed, outputs)
    content, header_length = protocol.encode_response(
        served.name, served.triton_version, parsed, outputs
    )
    media = JSON if header_length is None else OCTET_STREAM
    if wants_gzip(accept_encoding, len(content), gzip_min_bytes):
        headers = {} if header_length is None else {protocol.HEADER_LENGTH: str(header_length)}
        response = gzipped(Response(content, media_type=media, headers=headers))
        return response.raw_headers, bytes(response.body)
    # What Starlette's Response(content, media_type=media, headers=...) writes, in its order.
    raw_headers: RawHeaders = []
    if header_length is not None:
        raw_headers.append((protocol.HEADER_LENGTH.encode(), str(header_length).encode()))
    raw_headers.append((b"content-length", str(len(content)).encode()))
    raw_headers.append((b"content-type", media.encode()))
    return raw_headers, content


def as_response(raw_headers: RawHeaders, content: bytes) -> Response:
    """An answer of :meth:`InferRoute.answer` as a Starlette response (for the requests that
    take the middleware stack)."""
    response = Response(content)
    response.raw_headers = raw_headers
    return response
