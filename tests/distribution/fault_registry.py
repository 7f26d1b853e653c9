"""A small OCI registry that misbehaves on request, for the registry client's hardening tests.

It stores what ``gpux push`` sends (blob uploads in one PUT, manifests by tag and digest) and
serves it back, honouring ``Range``. Each test then sets :class:`Faults`: replies far larger
than the client should read (a manifest, a token reply, an error body, a blob longer than its
descriptor), 429 and 503 answers with ``Retry-After``, a connection cut in the middle of a blob,
``Range`` ignored. The registry counts the body bytes it managed to send, so a test can tell
that the client stopped reading, and records every request it received.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.distribution.loopback import loopback_server

SLICE = 1 << 16
TOKEN = "fault-token"


@dataclass
class Faults:
    """What goes wrong; tests set these before the command they run."""

    manifest_padding: int = 0  # whitespace before the manifest JSON, no Content-Length
    error_padding: int = 0  # a manifest GET answers 400 with an error body this long
    token_padding: int = 0  # Bearer auth on; the token reply is padded to this (declared)
    blob_extra: int = 0  # bytes after a blob's content, no Content-Length
    blob_length_lie: int = 0  # a Content-Length this much larger than the blob
    throttle: dict[str, int] = field(default_factory=dict)  # kind -> 429s left to answer
    unavailable: dict[str, int] = field(default_factory=dict)  # kind -> 503s left to answer
    retry_after: str | None = None  # the Retry-After of those answers
    retry_after_date: float | None = None  # or one as an HTTP date, this many seconds ahead
    cut_blob_at: int | None = None  # the first GET of a larger blob ends after these bytes
    ranges: bool = True  # False: Range is ignored, the whole blob comes with 200


@dataclass
class Seen:
    method: str
    path: str
    kind: str  # ping, manifest, blob, upload, token
    headers: dict[str, str]
    at: float  # time.monotonic() when it arrived


@dataclass
class FaultRegistry:
    host: str = ""
    faults: Faults = field(default_factory=Faults)
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(
        default_factory=dict
    )  # repo:ref -> (data, type)
    seen: list[Seen] = field(default_factory=list)
    sent: int = 0  # body bytes written, as far as the socket took them
    cut: set[str] = field(default_factory=set)  # blobs whose first GET was cut already

    def reset(self) -> None:
        self.faults = Faults()
        self.seen.clear()
        self.sent = 0
        self.cut.clear()

    def of_kind(self, kind: str, method: str = "GET") -> list[Seen]:
        return [s for s in self.seen if s.kind == kind and s.method == method]


def _kind(path: str) -> str:
    if path.startswith("/token"):
        return "token"
    if "/manifests/" in path:
        return "manifest"
    if "/blobs/uploads/" in path:
        return "upload"
    if "/blobs/" in path:
        return "blob"
    return "ping"


def _handler(registry: FaultRegistry) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _headers(self, status: int, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if "Content-Length" not in headers:
                self.send_header("Connection", "close")  # the body ends when the socket does
                self.close_connection = True
            self.end_headers()

        def _write(self, data: bytes) -> bool:
            """Write and count; False once the client has gone."""
            try:
                for start in range(0, len(data), SLICE):
                    part = data[start : start + SLICE]
                    self.wfile.write(part)
                    with lock:
                        registry.sent += len(part)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                return False
            return True

        def _padded(self, padding: int, tail: bytes) -> None:
            """``padding`` bytes of JSON whitespace, then ``tail``."""
            blank = b" " * (1 << 20)
            while padding > 0:
                if not self._write(blank[:padding]):
                    return
                padding -= len(blank)
            self._write(tail)

        def _reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self._headers(status, {**headers, "Content-Length": str(len(body))})
            if self.command != "HEAD":
                self._write(body)

        def _error(self, status: int, code: str) -> None:
            body = json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode()
            self._reply(status, {"Content-Type": "application/json"}, body)

        def _fault(self, kind: str) -> bool:
            """Answer 429 or 503 when the test asked for it; True when answered."""
            faults = registry.faults
            for status, left in ((429, faults.throttle), (503, faults.unavailable)):
                if left.get(kind, 0) > 0:
                    left[kind] -= 1
                    headers = {"Retry-After": faults.retry_after} if faults.retry_after else {}
                    if faults.retry_after_date is not None:
                        when = time.time() + faults.retry_after_date
                        headers = {"Retry-After": formatdate(when, usegmt=True)}
                    self._reply(status, headers, b'{"errors":[{"code":"TOOMANYREQUESTS"}]}')
                    return True
            return False

        def _handle(self) -> None:
            kind = _kind(self.path)
            registry.seen.append(
                Seen(self.command, self.path, kind, dict(self.headers.items()), time.monotonic())
            )
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self._fault(kind):
                return
            faults = registry.faults
            if kind == "token":
                self._token()
                return
            if faults.token_padding and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                challenge = f'Bearer realm="http://{registry.host}/token",service="fault"'
                self._reply(401, {"WWW-Authenticate": challenge})
                return
            path = urlsplit(self.path).path
            if path == "/v2/":
                self._reply(200, {"Content-Type": "application/json"}, b"{}")
                return
            if match := re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", path):
                self._manifest(match.group(1), match.group(2), body)
                return
            if match := re.fullmatch(r"/v2/(.+)/blobs/uploads/([^/]*)", path):
                self._upload(match.group(1), match.group(2), body)
                return
            if match := re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]{64})", path):
                self._blob(match.group(2))
                return
            self._error(404, "NOT_FOUND")

        def _token(self) -> None:
            reply = json.dumps({"token": TOKEN}).encode()
            padding = registry.faults.token_padding
            self._headers(
                200,
                {"Content-Type": "application/json", "Content-Length": str(padding + len(reply))},
            )
            self._padded(padding, reply)

        def _manifest(self, repository: str, reference: str, body: bytes) -> None:
            faults = registry.faults
            if self.command == "PUT":
                digest = "sha256:" + hashlib.sha256(body).hexdigest()
                entry = (body, self.headers.get("Content-Type") or "")
                registry.manifests[f"{repository}:{reference}"] = entry
                registry.manifests[f"{repository}:{digest}"] = entry
                self._reply(201, {"Docker-Content-Digest": digest})
                return
            found = registry.manifests.get(f"{repository}:{reference}")
            if found is None:
                self._error(404, "MANIFEST_UNKNOWN")
                return
            if faults.error_padding:
                self._headers(400, {"Content-Type": "application/json"})
                self._padded(faults.error_padding, b'{"errors":[{"code":"DENIED"}]}')
                return
            data, media_type = found
            if faults.manifest_padding:
                self._headers(200, {"Content-Type": media_type})
                self._padded(faults.manifest_padding, data)
                return
            self._reply(200, {"Content-Type": media_type}, data)

        def _upload(self, repository: str, session: str, body: bytes) -> None:
            if self.command == "POST":
                location = f"/v2/{repository}/blobs/uploads/{secrets.token_hex(8)}"
                self._reply(202, {"Location": location})
                return
            digest = parse_qs(urlsplit(self.path).query).get("digest", [""])[0]
            if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
                self._error(400, "DIGEST_INVALID")
                return
            registry.blobs[digest] = body
            self._reply(201, {"Docker-Content-Digest": digest})

        def _blob(self, digest: str) -> None:
            data = registry.blobs.get(digest)
            if data is None:
                self._error(404, "BLOB_UNKNOWN")
                return
            faults = registry.faults
            if self.command == "HEAD":
                self._reply(200, {"Content-Length": str(len(data))})
                return
            if faults.blob_extra:
                self._headers(200, {"Content-Type": "application/octet-stream"})
                if self._write(data):
                    self._padded(faults.blob_extra, b"")
                return
            if faults.blob_length_lie:
                self._headers(200, {"Content-Length": str(len(data) + faults.blob_length_lie)})
                if self._write(data):
                    self._padded(faults.blob_length_lie, b"")
                return
            wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if wanted and faults.ranges:
                start = int(wanted.group(1))
                self._reply(
                    206,
                    {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
                    data[start:],
                )
                return
            cut = faults.cut_blob_at
            if cut is not None and len(data) > cut and digest not in registry.cut:
                registry.cut.add(digest)
                self._headers(200, {"Content-Length": str(len(data))})
                self._write(data[:cut])
                self.wfile.flush()
                self.close_connection = True  # the rest never comes
                return
            self._reply(200, {"Content-Type": "application/octet-stream"}, data)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _handle

    return Handler


@contextmanager
def fault_registry() -> Iterator[FaultRegistry]:
    registry = FaultRegistry()
    with loopback_server(_handler(registry)) as port:
        registry.host = f"127.0.0.1:{port}"
        yield registry
