"""``gpux serve -d`` and the commands that find detached servers again: ``ps``, ``logs``,
``stop``. Every server a test starts is stopped in a ``finally``, so no process outlives it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.expect import BoundCLI, assert_failure
from tests.serve.conftest import EXAMPLES, free_port

pytestmark = [pytest.mark.zoo, pytest.mark.slow]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding minilm:1.0, the example as shipped."""
    home = tmp_path_factory.mktemp("detached-home")
    BoundCLI(home).ok("build", str(EXAMPLES / "minilm-embeddings"), "-q")
    return home


@pytest.fixture
def cli(home: Path) -> Iterator[BoundCLI]:
    """The CLI on the module's store; whatever a test left running is stopped afterwards."""
    cli = BoundCLI(home)
    try:
        yield cli
    finally:
        _stop_everything(home)


def _stop_everything(home: Path) -> None:
    """Stop through the CLI, then SIGKILL any recorded process that is somehow still a server."""
    BoundCLI(home)("stop", "--all", "--timeout", "10")
    for record in (home / "run").glob("*.json"):
        pid = json.loads(record.read_text())["pid"]
        with contextlib.suppress(OSError):
            if not _gone(pid) and b"gpux" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        record.unlink()


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for a parent that may never reap it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def _wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _records(home: Path) -> list[str]:
    return sorted(path.name for path in (home / "run").glob("*.json"))


def test_serve_detached_then_ps_predict_logs_stop(cli: BoundCLI) -> None:
    port = free_port()
    started = time.monotonic()
    result = cli.ok("serve", "-d", "minilm:1.0", "--port", str(port), "--backend", "cpu")
    assert time.monotonic() - started < 30, "serve -d should return once the server is ready"
    assert result.stdout.strip() == "minilm"  # the id: the image's repository name
    assert f"http://127.0.0.1:{port}" in result.stderr

    [server] = cli.json("ps", "--json")
    assert server["id"] == "minilm" and server["models"] == ["minilm:1.0"]
    assert server["url"] == f"http://127.0.0.1:{port}" and server["port"] == port
    assert server["uptime"] >= 0 and Path(server["log"]) == cli.home / "run" / "minilm.log"
    assert "--token" not in server["command"]
    pid = server["pid"]
    assert not _gone(pid)

    answer = httpx.post(server["url"] + "/predict", json={"text": "hi"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["result"]["embedding"]) == 384

    # the access log of that request, found by id and by the model it serves
    for key in ("minilm", "minilm:1.0"):
        logged = [
            json.loads(line)
            for line in cli.ok("logs", key).stdout.splitlines()
            if line.startswith("{")
        ]
        assert any(e["path"] == "/predict" and e["status"] == 200 for e in logged), logged

    # a second server on the same port: refused before it starts, and no record of it
    taken = cli("serve", "-d", "minilm:1.0", "--port", str(port))
    assert_failure(taken, 2, f"port {port}", "already in use")
    assert "--port" in taken.stderr
    assert [s["id"] for s in cli.json("ps", "--json")] == ["minilm"]
    assert _records(cli.home) == ["minilm.json"]

    following = subprocess.Popen(
        [sys.executable, "-m", "gpux.cli.main", "logs", "-f", "minilm"],
        env={**os.environ, "GPUX_HOME": str(cli.home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stopped = cli.ok("stop", "minilm")
        assert "stopped minilm" in stopped.stderr and "killed" not in stopped.stderr
        assert _wait_gone(pid), "the server is still running after 'gpux stop'"
        assert cli.json("ps", "--json") == []
        assert _records(cli.home) == []
        # logs -f ends by itself once the server has exited, having shown the drain
        out, _ = following.communicate(timeout=15)
        assert following.returncode == 0
        assert "Finished server process" in out, out[-2000:]
    finally:
        following.kill()
        following.wait()
    # the log of a stopped server stays readable
    assert "/predict" in cli.ok("logs", "minilm").stdout


def test_ids_are_unique_and_stop_all_stops_every_server(cli: BoundCLI) -> None:
    ids = [
        cli.ok("serve", "-d", "minilm:1.0", "--port", str(free_port())).stdout.strip(),
        cli.ok("serve", "-d", "minilm:1.0", "--port", str(free_port())).stdout.strip(),
        cli.ok("serve", "-d", "minilm:1.0", "--name", "embed", "--port", str(free_port()))
        .stdout.strip(),
    ]  # fmt: skip
    assert ids == ["minilm", "minilm-2", "embed"]
    servers = cli.json("ps", "--json")
    assert [s["id"] for s in servers] == ids

    # a model name that two servers serve is ambiguous; a taken --name is refused
    assert_failure(cli("logs", "minilm:1.0"), 2, "served by 3 servers")
    again = cli("serve", "-d", "minilm:1.0", "--name", "embed", "--port", str(free_port()))
    assert_failure(again, 2, "'embed' is already running")

    # no time to drain: killed, with a warning
    killed = cli.ok("stop", "embed", "--timeout", "0")
    assert "warning: server 'embed' did not exit within 0 s; killed it" in killed.stderr
    stopped = cli.ok("stop", "--all")
    assert all(f"stopped {i}" in stopped.stderr for i in ids[:2]), stopped.stderr
    assert all(_wait_gone(s["pid"]) for s in servers)
    assert cli.json("ps", "--json") == [] and _records(cli.home) == []


def test_default_port_taken_fails_naming_port_and_fix(cli: BoundCLI) -> None:
    # minilm's GPUXfile serves on port 8080 (the default); hold it unless something else does
    holder = socket.socket()
    with contextlib.suppress(OSError):
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 8080))
        holder.listen()
    try:
        result = cli("serve", "-d", "minilm:1.0")
    finally:
        holder.close()
    assert_failure(result, 2, "port 8080", "serving.port", "already in use")
    assert "--port" in result.stderr
    assert cli.json("ps", "--json") == [] and _records(cli.home) == []


def test_server_that_dies_while_starting_shows_its_log_and_leaves_no_record(
    home: Path, tmp_path: Path
) -> None:
    # a copy of the store whose model blob is damaged: the image resolves, loading it fails
    broken = tmp_path / "broken-home"
    shutil.copytree(home, broken, ignore=shutil.ignore_patterns("cache", "run"))
    model = max((broken / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    model.chmod(0o644)
    model.write_bytes(b"\0" * 1000)
    cli = BoundCLI(broken)
    try:
        result = cli("serve", "-d", "minilm:1.0", "--port", str(free_port()))
        # the server's own error, with its exit code (8: the store), under ours
        assert_failure(result, 8, "exited with code 8 while starting", "corrupt")
        assert "gpux logs minilm" in result.stderr
        assert cli.json("ps", "--json") == [] and _records(broken) == []
    finally:
        _stop_everything(broken)


def test_stop_unknown_id_names_the_running_servers(cli: BoundCLI) -> None:
    assert_failure(cli("stop", "nope"), 4, "no running server 'nope'")
    assert "gpux serve -d" in cli("stop", "nope").stderr  # nothing runs: how to start one
    cli.ok("serve", "-d", "minilm:1.0", "--port", str(free_port()))
    result = cli("stop", "nope")
    assert_failure(result, 4, "no running server 'nope'")
    assert "running: minilm" in result.stderr
    assert_failure(cli("logs", "nope"), 4, "no running server 'nope'")


def test_ps_removes_records_of_dead_or_reused_pids(cli: BoundCLI) -> None:
    exited = subprocess.Popen(["true"])
    exited.wait()
    stranger = subprocess.Popen(["sleep", "60"])  # alive, but not a gpux server
    try:
        _fake_record(cli.home, "dead", exited.pid)
        _fake_record(cli.home, "reused", stranger.pid)
        assert cli.json("ps", "--json") == []
        assert _records(cli.home) == []
        # nor does stop signal a process that is not a gpux server
        _fake_record(cli.home, "reused", stranger.pid)
        assert_failure(cli("stop", "reused"), 4, "no running server 'reused'")
        assert stranger.poll() is None, "a process that is not a gpux server was signalled"
        assert _records(cli.home) == []
    finally:
        stranger.kill()
        stranger.wait()


def _fake_record(home: Path, server_id: str, pid: int) -> None:
    run = home / "run"
    run.mkdir(exist_ok=True)
    record = {
        "id": server_id,
        "pid": pid,
        "host": "127.0.0.1",
        "port": 1,
        "url": "http://127.0.0.1:1",
        "models": ["minilm:1.0"],
        "started": "2026-01-01T00:00:00+00:00",
        "log": str(run / f"{server_id}.log"),
        "command": ["gpux", "serve", "minilm:1.0"],
    }
    (run / f"{server_id}.json").write_text(json.dumps(record))
