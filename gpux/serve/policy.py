"""What a server accepts (sizes, times, host names, origins) and when it compresses: plain data, so that the CLI can
show the defaults without importing the web stack. Enforced by gpux/serve/guards.py and
gpux/serve/connection.py."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class RequestPolicy:
    """Limits and origins a server accepts; every field has a ``gpux serve`` flag."""

    max_body_bytes: int = 64 * MIB
    """Largest request body, on every route, also after gzip inflation (``--max-body-mb``)."""
    max_form_parts: int = 64
    """Most fields and most files in one multipart body (``--max-form-parts``)."""
    header_timeout: float = 30.0
    """Seconds a client may take to send a request's headers (``--header-timeout``)."""
    body_timeout: float = 30.0
    """Seconds a client may take to send a request's whole body (``--body-timeout``)."""
    check_host: bool = True
    """Refuse ``Host`` headers that name neither loopback nor an ``allowed_hosts`` entry: on by
    default for loopback servers (DNS rebinding), and whenever ``allowed_hosts`` is given."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names (or ``*``) accepted besides localhost, 127.x and ::1 (``--allowed-host``)."""
    cors_origins: tuple[str, ...] = ()
    """Origins whose pages may call the API (``--cors-origin``); none by default."""
    gzip_min_bytes: int = 0
    """Smallest inference answer sent gzip-compressed to a client that accepts gzip
    (``--gzip-min-kb``); 0, the default, sends every answer as it is: on a link of 1 Gbit/s or
    more compressing costs more time than it saves (gpux/serve/bodies.py)."""


def is_loopback(host: str) -> bool:
    """Whether a listen address or a ``Host`` name is this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without port or IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    name, colon, port = header.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else header
