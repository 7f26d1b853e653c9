"""A client for OCI registries (the Distribution API v2): Docker Hub, GHCR, Harbor, ECR, a
self-hosted ``registry``.

Speaks only what push and pull need: ``/v2/`` (ping), blob HEAD/GET/upload, manifest GET/PUT.
Authentication follows the registry's ``WWW-Authenticate`` challenge: Basic, or a Bearer token
fetched from the realm it names (with the stored credentials, or anonymously). Plain HTTP only
for loopback hosts, or when the caller allows it explicitly.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

from gpux.distribution import credentials
from gpux.errors import NotFoundError, SourceError, UsageError

LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
CHUNK = 1 << 20
TIMEOUT = 60.0  # seconds without progress on a connection, connect included
REDIRECTS = 5
REDIRECT_CODES = {301, 302, 303, 307, 308}
# The server may close an idle keep-alive connection between two requests; a request that
# finds it closed is sent again once, on a new connection.
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
Body = bytes | Callable[[], Any] | None
"""Bytes, or a function giving a fresh readable body per attempt (it may be sent twice)."""


class AuthError(SourceError):
    """The registry refused the credentials, or wants some."""


def host_only(host: str) -> str:
    return host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"


@dataclass
class Response:
    status: int
    headers: Message
    body: bytes = b""
    stream: http.client.HTTPResponse | None = None
    """The unread body of a streamed response, on a connection of its own (``close`` it)."""
    connection: http.client.HTTPConnection | None = None

    def json(self) -> Any:
        return json.loads(self.body)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


class _Connections(threading.local):
    """Each thread's keep-alive connections, by (scheme, host:port)."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str], http.client.HTTPConnection] = {}


class Registry:
    """One registry host; thread-safe (parallel blob transfers share it).

    HTTP through the standard library's ``http.client``: one keep-alive connection per thread
    and host, 1 MiB reads and writes for blobs (httpx reads 64 KiB at a time, which made pulls
    twice as slow as oras), and no third-party import on the way to the first byte (httpx
    alone took 70 ms of ``gpux pull``'s start-up).
    """

    def __init__(self, host: str, *, insecure: bool = False, allow_http: bool = False) -> None:
        self.host = host
        loopback = host_only(host) in LOOPBACK
        if insecure and not (loopback or allow_http):
            raise UsageError(
                f"--insecure talks plain HTTP, which GPUX allows only to localhost, not {host}",
                "use HTTPS, or add --allow-http if you accept credentials and images in clear text",
            )
        self.scheme = "http" if insecure else "https"
        self.base = f"{self.scheme}://{host}"
        self._local = _Connections()
        self._opened: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._auth: dict[str, str] = {}  # scope -> Authorization header
        self._credentials = credentials.lookup(host)

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()

    # -- HTTP ----------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        scope: str,
        *,
        headers: dict[str, str] | None = None,
        body: Body = None,
        stream: bool = False,
    ) -> Response:
        """A request with authentication; ``path`` may be absolute (upload locations).

        A 401 is answered once with the challenge's credentials. GET and HEAD follow redirects
        (registries hand blobs to a storage service), without the registry's credentials when
        the redirect leaves its host.
        """
        url = path if path.startswith(("http://", "https://")) else self.base + path
        authenticated = False
        for _ in range(REDIRECTS + 2):
            parts = urlsplit(url)
            sent = dict(headers or {})
            if parts.netloc == self.host:
                with self._lock:
                    header = self._auth.get(scope)
                if header:
                    sent["Authorization"] = header
            response = self._send(method, url, sent, body, stream=stream)
            if response.status in REDIRECT_CODES and method in ("GET", "HEAD"):
                response.close()
                url = urljoin(url, response.headers.get("location") or "")
                continue
            if response.status == 401 and not authenticated and parts.netloc == self.host:
                response.close()
                self._authenticate(response.headers.get("www-authenticate") or "", scope)
                authenticated = True
                continue
            return response
        raise SourceError(
            f"registry {self.host}: too many redirects for {method} {path}",
            "check the registry address",
        )

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Body,
        *,
        stream: bool = False,
        what: str = "",
    ) -> Response:
        """One exchange; a streamed one gets a connection of its own, the rest share the
        thread's keep-alive connection to the host."""
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sent = {"User-Agent": "gpux", **headers}
        for attempt in range(2):
            connection, reused = self._connection(parts.scheme, parts.netloc, own=stream)
            try:
                connection.request(
                    method, target, body=body() if callable(body) else body, headers=sent
                )
                answer = connection.getresponse()
                if stream:
                    return Response(
                        answer.status, answer.headers, stream=answer, connection=connection
                    )
                return Response(answer.status, answer.headers, answer.read())
            except STALE as exc:
                connection.close()
                if reused and attempt == 0:
                    continue
                raise self._unreachable(exc, what) from None
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                raise self._unreachable(exc, what) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(
        self, scheme: str, netloc: str, *, own: bool
    ) -> tuple[http.client.HTTPConnection, bool]:
        """(connection, whether it has been used before)."""
        if not own:
            found = self._local.open.get((scheme, netloc))
            if found is not None:
                return found, found.sock is not None
        parts = urlsplit(f"{scheme}://{netloc}")
        connection: http.client.HTTPConnection = (
            http.client.HTTPSConnection(
                parts.hostname or "",
                parts.port,
                timeout=TIMEOUT,
                context=_ssl_context(),
                blocksize=CHUNK,
            )
            if scheme == "https"
            else http.client.HTTPConnection(
                parts.hostname or "", parts.port, timeout=TIMEOUT, blocksize=CHUNK
            )
        )
        if not own:
            self._local.open[(scheme, netloc)] = connection
            with self._lock:
                self._opened.append(connection)
        return connection, False

    def _unreachable(self, exc: Exception, what: str = "") -> SourceError:
        if what:
            return SourceError(f"cannot reach {what}: {_reason(exc)}", "check your network")
        return SourceError(
            f"cannot reach registry {self.host}: {_reason(exc)}",
            "check the address and your network"
            + ("" if self.scheme == "http" else "; a local registry over HTTP needs --insecure"),
        )

    def _authenticate(self, challenge: str, scope: str) -> None:
        import base64

        kind, _, params = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        creds = self._credentials
        basic = (
            "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            if creds
            else None
        )
        if kind.lower() == "basic":
            if basic is None:
                raise self._denied("the registry wants a login")
            with self._lock:
                self._auth[scope] = basic
            return
        if kind.lower() != "bearer" or "realm" not in fields:
            raise self._denied(f"unsupported authentication challenge '{kind}'")
        realm = fields["realm"]
        query = urlencode(
            {"service": fields.get("service", ""), "scope": fields.get("scope", scope)}
        )
        answer = self._send(
            "GET",
            f"{realm}{'&' if '?' in realm else '?'}{query}",
            {"Authorization": basic} if basic else {},
            None,
            what=f"the token service of {self.host}",
        )
        if answer.status in (401, 403):
            raise self._denied("the token service refused the credentials")
        if answer.status != 200:
            raise SourceError(
                f"the token service of {self.host} answered HTTP {answer.status}",
                "try again later",
            )
        try:
            data = answer.json()
        except ValueError:
            data = {}
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not token:
            raise self._denied("the token service gave no token")
        with self._lock:
            self._auth[scope] = f"Bearer {token}"

    def _denied(self, why: str) -> AuthError:
        if self._credentials is None:
            return AuthError(
                f"registry {self.host} refused the request: {why}",
                f"log in first: gpux login {self.host}",
            )
        return AuthError(
            f"registry {self.host} refused the credentials of '{self._credentials.username}' "
            f"(from {self._credentials.source}): {why}",
            f"log in again: gpux login {self.host}",
        )

    # -- API -----------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry answers and accepts our credentials (``gpux login``)."""
        response = self.request("GET", "/v2/", "registry:catalog:*")
        if response.status == 401:
            raise self._denied("wrong username or password")
        if response.status != 200:
            raise SourceError(
                f"{self.host} does not answer like an OCI registry (GET /v2/: HTTP "
                f"{response.status})",
                "check the registry address",
            )

    def has_blob(self, repository: str, digest: str) -> bool:
        response = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", _pull(repository))
        if response.status in (200, 404):
            return response.status == 200
        raise self._unexpected("HEAD blob", response, repository)

    def upload_blob(
        self, repository: str, digest: str, path: Path, progress: Callable[[int], None]
    ) -> None:
        scope = _push(repository)
        started = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope)
        location = started.headers.get("location")
        if started.status != 202 or not location:
            raise self._unexpected("start upload", started, repository)
        location = urljoin(self.base + "/", location)
        separator = "&" if urlsplit(location).query else "?"
        readers: list[_Reader] = []

        def body() -> _Reader:
            readers.append(_Reader(path, progress))
            return readers[-1]

        try:
            response = self.request(
                "PUT",
                f"{location}{separator}digest={digest}",
                scope,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(path.stat().st_size),
                },
                body=body,
            )
        finally:
            for reader in readers:
                reader.close()
        if response.status != 201:
            raise self._unexpected("upload blob", response, repository)

    def put_manifest(self, repository: str, tag: str, data: bytes, media_type: str) -> str:
        response = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            _push(repository),
            headers={"Content-Type": media_type},
            body=data,
        )
        if response.status != 201:
            raise self._unexpected("put manifest", response, repository)
        return str(response.headers.get("docker-content-digest") or "")

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        response = self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            _pull(repository),
            headers={"Accept": MANIFEST_TYPES},
        )
        if response.status == 404:
            raise NotFoundError(
                f"{self.host}/{repository}:{reference} not found on the registry",
                "check the repository and tag (gpux push puts them there)",
            )
        if response.status != 200:
            raise self._unexpected("get manifest", response, repository)
        return response.body, str(response.headers.get("content-type") or "")

    def blob_chunks(self, repository: str, digest: str) -> Iterator[bytes]:
        """A blob's bytes in 1 MiB chunks, streamed on a connection of its own."""
        response = self.request(
            "GET", f"/v2/{repository}/blobs/{digest}", _pull(repository), stream=True
        )
        try:
            assert response.stream is not None
            if response.status != 200:
                response.body = response.stream.read(1 << 16)  # the registry's error, if any
                if response.status in (401, 403):
                    raise self._denied(f"get blob {digest[:19]}: HTTP {response.status}")
                raise self._unexpected(f"get blob {digest[:19]}", response, repository)
            try:
                while chunk := response.stream.read(CHUNK):
                    yield chunk
            except (OSError, http.client.HTTPException) as exc:
                raise SourceError(
                    f"lost the connection to {self.host} while downloading {digest[:19]}: "
                    f"{_reason(exc)}",
                    "run the pull again: it resumes with the blobs it has",
                ) from None
        finally:
            response.close()

    def _unexpected(self, action: str, response: Response, repository: str) -> SourceError:
        if response.status in (401, 403):
            return self._denied(f"{action} on {repository}: HTTP {response.status}")
        detail = ""
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(str(e.get("message", e.get("code", ""))) for e in errors)
        except (ValueError, AttributeError):
            pass
        return SourceError(
            f"registry {self.host}: {action} on {repository} failed with HTTP "
            f"{response.status}" + (f" ({detail})" if detail else ""),
            "check the repository name and your permissions on it",
        )


class _Reader:
    """A blob file as an upload body: ``http.client`` reads it in 1 MiB blocks; each block
    counts as progress."""

    def __init__(self, path: Path, progress: Callable[[int], None]) -> None:
        self._file: BinaryIO = path.open("rb")
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._progress(len(data))
        return data

    def close(self) -> None:
        self._file.close()


_SSL: Any = None


def _ssl_context() -> Any:
    """The system's trust store (``SSL_CERT_FILE``/``SSL_CERT_DIR`` apply), plus certifi's
    bundle where it is installed, as httpx and requests trust it."""
    global _SSL
    if _SSL is None:
        import ssl

        context = ssl.create_default_context()
        try:
            import certifi

            context.load_verify_locations(certifi.where())
        except (ImportError, OSError):
            pass
        _SSL = context
    return _SSL


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
