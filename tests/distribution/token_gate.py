"""A Bearer-token front for a test registry, the way Docker Hub, GHCR and Harbor put one before
theirs (Debian's docker-registry can only do that with a JWT-signing token service of its own).

- Every ``/v2/`` request without a token gets 401 and a challenge naming the token realm.
- ``GET /token?service=...&scope=...`` trades Basic credentials for a token of that scope;
  ``POST /token`` (OAuth2, ``grant_type=refresh_token``) trades a refresh token, which is what
  Docker keeps as an identity token.
- Requests with a token go on to the real registry (upload locations rewritten to the gate).
- Blob downloads are redirected to a second port, a stand-in for the storage service (S3, a
  CDN) that registries hand blobs to; it records the ``Authorization`` headers it receives,
  which must be none: a registry's token is not for the storage service.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOP_HEADERS = {"host", "authorization", "connection", "keep-alive", "transfer-encoding"}


@dataclass
class Gate:
    upstream: str  # 127.0.0.1:PORT of the real registry
    users: dict[str, str]
    host: str = ""
    storage_host: str = ""
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # refresh token -> user
    tokens: dict[str, str] = field(default_factory=dict)  # token -> scope
    token_requests: list[dict[str, str | None]] = field(default_factory=list)
    storage_authorization: list[str | None] = field(default_factory=list)


def _handler(gate: Gate, storage: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            upstream = http.client.HTTPConnection(gate.upstream, timeout=30)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                sent = {
                    k: v.replace(gate.upstream, gate.host) if k.lower() == "location" else v
                    for k, v in answer.getheaders()
                    if k.lower() not in HOP_HEADERS | {"content-length"}
                }
                self._reply(answer.status, sent, data)
            finally:
                upstream.close()

        def _oauth_token(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode()) if length else {}
            fields = {k: v[0] for k, v in form.items()}
            gate.token_requests.append(
                {
                    "scope": fields.get("scope", ""),
                    "authorization": self.headers.get("Authorization"),
                    "grant_type": fields.get("grant_type"),
                    "client_id": fields.get("client_id"),
                }
            )
            refresh = fields.get("refresh_token", "")
            if fields.get("grant_type") != "refresh_token" or refresh not in gate.refresh_tokens:
                self._reply(401, {"Content-Type": "application/json"}, b'{"details":"denied"}')
                return
            token = secrets.token_hex(16)
            gate.tokens[token] = fields.get("scope", "")
            body = json.dumps({"access_token": token, "expires_in": 300}).encode()
            self._reply(200, {"Content-Type": "application/json"}, body)

        def _token(self) -> None:
            if self.command == "POST":
                self._oauth_token()
                return
            query = parse_qs(urlsplit(self.path).query)
            given = self.headers.get("Authorization")
            gate.token_requests.append(
                {"scope": query.get("scope", [""])[0], "authorization": given}
            )
            user, _, password = (
                base64.b64decode(given[6:]).decode().partition(":")
                if given and given.startswith("Basic ")
                else ("", "", "")
            )
            if not user or gate.users.get(user) != password:
                self._reply(401, {"Content-Type": "application/json"}, b'{"details":"denied"}')
                return
            token = secrets.token_hex(16)
            gate.tokens[token] = query.get("scope", [""])[0]
            body = json.dumps({"token": token, "expires_in": 300}).encode()
            self._reply(200, {"Content-Type": "application/json"}, body)

        def _handle(self) -> None:
            if storage:
                gate.storage_authorization.append(self.headers.get("Authorization"))
                self._forward()
                return
            if self.path.startswith("/token"):
                self._token()
                return
            given = self.headers.get("Authorization") or ""
            if not (given.startswith("Bearer ") and given[7:] in gate.tokens):
                match = re.match(r"/v2/(.+?)/(blobs|manifests)/", self.path)
                # the scope the request needs, as Docker Hub names it
                actions = "pull" if self.command in ("GET", "HEAD") else "pull,push"
                scope = f',scope="repository:{match.group(1)}:{actions}"' if match else ""
                challenge = f'Bearer realm="http://{gate.host}/token",service="gpux-gate"{scope}'
                self._reply(401, {"WWW-Authenticate": challenge})
                return
            if self.command == "GET" and re.match(r"/v2/.+/blobs/sha256:", self.path):
                self._reply(307, {"Location": f"http://{gate.storage_host}{self.path}"})
                return
            self._forward()

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return Handler


@contextmanager
def token_gate(
    upstream: str, users: dict[str, str], refresh_tokens: dict[str, str] | None = None
) -> Iterator[Gate]:
    gate = Gate(upstream, users, refresh_tokens=dict(refresh_tokens or {}))
    servers = [
        ThreadingHTTPServer(("127.0.0.1", 0), _handler(gate, storage)) for storage in (False, True)
    ]
    gate.host, gate.storage_host = (f"127.0.0.1:{s.server_address[1]}" for s in servers)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        yield gate
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
