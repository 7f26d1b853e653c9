"""Only the command line decides where ``gpux serve`` listens (issue #12, item 3): an image whose
GPUXfile asks for ``serving.host: 0.0.0.0`` is still served on loopback only, in the foreground
and detached; and a detached server gets the same request limits as a foreground one."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.expect import BoundCLI
from tests.conftest import make_project
from tests.generated_models import linear
from tests.serve.conftest import free_port, start_server, stop_server

WIDE_OPEN = "name: wide\nversion: '1'\nmodel: ./linear.onnx\nserving:\n  host: 0.0.0.0\n"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[BoundCLI]:
    """A store holding wide:1, whose GPUXfile asks to listen on every interface."""
    cli = BoundCLI(tmp_path / "home")
    project = make_project(tmp_path / "wide", linear(tmp_path / "linear.onnx"), WIDE_OPEN)
    cli.ok("build", str(project), "-q")
    try:
        yield cli
    finally:
        cli("stop", "--all", "--timeout", "10")


def listening_addresses(port: int) -> set[str]:
    """The addresses with a socket listening on ``port``, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":  # TCP_LISTEN
                # /proc prints each 32-bit word in host (little-endian) order.
                words = bytes.fromhex(address)
                raw = b"".join(words[i : i + 4][::-1] for i in range(0, len(words), 4))
                found.add(str(ipaddress.ip_address(raw)))
    return found


def test_an_image_asking_for_0_0_0_0_is_served_on_loopback_only(home: BoundCLI) -> None:
    server = start_server(home, "wide:1")
    try:
        assert listening_addresses(server.port) == {"127.0.0.1"}
        assert "asks for serving.host 0.0.0.0; listening on 127.0.0.1" in server.log()
        assert "--host 0.0.0.0" in server.log()  # how to widen it, on purpose
    finally:
        assert stop_server(server) == 0


def test_a_detached_server_listens_on_loopback_and_gets_the_request_limits(
    home: BoundCLI,
) -> None:
    port = free_port()
    started = home(
        "serve", "wide:1", "-d", "--port", str(port),
        "--max-body-mb", "0.001", "--allowed-host", "gpux.test",
    )  # fmt: skip
    assert started.code == 0, started.output
    assert "asks for serving.host 0.0.0.0" in started.stderr
    url = f"http://127.0.0.1:{port}"
    assert listening_addresses(port) == {"127.0.0.1"}
    record = home.json("ps", "--json")[0]
    assert record["host"] == "127.0.0.1"
    assert "--max-body-mb=0.001" in record["command"]
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4}]}
    assert httpx.post(url + "/v2/models/wide/infer", json=body).status_code == 200
    large = {**body, "id": "x" * 2000}  # over 0.001 MiB (1048 bytes)
    too_large = httpx.post(url + "/v2/models/wide/infer", json=large)
    assert too_large.status_code == 413, too_large.text
    assert "--max-body-mb" in too_large.json()["hint"]
    allowed = httpx.get(url + "/v2/health/ready", headers={"Host": "gpux.test"})
    assert allowed.status_code == 200, allowed.text
    foreign = httpx.get(url + "/v2/health/ready", headers={"Host": "evil.example"})
    assert foreign.status_code == 421, foreign.text
