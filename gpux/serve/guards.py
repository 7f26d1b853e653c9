"""What the server refuses before a handler runs: a foreign ``Host`` (DNS rebinding), a foreign
``Origin`` (blind cross-site requests), a missing token, a body over the limit or one that does
not arrive in time. Each refusal is a JSON error ``{"error", "hint"}`` with its status; on the
OpenAI routes (``/v1/chat/completions`` ...), OpenAI's shape ``{"error": {"message", "type",
"param", "code", "hint"}}``, which OpenAI's clients parse (:func:`error_response`).

Order, outermost first: ``AccessLog`` -> ``CORSMiddleware`` (only with ``--cors-origin``, so that
it answers preflights and adds its headers to refusals too) -> :class:`Guards` -> the routes.
``POST .../infer`` is answered before that stack (gpux/serve/infer_route.py) and makes the same
checks, with the same :class:`RequestChecks`. Header read timeouts live one level lower, in the
HTTP protocol (gpux/serve/connection.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpux.serve.policy import MIB, RequestPolicy, host_name, is_loopback

__all__ = [
    "MIB",
    "Guards",
    "HTTPError",
    "RequestChecks",
    "RequestPolicy",
    "error_response",
    "host_name",
    "http_error_response",
    "is_loopback",
    "openai_error",
    "too_large",
]


class HTTPError(Exception):
    """A request refused with ``status``; ``close`` also ends the connection (the rest of the
    request cannot be trusted to arrive)."""

    def __init__(
        self,
        status: int,
        message: str,
        hint: str | None = None,
        *,
        retry_after: int | None = None,
        close: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint
        self.retry_after, self.close = retry_after, close
        self.headers = headers or {}


def error_response(
    status: int,
    message: str,
    hint: str | None,
    headers: Mapping[str, str] | None = None,
    *,
    openai: bool = False,
    param: str | None = None,
) -> Response:
    """The error body: GPUX's ``{"error", "hint"}``, or OpenAI's with ``openai``."""
    body: dict[str, Any] = (
        openai_error(status, message, hint, param) if openai else {"error": message}
    )
    if hint and not openai:
        body["hint"] = hint
    return JSONResponse(body, status_code=status, headers=headers)


# OpenAI's error codes for the statuses GPUX answers with (its clients branch on status first).
_OPENAI_CODES = {
    401: "invalid_api_key",
    404: "not_found",
    408: "timeout",
    413: "request_too_large",
    415: "unsupported_media_type",
    503: "overloaded",
    504: "timeout",
}


def openai_error(
    status: int,
    message: str,
    hint: str | None,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI's API answers, with GPUX's
    ``hint`` beside them (clients ignore keys they do not know)."""
    error: dict[str, Any] = {
        "message": message,
        "type": "invalid_request_error" if status < 500 else "server_error",
        "param": param,
        "code": code or _OPENAI_CODES.get(status),
    }
    if hint:
        error["hint"] = hint
    return {"error": error}


def http_error_response(exc: HTTPError, *, openai: bool = False) -> Response:
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.close:
        headers["Connection"] = "close"
    return error_response(exc.status, exc.message, exc.hint, headers, openai=openai)


def too_large(limit: int) -> HTTPError:
    return HTTPError(
        413,
        f"the request body is over the server's limit of {_size(limit)}",
        "send less (e.g. fewer items per request), or start gpux serve with a larger --max-body-mb",
    )


def token_matches(header: str, token: str) -> bool:
    """``Authorization: Bearer TOKEN`` (the scheme in any case, RFC 7235), compared in constant
    time: both sides are hashed first, so neither the length nor a prefix leaks."""
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(
        hashlib.sha256(given.strip().encode()).digest(), hashlib.sha256(token.encode()).digest()
    )


class RequestChecks:
    """The checks of a :class:`RequestPolicy` (and the token), for :class:`Guards` and for the
    ``infer`` route that is served before the middleware (gpux/serve/infer_route.py).

    ``public(path)`` names the routes that need no token (health, metrics, the web pages);
    ``openai(path)`` the routes whose refusals take OpenAI's error shape.
    """

    def __init__(
        self,
        *,
        policy: RequestPolicy,
        token: str | None,
        public: Callable[[str], bool],
        openai: Callable[[str], bool] = lambda path: False,
    ) -> None:
        self.policy, self.token, self.public = policy, token, public
        self.openai = openai
        self.allowed_hosts = {h.lower().strip("[]") for h in policy.allowed_hosts}
        self._hosts_seen: dict[str, bool] = {}

    def check(self, scope: Scope) -> None:
        """The refusals that need only the request line and headers."""
        headers = Headers(scope=scope)
        self.check_values(
            scope["path"],
            host=headers.get("host"),
            origin=headers.get("origin"),
            authorization=headers.get("authorization"),
            content_length=headers.get("content-length"),
        )

    def check_values(
        self,
        path: str,
        *,
        host: str | None,
        origin: str | None,
        authorization: str | None,
        content_length: str | None,
    ) -> None:
        """:meth:`check` on header values already looked up (the first of each name, as
        Starlette's ``Headers.get``), for the ``infer`` route that skips this middleware
        (gpux/serve/infer_route.py)."""
        if self.policy.check_host and host is not None and not self.host_allowed(host):
            raise HTTPError(
                421,
                f"this server does not answer to the host name '{host_name(host)}'",
                "use http://127.0.0.1:PORT or http://localhost:PORT, or start gpux serve with "
                f"--allowed-host {host_name(host)}",
            )
        if origin is not None and not self.origin_allowed(origin, host):
            raise HTTPError(
                403,
                f"requests from pages of {origin} are refused",
                f"start gpux serve with --cors-origin {origin} to let that site call the API",
            )
        needs_token = self.token is not None and not self.public(path)
        if needs_token and not token_matches(authorization or "", self.token or ""):
            raise HTTPError(
                401,
                "missing or wrong bearer token",
                "send Authorization: Bearer TOKEN",
                headers={"WWW-Authenticate": "Bearer"},
            )
        declared = content_length or ""
        # ASCII digits only: "²".isdigit() is true, and int() refuses it.
        if declared.isascii() and declared.isdigit() and int(declared) > self.policy.max_body_bytes:
            raise too_large(self.policy.max_body_bytes)

    def host_allowed(self, host: str) -> bool:
        known = self._hosts_seen.get(host)
        if known is None:
            name = host_name(host)
            known = is_loopback(name) or name in self.allowed_hosts or "*" in self.allowed_hosts
            # Parsing the address took a few us of every request. Clients send a handful of
            # Host values; a client that sends a new one each time only fills this once.
            if len(self._hosts_seen) < 256:
                self._hosts_seen[host] = known
        return known

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        """The server's own pages (the playground) and the ``--cors-origin`` sites. Browsers send
        ``Origin`` with every cross-site POST, even those without a Content-Type (a Blob body),
        so this is what stops a page from driving the API through the user's browser."""
        if origin in self.policy.cors_origins or "*" in self.policy.cors_origins:
            return True
        if origin == "null":  # sandboxed frames, file: pages
            return False
        return host is not None and urlsplit(origin).netloc.lower() == host.strip().lower()

    def bounded(self, receive: Receive) -> Receive:
        """``receive`` that counts the body against the limit and gives it ``body_timeout``
        seconds in all: a client sending a byte now and then cannot hold a request open."""
        limit, loop = self.policy.max_body_bytes, asyncio.get_running_loop()
        deadline = loop.time() + self.policy.body_timeout
        received, complete = 0, False

        async def bounded_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body: waiting for a disconnect is not bounded
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPError(
                    408,
                    f"the request body did not arrive within {self.policy.body_timeout:g} s",
                    "send the whole body at once; for slow links start gpux serve with a larger "
                    "--body-timeout",
                    close=True,
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
                complete = not message.get("more_body", False)
            return message

        return bounded_receive


class Guards:
    """ASGI middleware that refuses, before a handler runs, what ``checks`` refuses, and bounds
    the body a handler reads (the same :class:`RequestChecks` the ``infer`` route uses)."""

    def __init__(self, app: ASGIApp, *, checks: RequestChecks) -> None:
        self.app, self.checks = app, checks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            self.checks.check(scope)
            await self.app(scope, self.checks.bounded(receive), tracking_send)
        except HTTPError as exc:  # refused here, or raised while a handler read its body
            if started:
                raise
            response = http_error_response(exc, openai=self.checks.openai(scope["path"]))
            await response(scope, receive, send)


def _size(count: int) -> str:
    return f"{count / MIB:g} MiB" if count >= MIB else f"{count} bytes"
