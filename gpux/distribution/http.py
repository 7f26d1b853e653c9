"""HTTP for the registry client, on the standard library's ``http.client``.

What a client that meets the internet needs, in one place:

- one keep-alive connection per thread and host, so parallel blob transfers share a client;
- proxies from the environment, read as Go's ``httpproxy`` (and so Docker) reads them:
  ``HTTPS_PROXY``/``https_proxy`` for https (a ``CONNECT`` tunnel), ``HTTP_PROXY``/``http_proxy``
  for http (requests in absolute form), ``NO_PROXY``/``no_proxy`` for the hosts that go direct;
  a loopback host never goes through a proxy;
- retries with backoff and jitter on connection errors, 429 and 5xx, waiting what
  ``Retry-After`` asks (seconds or an HTTP date, at most :data:`RETRY_AFTER_CAP`);
- bounded replies: a body is read to at most its limit + 1 byte; a successful reply over the
  limit is refused naming the URL, its size and the limit (an error reply is cut at the limit).

After the last attempt, errors of the socket propagate as they are (``OSError``,
``http.client.HTTPException``): the registry words them for the user and keeps them as the cause.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from gpux.errors import SourceError, UsageError

CHUNK = 1 << 20
TIMEOUT = 60.0  # seconds without progress on a connection, connect included
ATTEMPTS = 4  # one try and three retries
BACKOFF = 0.5  # seconds before the first retry, doubled for each next one, with jitter
RETRY_AFTER_CAP = 60.0  # a registry may ask for a pause, not for an hour
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_LIMIT = 1 << 20  # any reply read whole: pings, upload answers, error bodies
# The server may close an idle keep-alive connection between two requests; a request that
# finds it closed is sent again at once, on a new connection, without counting as a retry.
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
Body = bytes | Callable[[], Any] | None
"""Bytes, or a function giving a fresh readable body per attempt (it may be sent again)."""


class ReplyTooLarge(SourceError):
    """A reply over the limit its caller set; it was not read past the limit."""


def is_loopback(host: str) -> bool:
    """``localhost`` (and ``*.localhost``), 127.0.0.0/8 and ::1; ``host`` without its port."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_host(netloc: str, default_port: int) -> tuple[str, int]:
    """``host[:port]`` or ``[v6][:port]`` -> (host without brackets, port)."""
    parts = urlsplit(f"//{netloc}")
    return parts.hostname or "", parts.port or default_port


# -- proxies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None  # the Proxy-Authorization header, from user:password in the URL
    variable: str  # the environment variable that named it, for messages


def _environment(names: tuple[str, str], environ: Mapping[str, str]) -> tuple[str, str]:
    """(value, name) of the first of ``names`` that is set; upper case first, as Go reads them."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value, name
    return "", names[0]


def proxy_for(scheme: str, netloc: str, environ: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy a request to ``scheme://netloc`` goes through, or None to go direct."""
    environ = os.environ if environ is None else environ
    host, port = split_host(netloc, 443 if scheme == "https" else 80)
    if is_loopback(host):
        return None  # Go's rule, so Docker's: a proxy never sees loopback traffic
    upper = scheme.upper()
    value, variable = _environment((f"{upper}_PROXY", f"{scheme}_proxy"), environ)
    if not value:
        return None
    no_proxy, _ = _environment(("NO_PROXY", "no_proxy"), environ)
    if bypassed(host, port, no_proxy):
        return None
    return _parse_proxy(value, variable)


def _parse_proxy(value: str, variable: str) -> Proxy:
    parts = urlsplit(value if "://" in value else f"http://{value}")
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(
            f"{variable}={value} is not a proxy GPUX can use",
            "name an HTTP proxy as http://HOST:PORT (https:// and socks proxies are not "
            "supported), or unset the variable",
        )
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
    return Proxy(parts.hostname, parts.port or 80, authorization, variable)


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` sends ``host`` direct, with Go's rules: ``*`` matches every host;
    ``example.com`` matches it and its subdomains, ``.example.com`` only the subdomains; an IP
    address or CIDR block matches those addresses; ``entry:PORT`` matches that port only."""
    host = host.lower()
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.lower().split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry == "*":
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
                continue
            except ValueError:
                pass  # not an address: a name, perhaps with a port
        name, entry_port = entry, None
        if entry.startswith("["):
            name, _, rest = entry[1:].partition("]")
            entry_port = rest[1:] or None
        elif entry.count(":") == 1:
            name, entry_port = entry.split(":")
        if entry_port is not None and entry_port != str(port):
            continue
        if name.startswith("."):
            if host.endswith(name):
                return True
        elif host == name or host.endswith("." + name):
            return True
    return False


# -- responses -------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: Message
    url: str
    body: bytes = b""
    stream: http.client.HTTPResponse | None = None
    """The unread body of a streamed response, on a connection of its own (``close`` it)."""
    connection: http.client.HTTPConnection | None = None
    attempts: int = 1

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


def _size(count: int) -> str:
    return f"{count >> 20} MiB" if count >= 1 << 20 and not count % (1 << 20) else f"{count:,} B"


def read_bounded(
    answer: http.client.HTTPResponse, method: str, url: str, limit: int, what: str
) -> tuple[bytes, bool]:
    """(body, complete): at most ``limit`` bytes of a reply. A successful reply over the limit
    raises :class:`ReplyTooLarge` after ``limit`` + 1 bytes at most (or none, when its
    ``Content-Length`` says so); an error reply is cut at the limit (complete False)."""
    success = 200 <= answer.status < 300
    # a HEAD answer's Content-Length is the size of what a GET would send
    declared = "" if method == "HEAD" else (answer.getheader("content-length") or "").strip()
    if success and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _too_large(what, url, limit, f"{int(declared):,} bytes declared")
    parts: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = answer.read(min(CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        total += len(chunk)
    if success:
        raise _too_large(what, url, limit, f"over {limit:,} bytes sent")
    return b"".join(parts)[:limit], False


def _too_large(what: str, url: str, limit: int, size: str) -> ReplyTooLarge:
    return ReplyTooLarge(
        f"{what} from {url} is larger than the {_size(limit)} limit ({size})",
        f"GPUX reads at most {_size(limit)} for {what}; the registry is misbehaving, or the "
        "reference does not name a GPUX image",
    )


# -- retries ---------------------------------------------------------------------------------


def transient(exc: BaseException) -> bool:
    """A failure worth another attempt: the connection, not the peer's certificate or name."""
    if isinstance(exc, ssl.SSLError):
        return False  # a refused certificate or a peer that speaks no TLS stays so
    if isinstance(exc, socket.gaierror):
        return exc.errno == socket.EAI_AGAIN  # "try again", not "no such host"
    return isinstance(
        exc, ConnectionError | TimeoutError | http.client.BadStatusLine | http.client.IncompleteRead
    )


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): doubling, half of it random, so
    parallel transfers that failed together do not come back together."""
    full = BACKOFF * float(2 ** (attempt - 1))
    return full / 2 + random.uniform(0, full / 2)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds (a number of seconds or an HTTP date), at most
    :data:`RETRY_AFTER_CAP`; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


# -- the client ------------------------------------------------------------------------------


class _Connections(threading.local):
    """Each thread's keep-alive connections, by (scheme, host:port)."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str], http.client.HTTPConnection] = {}


class Client:
    """Keep-alive connections, proxies, retries and bounded replies; thread-safe.

    1 MiB reads and writes (httpx reads 64 KiB at a time, which made pulls twice as slow as
    oras), and no third-party import on the way to the first byte.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._local = _Connections()
        self._opened: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()

    def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Body = None,
        *,
        stream: bool = False,
        limit: int = DEFAULT_LIMIT,
        what: str = "the reply",
    ) -> Response:
        """One request, sent again on a transient failure or a 429/5xx answer (the last
        answer is returned; the last error is raised). A streamed response keeps its body
        unread, on a connection of its own; any other is read up to ``limit``."""
        attempt = 1
        while True:
            try:
                response = self._exchange(method, url, headers, body, stream, limit, what)
            except (OSError, http.client.HTTPException) as exc:
                if attempt >= ATTEMPTS or not transient(exc):
                    raise
                time.sleep(backoff(attempt))
                attempt += 1
                continue
            response.attempts = attempt
            if response.status not in RETRY_STATUSES or attempt >= ATTEMPTS:
                return response
            asked = retry_after(response.headers.get("retry-after"))
            response.close()
            time.sleep(backoff(attempt) if asked is None else asked)
            attempt += 1

    def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Body,
        stream: bool,
        limit: int,
        what: str,
    ) -> Response:
        parts = urlsplit(url)
        proxy = proxy_for(parts.scheme, parts.netloc, self._environ)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sent = {"User-Agent": "gpux", **headers}
        if proxy is not None and parts.scheme == "http":
            target = f"http://{parts.netloc}{target}"  # absolute form: the proxy forwards it
            if proxy.authorization:
                sent["Proxy-Authorization"] = proxy.authorization
        for fresh_try in range(2):
            connection, reused = self._connection(parts.scheme, parts.netloc, proxy, own=stream)
            try:
                connection.request(
                    method, target, body=body() if callable(body) else body, headers=sent
                )
                answer = connection.getresponse()
                if stream:
                    return Response(
                        answer.status, answer.headers, url, stream=answer, connection=connection
                    )
                data, complete = read_bounded(answer, method, url, limit, what)
                if not complete or answer.will_close:
                    self._forget(parts.scheme, parts.netloc, connection)
                return Response(answer.status, answer.headers, url, data)
            except STALE:
                self._forget(parts.scheme, parts.netloc, connection)
                if reused and fresh_try == 0:
                    continue
                raise
            except BaseException:
                self._forget(parts.scheme, parts.netloc, connection)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _forget(self, scheme: str, netloc: str, connection: http.client.HTTPConnection) -> None:
        connection.close()
        if self._local.open.get((scheme, netloc)) is connection:
            del self._local.open[(scheme, netloc)]

    def _connection(
        self, scheme: str, netloc: str, proxy: Proxy | None, *, own: bool
    ) -> tuple[http.client.HTTPConnection, bool]:
        """(connection, whether it has been used before)."""
        if not own:
            found = self._local.open.get((scheme, netloc))
            if found is not None:
                return found, found.sock is not None
        host, port = split_host(netloc, 443 if scheme == "https" else 80)
        address = (proxy.host, proxy.port) if proxy else (host, port)
        connection: http.client.HTTPConnection
        if scheme == "https":
            connection = http.client.HTTPSConnection(
                *address, timeout=TIMEOUT, context=ssl_context(), blocksize=CHUNK
            )
            if proxy is not None:
                # CONNECT host:port; TLS (and its host name check) is with the registry
                tunnel = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else {}
                connection.set_tunnel(host, port, headers=tunnel)
        else:
            connection = http.client.HTTPConnection(*address, timeout=TIMEOUT, blocksize=CHUNK)
        if not own:
            self._local.open[(scheme, netloc)] = connection
            with self._lock:
                self._opened.append(connection)
        return connection, False


_SSL: ssl.SSLContext | None = None


def ssl_context() -> ssl.SSLContext:
    """The system's trust store (``SSL_CERT_FILE``/``SSL_CERT_DIR`` apply), plus certifi's
    bundle where it is installed, as httpx and requests trust it."""
    global _SSL
    if _SSL is None:
        context = ssl.create_default_context()
        try:
            import certifi

            context.load_verify_locations(certifi.where())
        except (ImportError, OSError):
            pass
        _SSL = context
    return _SSL
