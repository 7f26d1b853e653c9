"""An HTTP proxy on loopback for the registry client's proxy tests: ``CONNECT`` tunnels (https)
and absolute-form requests (http), as squid and corporate proxies serve them.

Host names are resolved by the proxy from its own table (``hosts``), never by DNS: a registry
named ``registry.gpux.test`` is reachable through the proxy and nowhere else, so a request
that did not go through it fails. It records every tunnel and request, with the
``Proxy-Authorization`` it was given.
"""

from __future__ import annotations

import http.client
import select
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from tests.distribution.loopback import loopback_server

HOP_HEADERS = {"proxy-authorization", "proxy-connection", "connection", "keep-alive"}


@dataclass
class Proxy:
    hosts: dict[str, str]  # name -> IP address
    url: str = ""  # http://127.0.0.1:PORT
    tunnels: list[str] = field(default_factory=list)  # CONNECT targets, host:port
    requests: list[str] = field(default_factory=list)  # "METHOD absolute-url"
    authorization: list[str | None] = field(default_factory=list)


def _handler(proxy: Proxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _address(self, host: str, port: int) -> tuple[str, int] | None:
            address = proxy.hosts.get(host.lower())
            if address is None:
                self.send_error(502, f"unknown host {host}")
                return None
            return address, port

        def do_CONNECT(self) -> None:
            proxy.tunnels.append(self.path)
            proxy.authorization.append(self.headers.get("Proxy-Authorization"))
            host, _, port = self.path.rpartition(":")
            address = self._address(host.strip("[]"), int(port))
            if address is None:
                return
            upstream = socket.create_connection(address, timeout=30)
            self.send_response(200, "Connection established")
            self.end_headers()
            self.close_connection = True
            sockets = [self.connection, upstream]
            try:
                while True:
                    readable, _, _ = select.select(sockets, [], [], 30)
                    if not readable:
                        return
                    for source in readable:
                        data = source.recv(1 << 16)
                        if not data:
                            return
                        (upstream if source is self.connection else self.connection).sendall(data)
            except OSError:
                return
            finally:
                upstream.close()

        def _forward(self) -> None:
            proxy.requests.append(f"{self.command} {self.path}")
            proxy.authorization.append(self.headers.get("Proxy-Authorization"))
            parts = urlsplit(self.path)
            if parts.scheme != "http" or not parts.hostname:
                self.send_error(400, "absolute-form http:// URL expected")
                return
            address = self._address(parts.hostname, parts.port or 80)
            if address is None:
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            upstream = http.client.HTTPConnection(*address, timeout=30)
            try:
                target = parts.path + (f"?{parts.query}" if parts.query else "")
                upstream.request(self.command, target, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in HOP_HEADERS | {"content-length", "transfer-encoding"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                upstream.close()

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    return Handler


@contextmanager
def running_proxy(hosts: dict[str, str]) -> Iterator[Proxy]:
    proxy = Proxy(hosts)
    with loopback_server(_handler(proxy)) as port:
        proxy.url = f"http://127.0.0.1:{port}"
        yield proxy
