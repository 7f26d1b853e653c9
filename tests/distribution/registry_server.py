"""A real OCI registry for tests: Debian's ``docker-registry`` (the CNCF distribution
registry), installed by ``make system-deps``, started on loopback with a temporary config,
over plain HTTP or over TLS with a certificate made for the test (:func:`certificate`)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

BINARY = shutil.which("docker-registry")


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    storage: Path
    process: subprocess.Popen[bytes]

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps a blob on disk (to damage it in tests)."""
        hex_digest = digest.split(":", 1)[1]
        return (
            self.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def certificate(folder: Path, names: list[str]) -> tuple[Path, Path]:
    """A self-signed certificate and its key for ``names`` (DNS names or IP addresses); the
    certificate doubles as the CA a client trusts (``SSL_CERT_FILE``)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    alt = ",".join(
        f"IP:{n}" if n.replace(".", "").isdigit() or ":" in n else f"DNS:{n}" for n in names
    )
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={names[0]}"),
            *("-addext", f"subjectAltName={alt}", "-addext", "basicConstraints=critical,CA:TRUE"),
        ],
        capture_output=True,
        check=True,
    )
    return cert, key


@contextmanager
def running_registry(
    folder: Path, users: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None
) -> Iterator[Registry]:
    if BINARY is None:
        pytest.skip("docker-registry is not installed: run 'make system-deps'")
    folder.mkdir(parents=True, exist_ok=True)
    storage = folder / "storage"
    port = _free_port()
    auth = ""
    if users:
        lines = []
        for user, password in users.items():
            made = subprocess.run(
                ["htpasswd", "-Bbn", user, password], capture_output=True, text=True, check=True
            )
            lines.append(made.stdout.strip())
        (folder / "htpasswd").write_text("\n".join(lines) + "\n")
        auth = f"auth:\n  htpasswd:\n    realm: gpux-test\n    path: {folder / 'htpasswd'}\n"
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        + (f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else "")
        + auth
    )
    log = (folder / "registry.log").open("wb")
    process = subprocess.Popen([BINARY, "serve", str(config)], stdout=log, stderr=log)
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError((folder / "registry.log").read_text())
            try:
                scheme = "https" if tls else "http"
                if httpx.get(f"{scheme}://{host}/v2/", verify=False).status_code in (200, 401):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("docker-registry did not start")
            time.sleep(0.1)
        yield Registry(host, storage, process)
    finally:
        process.terminate()
        process.wait(timeout=10)
