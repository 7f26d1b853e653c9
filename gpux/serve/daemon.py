"""Detached servers: ``gpux serve -d`` starts one in the background; ``ps``, ``logs`` and ``stop``
find it again through its record. Each server has a short id (``minilm``, ``minilm-2``)::

    $GPUX_HOME/run/<id>.json   {id, pid, host, port, url, models, started, log, command}
    $GPUX_HOME/run/<id>.log    the server's stdout and stderr: start-up, errors, access log

A record is written (atomically) as soon as the process exists, and removed when the server
never becomes ready, when it is stopped, and when :func:`running` finds its process gone. The log
stays, so ``gpux logs`` can still say why a server exited; the next server with that id
overwrites it.

The server itself is the foreground ``gpux serve`` in its own session: SIGTERM makes it drain
in-flight requests and exit 0. POSIX only (sessions, signals, ``/proc``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpux import env
from gpux.errors import (
    BackendError,
    ConfigError,
    GPUXError,
    InputError,
    ModelError,
    NotFoundError,
    SourceError,
    StoreError,
    UsageError,
)

READY_PATH = "/v2/health/ready"
LOG_TAIL_LINES = 15
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Server:
    """The record of one detached server."""

    id: str
    pid: int
    host: str
    port: int
    url: str
    models: list[str]
    started: str  # ISO 8601, UTC
    log: str
    command: list[str]

    @property
    def uptime(self) -> float:
        """Seconds since the server was started."""
        return (datetime.now(UTC) - datetime.fromisoformat(self.started)).total_seconds()

    def serves(self, key: str) -> bool:
        """Whether ``key`` names one of its models: ``minilm:1.0``, ``minilm`` or ``team/minilm``."""
        from gpux.store import parse

        for model in self.models:
            repository = parse(model).repository
            if key in (model, repository, repository.rsplit("/", 1)[-1]):
                return True
        return False


def run_dir() -> Path:
    return env.home() / "run"


def log_path(server_id: str) -> Path:
    return run_dir() / f"{server_id}.log"


def check_id(name: str) -> str:
    if not _ID.fullmatch(name):
        raise UsageError(
            f"invalid server name '{name}'",
            "use letters, digits, '_', '.' or '-' (up to 64, starting with a letter or digit)",
        )
    return name


def check_port(host: str, port: int, origin: str) -> None:
    """Fail with the fix when ``host:port`` cannot be listened on. ``origin`` says where a port
    that was not given came from (``"serving.port in the GPUXfile of minilm:1.0"``)."""
    problem = _bind_problem(host, port)
    if problem is None:
        return
    if problem.errno != errno.EADDRINUSE:
        raise UsageError(
            f"cannot listen on {host}:{port}: {problem.strerror}",
            "choose another address or port with --host/--port",
        )
    spare = next(
        (p for p in range(port + 1, min(port + 20, 65536)) if _bind_problem(host, p) is None),
        None,
    )
    raise UsageError(
        f"port {port} on {host}{f' ({origin})' if origin else ''} is already in use",
        f"choose another with --port{f', e.g. --port {spare}' if spare else ''}; "
        "'gpux ps' lists the servers gpux started",
    )


def _bind_problem(host: str, port: int) -> OSError | None:
    """Why uvicorn could not listen on ``host:port``, or None when it could."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return exc
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # as uvicorn does: a port left in TIME_WAIT is free, one somebody listens on is not
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return exc
    return None


def start(
    names: list[str],
    options: list[str],
    *,
    host: str,
    port: int,
    models: list[str],
    name: str,
    name_given: bool,
    token: str | None = None,
    ready_timeout: float = 600.0,
) -> Server:
    """Start ``gpux serve NAMES --host HOST --port PORT OPTIONS`` in the background and return its
    record once ``/v2/health/ready`` answers. ``name`` is the id wanted; unless ``name_given`` it
    is made unique with -2, -3... ``token`` travels in the environment, never on the command line
    (which ``ps`` and the record show). A server that exits or hangs while starting is killed, its
    record removed, and an error of the kind its exit code names is raised with its log's end."""
    if os.name != "posix":
        raise UsageError(
            "detached servers need Linux or macOS",
            "run 'gpux serve' in the foreground, under your service manager",
        )
    command = [
        sys.executable, "-m", "gpux.cli.main", "serve", *names,
        "--host", host, "--port", str(port), *options,
    ]  # fmt: skip
    run_dir().mkdir(parents=True, exist_ok=True)
    child_env = {
        **os.environ,
        "GPUX_HOME": str(env.home().resolve()),
        "GPUX_NO_PROGRESS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if token:
        child_env["GPUX_TOKEN"] = token
    with _run_lock():
        taken = {server.id for server in running()}
        if name_given and name in taken:
            raise UsageError(
                f"a server named '{name}' is already running",
                f"choose another --name, or stop it first: gpux stop {name}",
            )
        server_id = _unique(name, taken)
        log = log_path(server_id)
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=child_env,
                start_new_session=True,  # no SIGINT/SIGHUP from this terminal
            )
        server = Server(
            id=server_id,
            pid=process.pid,
            host=host,
            port=port,
            url=f"http://{_connectable(host)}:{port}",
            models=models,
            started=datetime.now(UTC).isoformat(timespec="milliseconds"),
            log=str(log),
            command=command,
        )
        _write_record(server)
    try:
        _wait_ready(server, process, ready_timeout)
    except BaseException:  # failed, or Ctrl-C: leave neither a process nor a record behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        _remove_record(server.id)
        raise
    return server


def _wait_ready(server: Server, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            raise _error_kind(code)(
                f"server '{server.id}' exited with code {code} while starting; "
                f"the end of its log:\n{_tail(Path(server.log))}",
                f"the whole log: gpux logs {server.id}",
            )
        if _ready(server) and process.poll() is None:
            return
        if time.monotonic() > deadline:
            raise GPUXError(
                f"server '{server.id}' was not ready after {timeout:.0f} s; "
                f"the end of its log:\n{_tail(Path(server.log))}",
                f"the whole log: gpux logs {server.id}",
            )
        time.sleep(0.1)


def _ready(server: Server) -> bool:
    import http.client  # not urllib: a proxy from the environment must not see loopback

    connection = http.client.HTTPConnection(_connectable(server.host), server.port, timeout=2)
    try:
        connection.request("GET", READY_PATH)
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def running() -> list[Server]:
    """The detached servers still running, oldest first. Records whose process is gone (or
    whose pid now belongs to another program) are removed."""
    found = []
    for record in sorted(run_dir().glob("*.json")):
        try:
            server = Server(**json.loads(record.read_text()))
        except (OSError, ValueError, TypeError):
            record.unlink(missing_ok=True)  # unreadable: no process can be found from it
            continue
        if alive(server.pid):
            found.append(server)
        else:
            record.unlink(missing_ok=True)
    return sorted(found, key=lambda s: s.started)


def find(key: str) -> Server:
    """The running server with id ``key``, else the only one serving a model named ``key``."""
    servers = running()
    for server in servers:
        if server.id == key:
            return server
    matches = [server for server in servers if server.serves(key)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(
            f"'{key}' is served by {len(matches)} servers: {', '.join(s.id for s in matches)}",
            "name one by its id (first column of 'gpux ps')",
        )
    raise NotFoundError(f"no running server '{key}'", _running_hint(servers))


def _running_hint(servers: list[Server]) -> str:
    if not servers:
        return "no server is running; start one with: gpux serve -d IMAGE"
    return f"running: {', '.join(s.id for s in servers)} (see gpux ps)"


def stop(servers: list[Server], timeout: float = 30.0) -> list[Server]:
    """SIGTERM each server (they drain in-flight requests and exit), wait up to ``timeout``
    seconds for all of them, SIGKILL the ones still there; remove the records. Returns the
    servers that had to be killed."""
    for server in servers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    waiting = list(servers)
    while waiting and time.monotonic() < deadline:
        time.sleep(0.05)
        waiting = [server for server in waiting if alive(server.pid)]
    for server in waiting:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(alive(server.pid) for server in waiting) and time.monotonic() < deadline:
        time.sleep(0.05)
    for server in servers:
        _remove_record(server.id)
    return waiting


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running ``gpux serve`` (not gone, not a zombie, not reused)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or now another user's process
        return False
    proc = Path(f"/proc/{pid}/cmdline")
    if proc.parent.is_dir():
        try:
            args = proc.read_bytes().split(b"\0")  # empty for a zombie
        except OSError:
            return False
        return any(b"gpux" in arg for arg in args) and b"serve" in args
    listed = subprocess.run(  # macOS: no /proc
        ["ps", "-o", "stat=,command=", "-p", str(pid)], capture_output=True, text=True
    ).stdout.split()
    return (
        bool(listed)
        and not listed[0].startswith("Z")
        and "serve" in listed[1:]
        and any("gpux" in arg for arg in listed[1:])
    )


def read_log(server_id: str, follow: Callable[[], bool] | None = None) -> Iterator[bytes]:
    """The log of server ``server_id`` in chunks; with ``follow``, keep reading what is written
    while ``follow()`` says the server is still running."""
    with log_path(server_id).open("rb") as log:
        while True:
            chunk = log.read(65536)
            if chunk:
                yield chunk
                continue
            if follow is None or not follow():
                tail = log.read()  # what it wrote between the last read and its exit
                if tail:
                    yield tail
                return
            time.sleep(0.2)


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(empty)"


def _error_kind(code: int) -> type[GPUXError]:
    """The error class whose exit code the server exited with, so that ``serve -d`` exits the
    way the foreground ``serve`` would have (a missing model 4, a backend failure 7...)."""
    kinds = (UsageError, ConfigError, NotFoundError, ModelError, InputError, BackendError)
    for kind in (*kinds, StoreError, SourceError):
        if kind.exit_code == code:
            return kind
    return GPUXError


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    number = 2
    while f"{name}-{number}" in taken:
        number += 1
    return f"{name}-{number}"


def _connectable(host: str) -> str:
    """The address a client on this machine uses for ``host`` (wildcards mean loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def _write_record(server: Server) -> None:
    record = run_dir() / f"{server.id}.json"
    partial = record.with_name(f".{server.id}.json.{os.getpid()}.tmp")
    partial.write_text(json.dumps(asdict(server), indent=2) + "\n")
    os.replace(partial, record)  # readers see the whole record or none


def _remove_record(server_id: str) -> None:
    (run_dir() / f"{server_id}.json").unlink(missing_ok=True)


@contextlib.contextmanager
def _run_lock() -> Iterator[None]:
    """Serialises choosing an id and writing its record between concurrent ``serve -d``."""
    import fcntl

    with (run_dir() / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def as_json(server: Server) -> dict[str, Any]:
    """What ``gpux ps --json`` prints for a server: its record and its uptime in seconds."""
    return {**asdict(server), "uptime": round(server.uptime, 1)}
