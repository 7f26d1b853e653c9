"""A real OCI registry for tests: Debian's ``docker-registry`` (the CNCF distribution
registry), installed by ``make system-deps``, started on loopback with a temporary config."""

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


@contextmanager
def running_registry(folder: Path, users: dict[str, str] | None = None) -> Iterator[Registry]:
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
        f"http:\n  addr: 127.0.0.1:{port}\n" + auth
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
                if httpx.get(f"http://{host}/v2/").status_code in (200, 401):
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
