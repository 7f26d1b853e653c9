"""A real ``gpux serve`` process on loopback, serving real models, shared by a test module."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.cli.expect import BoundCLI

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen[str]
    cli: BoundCLI

    def log(self) -> str:
        return Path(self.cli.home / "server.log").read_text()


def start_server(cli: BoundCLI, *args: str, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    log = (cli.home / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gpux.cli.main", "serve", *args, "--port", str(port)],
        env={**os.environ, "GPUX_HOME": str(cli.home), **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"gpux serve exited {process.returncode}:\n{(cli.home / 'server.log').read_text()}"
            )
        try:  # 503 while the models warm up (gpux/serve/warmup.py)
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                return Server(url, port, process, cli)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("gpux serve did not become ready in 60 s")


def stop_server(server: Server) -> int:
    server.process.terminate()
    return server.process.wait(timeout=30)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, zoo_file: Callable[[str], Path]
) -> Iterator[Server]:
    """minilm:1.0, document-orientation:1.0 and silero-vad:6.2.3 (the examples, as shipped)
    behind one server, which compresses answers of 16 KiB and more for clients that ask."""
    cli = BoundCLI(tmp_path_factory.mktemp("serve-home"))
    for example in ("minilm-embeddings", "document-orientation", "silero-vad"):
        cli.ok("build", str(EXAMPLES / example), "-q")
    server = start_server(
        cli,
        *("minilm:1.0", "document-orientation:1.0", "silero-vad:6.2.3"),
        *("--backend", "cpu", "--gzip-min-kb", "16"),
    )
    yield server
    assert stop_server(server) == 0, server.log()  # SIGTERM: drain, then exit 0


def two_model_server(home: Path, token: str, max_batch_size: int) -> Iterator[Server]:
    """minilm:1.0 and document-orientation:1.0 behind one batching server that needs ``token``
    (the fuzzing and load tests); yields the server, then checks it drains and exits 0."""
    cli = BoundCLI(home)
    for example in ("minilm-embeddings", "document-orientation"):
        cli.ok("build", str(EXAMPLES / example), "-q")
    served = start_server(
        cli,
        "minilm:1.0",
        "document-orientation:1.0",
        "--backend",
        "cpu",
        "--max-batch-size",
        str(max_batch_size),
        "--max-batch-delay-ms",
        "2",
        env={"GPUX_TOKEN": token},
    )
    yield served
    assert stop_server(served) == 0, served.log()
