"""A client for OCI registries (the Distribution API v2): Docker Hub, GHCR, Harbor, ECR, a
self-hosted ``registry``.

Speaks only what push and pull need: ``/v2/`` (ping), blob HEAD/GET/upload, manifest GET/PUT.
Authentication follows the registry's ``WWW-Authenticate`` challenge: Basic, or a Bearer token
fetched from the realm it names (with the stored credentials, or anonymously). Plain HTTP only
for loopback hosts, or when the caller allows it explicitly.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

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


class AuthError(SourceError):
    """The registry refused the credentials, or wants some."""


def host_only(host: str) -> str:
    return host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"


class Registry:
    """One registry host; thread-safe (parallel blob transfers share it)."""

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
        self._client = httpx.Client(
            timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True
        )
        self._lock = threading.Lock()
        self._auth: dict[str, str] = {}  # scope -> Authorization header
        self._credentials = credentials.lookup(host)

    def close(self) -> None:
        self._client.close()

    # -- requests ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        scope: str,
        *,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        content: Any = None,
        retry_body: Callable[[], Any] | None = None,
    ) -> httpx.Response:
        """A request with authentication; ``path`` may be absolute (upload locations)."""
        url = path if path.startswith("http") else self.base + path
        for attempt in range(2):
            sent = dict(headers or {})
            with self._lock:
                header = self._auth.get(scope)
            if header:
                sent["Authorization"] = header
            body = content if attempt == 0 or retry_body is None else retry_body()
            try:
                request = self._client.build_request(method, url, headers=sent, content=body)
                response = self._client.send(request, stream=stream)
            except httpx.TransportError as exc:
                raise SourceError(
                    f"cannot reach registry {self.host}: {_reason(exc)}",
                    "check the address and your network"
                    + (
                        ""
                        if self.scheme == "http"
                        else "; a local registry over HTTP needs --insecure"
                    ),
                ) from None
            if response.status_code != 401 or attempt == 1:
                return response
            challenge = response.headers.get("www-authenticate", "")
            response.close()
            self._authenticate(challenge, scope)
        raise AssertionError("unreachable")  # pragma: no cover

    def _authenticate(self, challenge: str, scope: str) -> None:
        kind, _, params = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        creds = self._credentials
        if kind.lower() == "basic":
            if creds is None:
                raise self._denied("the registry wants a login")
            import base64

            token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            with self._lock:
                self._auth[scope] = f"Basic {token}"
            return
        if kind.lower() != "bearer" or "realm" not in fields:
            raise self._denied(f"unsupported authentication challenge '{kind}'")
        query = {"service": fields.get("service", ""), "scope": fields.get("scope", scope)}
        auth = (creds.username, creds.password) if creds else None
        try:
            answer = self._client.get(fields["realm"], params=query, auth=auth)
        except httpx.TransportError as exc:
            raise SourceError(
                f"cannot reach the token service of {self.host}: {_reason(exc)}",
                "check your network",
            ) from None
        if answer.status_code in (401, 403):
            raise self._denied("the token service refused the credentials")
        if answer.status_code != 200:
            raise SourceError(
                f"the token service of {self.host} answered HTTP {answer.status_code}",
                "try again later",
            )
        data = answer.json()
        token = data.get("token") or data.get("access_token")
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
        response.close()
        if response.status_code == 401:
            raise self._denied("wrong username or password")
        if response.status_code != 200:
            raise SourceError(
                f"{self.host} does not answer like an OCI registry (GET /v2/: HTTP "
                f"{response.status_code})",
                "check the registry address",
            )

    def has_blob(self, repository: str, digest: str) -> bool:
        response = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", _pull(repository))
        response.close()
        if response.status_code in (200, 404):
            return response.status_code == 200
        raise self._unexpected("HEAD blob", response, repository)

    def upload_blob(
        self, repository: str, digest: str, path: Path, progress: Callable[[int], None]
    ) -> None:
        scope = _push(repository)
        started = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope)
        started.close()
        if started.status_code != 202 or "location" not in started.headers:
            raise self._unexpected("start upload", started, repository)
        location = httpx.URL(self.base).join(started.headers["location"])
        separator = "&" if location.query else "?"
        target = f"{location}{separator}digest={digest}"

        def body() -> Iterator[bytes]:
            with path.open("rb") as stream:
                while chunk := stream.read(CHUNK):
                    progress(len(chunk))
                    yield chunk

        response = self.request(
            "PUT",
            target,
            scope,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(path.stat().st_size),
            },
            content=body(),
            retry_body=body,
        )
        response.close()
        if response.status_code != 201:
            raise self._unexpected("upload blob", response, repository)

    def put_manifest(self, repository: str, tag: str, data: bytes, media_type: str) -> str:
        response = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            _push(repository),
            headers={"Content-Type": media_type},
            content=data,
        )
        response.close()
        if response.status_code != 201:
            raise self._unexpected("put manifest", response, repository)
        return str(response.headers.get("docker-content-digest", ""))

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        response = self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            _pull(repository),
            headers={"Accept": MANIFEST_TYPES},
        )
        if response.status_code == 404:
            raise NotFoundError(
                f"{self.host}/{repository}:{reference} not found on the registry",
                "check the repository and tag (gpux push puts them there)",
            )
        if response.status_code != 200:
            raise self._unexpected("get manifest", response, repository)
        return response.content, str(response.headers.get("content-type", ""))

    def blob_chunks(self, repository: str, digest: str) -> Iterator[bytes]:
        """A blob's bytes in 1 MiB chunks.

        Read with the standard library's ``http.client``: httpx reads a body 64 KiB at a time,
        which made pulls twice as slow as oras. Redirects (registries hand blobs to a storage
        service) are followed without the registry's credentials.
        """
        import http.client
        from urllib.parse import urljoin, urlsplit

        scope = _pull(repository)
        url = f"{self.base}/v2/{repository}/blobs/{digest}"
        authenticated = False
        for _ in range(6):
            parts = urlsplit(url)
            headers: dict[str, str] = {"User-Agent": "gpux"}
            with self._lock:
                header = self._auth.get(scope)
            if header and parts.netloc == self.host:
                headers["Authorization"] = header
            connection: http.client.HTTPConnection = (
                http.client.HTTPSConnection(
                    parts.hostname or "", parts.port, timeout=60, context=_ssl_context()
                )
                if parts.scheme == "https"
                else http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
            )
            try:
                target = parts.path + (f"?{parts.query}" if parts.query else "")
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
                if response.status in (301, 302, 303, 307, 308):
                    url = urljoin(url, response.getheader("location") or "")
                    continue
                if response.status == 401 and not authenticated:
                    self._authenticate(response.getheader("www-authenticate") or "", scope)
                    authenticated = True
                    continue
                if response.status != 200:
                    if response.status in (401, 403):
                        raise self._denied(f"get blob {digest[:19]}: HTTP {response.status}")
                    raise SourceError(
                        f"registry {self.host}: get blob {digest[:19]} on {repository} failed "
                        f"with HTTP {response.status}",
                        "check the repository name and your permissions on it",
                    )
                while chunk := response.read(CHUNK):
                    yield chunk
                return
            except (OSError, http.client.HTTPException) as exc:
                raise SourceError(
                    f"lost the connection to {parts.netloc} while downloading {digest[:19]}: "
                    f"{_reason(exc)}",
                    "run the pull again: it resumes with the blobs it has",
                ) from None
            finally:
                connection.close()
        raise SourceError(f"too many redirects for blob {digest[:19]}", "check the registry")

    def _unexpected(self, action: str, response: httpx.Response, repository: str) -> SourceError:
        if response.status_code in (401, 403):
            return self._denied(f"{action} on {repository}: HTTP {response.status_code}")
        detail = ""
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(str(e.get("message", e.get("code", ""))) for e in errors)
        except (ValueError, AttributeError, httpx.ResponseNotRead):
            pass
        return SourceError(
            f"registry {self.host}: {action} on {repository} failed with HTTP "
            f"{response.status_code}" + (f" ({detail})" if detail else ""),
            "check the repository name and your permissions on it",
        )


_SSL: Any = None


def _ssl_context() -> Any:
    global _SSL
    if _SSL is None:
        _SSL = httpx.create_ssl_context()  # the same trust store as the httpx requests
    return _SSL


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
