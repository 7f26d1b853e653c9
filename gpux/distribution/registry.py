"""A client for OCI registries (the Distribution API v2): Docker Hub, GHCR, Harbor, ECR, a
self-hosted ``registry``.

Speaks only what push and pull need: ``/v2/`` (ping), blob HEAD/GET/upload, manifest GET/PUT.
Authentication follows the registry's ``WWW-Authenticate`` challenge: Basic, or a Bearer token
fetched from the realm it names (with the stored credentials, an identity token, or
anonymously). Every reply is bounded: manifests at 4 MiB, token replies at 1 MiB, a blob at
the size its descriptor declares. The HTTP underneath (proxies, retries, keep-alive) is in
:mod:`gpux.distribution.http`.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

from gpux.distribution import credentials
from gpux.distribution.http import (
    ATTEMPTS,
    CHUNK,
    DEFAULT_LIMIT,
    Body,
    Client,
    Response,
    backoff,
    is_loopback,
    read_bounded,
    split_host,
)
from gpux.errors import NotFoundError, SourceError, UsageError

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
MANIFEST_LIMIT = 4 << 20  # the distribution registry refuses larger manifests itself
TOKEN_LIMIT = 1 << 20  # a token reply is a few KiB, even with a JWT inside
ERROR_LIMIT = 64 << 10  # what is shown of a registry's error reply
REDIRECTS = 5
REDIRECT_CODES = {301, 302, 303, 307, 308}
IDENTITY_TOKEN_CLIENT = "gpux"  # client_id in OAuth2 token requests, as Docker sends "docker"


class AuthError(SourceError):
    """The registry refused the credentials, or wants some."""


def _json(body: bytes) -> Any:
    return json.loads(body)


class Registry:
    """One registry host; thread-safe (parallel blob transfers share it).

    Plain HTTP with ``insecure`` (loopback hosts, or any host with ``allow_http``); a loopback
    host without it gets HTTPS when it speaks TLS and plain HTTP when it does not, as Docker
    treats 127.0.0.0/8 and localhost. HTTP itself (connections, proxies, retries, bounded
    replies) is :class:`gpux.distribution.http.Client`'s.
    """

    def __init__(self, host: str, *, insecure: bool = False, allow_http: bool = False) -> None:
        self.host = host
        loopback = is_loopback(split_host(host, 443)[0])
        if insecure and not (loopback or allow_http):
            raise UsageError(
                f"--insecure talks plain HTTP, which GPUX allows only to loopback hosts, not {host}",
                "use HTTPS, or add --allow-http if you accept credentials and images in clear text",
            )
        self.scheme = "http" if insecure else "https"
        self.base = f"{self.scheme}://{host}"
        self._probe_tls = loopback and not insecure
        self._scheme_lock = threading.Lock()
        self._http = Client()
        self._lock = threading.Lock()
        self._auth: dict[str, str] = {}  # scope -> Authorization header
        self._credentials = credentials.lookup(host)

    def close(self) -> None:
        self._http.close()

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
        limit: int = DEFAULT_LIMIT,
        what: str = "the reply",
    ) -> Response:
        """A request with authentication; ``path`` may be absolute (upload locations).

        A 401 is answered once with the challenge's credentials. GET and HEAD follow redirects
        (registries hand blobs to a storage service), without the registry's credentials when
        the redirect leaves its host.
        """
        if not path.startswith(("http://", "https://")):
            self._choose_scheme()
            path = self.base + path
        url = path
        authenticated = False
        for _ in range(REDIRECTS + 2):
            parts = urlsplit(url)
            sent = dict(headers or {})
            if parts.netloc == self.host:
                with self._lock:
                    header = self._auth.get(scope)
                if header:
                    sent["Authorization"] = header
            response = self._send(method, url, sent, body, stream=stream, limit=limit, what=what)
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
        limit: int = DEFAULT_LIMIT,
        what: str = "the reply",
        service: str = "",
    ) -> Response:
        """One exchange (retried by the client); a failure of the network becomes a
        SourceError that keeps the socket's error as its cause."""
        try:
            return self._http.send(
                method, url, headers, body, stream=stream, limit=limit, what=what
            )
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc, url, service) from exc

    def _choose_scheme(self) -> None:
        """HTTPS or plain HTTP for a loopback registry, by asking it once (``GET /v2/``)."""
        with self._scheme_lock:
            if not self._probe_tls:
                return
            try:
                self._http.send("GET", f"https://{self.host}/v2/", {})
            except ssl.SSLCertVerificationError as exc:
                raise self._unreachable(exc, f"https://{self.host}/v2/") from exc
            except ssl.SSLError:
                # It answered, but not in TLS: a plain-HTTP registry, as local ones are.
                self.scheme, self.base = "http", f"http://{self.host}"
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc, f"https://{self.host}/v2/") from exc
            self._probe_tls = False

    def _unreachable(self, exc: BaseException, url: str, service: str = "") -> SourceError:
        reason = _reason(exc)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return SourceError(
                f"cannot reach {service or 'registry ' + self.host}: {reason}",
                "its certificate is not trusted: add its CA with SSL_CERT_FILE, or use "
                "--insecure for plain HTTP to a loopback registry",
            )
        if service:
            return SourceError(
                f"cannot reach {service} ({url}): {reason}", "check your network and proxy"
            )
        hint = "check the address, your network and proxy (HTTPS_PROXY, NO_PROXY)"
        if self.scheme == "https" and not is_loopback(split_host(self.host, 443)[0]):
            hint += "; a registry that speaks plain HTTP needs --insecure --allow-http"
        return SourceError(f"cannot reach registry {self.host} ({url}): {reason}", hint)

    def _authenticate(self, challenge: str, scope: str) -> None:
        import base64

        kind, _, params = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        creds = self._credentials
        basic = (
            "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            if creds and not creds.identity_token
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
        service_name = fields.get("service", "")
        wanted = fields.get("scope", scope)
        service = f"the token service of {self.host}"
        if creds and creds.identity_token:
            # Docker's convention: an identity token is an OAuth2 refresh token, traded at the
            # realm by POST (the distribution token spec, "oauth.md").
            form = urlencode(
                {
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "service": service_name,
                    "scope": wanted,
                    "client_id": IDENTITY_TOKEN_CLIENT,
                }
            )
            answer = self._send(
                "POST",
                realm,
                {"Content-Type": "application/x-www-form-urlencoded"},
                form.encode(),
                limit=TOKEN_LIMIT,
                what="a token reply",
                service=service,
            )
        else:
            query = urlencode({"service": service_name, "scope": wanted})
            answer = self._send(
                "GET",
                f"{realm}{'&' if '?' in realm else '?'}{query}",
                {"Authorization": basic} if basic else {},
                None,
                limit=TOKEN_LIMIT,
                what="a token reply",
                service=service,
            )
        if answer.status in (401, 403):
            raise self._denied("the token service refused the credentials")
        if answer.status != 200:
            raise SourceError(
                f"{service} answered HTTP {answer.status}",
                "try again later",
            )
        try:
            data = _json(answer.body)
        except ValueError:
            data = {}
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not token or not isinstance(token, str):
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
            f"registry {self.host} refused the credentials of {self._credentials.who} "
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
        reported = [0]  # bytes already counted as progress: a retried upload counts once

        def body() -> _Reader:
            readers.append(_Reader(path, progress, reported))
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
        """The manifest's bytes and media type; refused past :data:`MANIFEST_LIMIT`."""
        response = self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            _pull(repository),
            headers={"Accept": MANIFEST_TYPES},
            limit=MANIFEST_LIMIT,
            what="a manifest",
        )
        if response.status == 404:
            raise NotFoundError(
                f"{self.host}/{repository}:{reference} not found on the registry",
                "check the repository and tag (gpux push puts them there)",
            )
        if response.status != 200:
            raise self._unexpected("get manifest", response, repository)
        return response.body, str(response.headers.get("content-type") or "")

    def blob_chunks(self, repository: str, digest: str, size: int) -> Iterator[bytes]:
        """A blob's bytes in 1 MiB chunks, streamed on a connection of its own: exactly
        ``size`` bytes, the size its descriptor declares.

        A registry that sends more is refused at the first byte past ``size``. A connection
        that breaks mid-blob is resumed with ``Range: bytes=N-`` (ollama resumes its parts the
        same way); a registry that answers the range with the whole blob, or with another
        range, has the bytes already received skipped. ``ATTEMPTS`` failures in a row without
        a byte of progress give up.
        """
        path = f"/v2/{repository}/blobs/{digest}"
        received = 0
        failures = 0
        ranges = True  # False once the registry has answered a range wrongly
        while True:
            ranged = received > 0 and ranges
            response = self.request(
                "GET",
                path,
                _pull(repository),
                headers={"Range": f"bytes={received}-"} if ranged else None,
                stream=True,
            )
            try:
                stream = response.stream
                assert stream is not None
                if ranged and response.status == 206:
                    if not _range_matches(response.headers, received, size):
                        ranges = False
                        continue
                    skip = 0
                elif response.status == 200:
                    _check_length(response, size, digest, self.host)
                    skip = received
                else:
                    response.body = read_bounded(stream, "GET", response.url, ERROR_LIMIT, "")[0]
                    if response.status in (401, 403):
                        raise self._denied(f"get blob {digest[:19]}: HTTP {response.status}")
                    raise self._unexpected(f"get blob {digest[:19]}", response, repository)
                progressed = False
                try:
                    while skip:
                        skipped = stream.read(min(CHUNK, skip))
                        if not skipped:
                            raise http.client.IncompleteRead(b"", skip)
                        skip -= len(skipped)
                    while received < size:
                        chunk = stream.read(min(CHUNK, size - received))
                        if not chunk:  # closed early without a Content-Length to tell
                            raise http.client.IncompleteRead(b"", size - received)
                        received += len(chunk)
                        progressed = True
                        yield chunk
                    if stream.read(1):
                        raise SourceError(
                            f"registry {self.host} sent more than the {size:,} bytes the "
                            f"manifest declares for blob {digest[:19]} ({response.url})",
                            "the registry is misbehaving or was tampered with; nothing was stored",
                        )
                    return
                except (OSError, http.client.HTTPException) as exc:
                    failures = 0 if progressed else failures + 1
                    if failures >= ATTEMPTS:
                        raise SourceError(
                            f"lost the connection to {self.host} while downloading "
                            f"{digest[:19]} ({received:,} of {size:,} bytes): {_reason(exc)}",
                            "run the pull again: it resumes with the blobs it has",
                        ) from exc
                    time.sleep(backoff(failures + 1))
            finally:
                response.close()

    def _unexpected(self, action: str, response: Response, repository: str) -> SourceError:
        if response.status in (401, 403):
            return self._denied(f"{action} on {repository}: HTTP {response.status}")
        detail = ""
        try:
            errors = _json(response.body).get("errors") or []
            detail = "; ".join(str(e.get("message", e.get("code", ""))) for e in errors)[:500]
        except (ValueError, AttributeError, TypeError):
            pass
        tries = f" after {response.attempts} attempts" if response.attempts > 1 else ""
        return SourceError(
            f"registry {self.host}: {action} on {repository} failed with HTTP "
            f"{response.status}{tries}" + (f" ({detail})" if detail else ""),
            "try again later"
            if response.status >= 500 or response.status == 429
            else "check the repository name and your permissions on it",
        )


def _range_matches(headers: Any, start: int, size: int) -> bool:
    """Whether a 206 answers ``bytes=start-``: ``Content-Range: bytes start-(size-1)/size``
    (or ``/*``)."""
    match = re.fullmatch(
        r"bytes (\d+)-(\d+)/(\d+|\*)", (headers.get("content-range") or "").strip(), re.ASCII
    )
    return bool(
        match
        and int(match.group(1)) == start
        and int(match.group(2)) == size - 1
        and match.group(3) in ("*", str(size))
    )


def _check_length(response: Response, size: int, digest: str, host: str) -> None:
    """A whole-blob answer whose ``Content-Length`` is not the declared size is refused before
    a byte of it is written."""
    declared = (response.headers.get("content-length") or "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) != size:
        raise SourceError(
            f"registry {host} sends {int(declared):,} bytes for blob {digest[:19]}, whose "
            f"manifest declares {size:,} ({response.url})",
            "the registry is misbehaving or was tampered with; nothing was stored",
        )


class _Reader:
    """A blob file as an upload body: ``http.client`` reads it in 1 MiB blocks; each block
    counts as progress, once, however many times the upload is sent."""

    def __init__(self, path: Path, progress: Callable[[int], None], reported: list[int]) -> None:
        self._file: BinaryIO = path.open("rb")
        self._progress = progress
        self._reported = reported
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._position += len(data)
        if self._position > self._reported[0]:
            self._progress(self._position - self._reported[0])
            self._reported[0] = self._position
        return data

    def close(self) -> None:
        self._file.close()


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
