"""Builds running at the same time, and garbage collection running beside a build."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gpux.store import LayerSource, Store, mediatypes
from gpux.store.reference import parse
from tests.store.builds import REPO, start_build
from tests.store.consistency import assert_consistent, blob_files, names, tmp_files


def test_two_builds_of_the_same_project_at_once_both_succeed(
    add_project: Callable[..., Path], big_model: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    project = add_project("twins", big_model)
    builds = [start_build(project, home) for _ in range(2)]
    results = [build.communicate(timeout=300) for build in builds]
    for build, (_, stderr) in zip(builds, results, strict=True):
        assert build.returncode == 0, stderr.decode(errors="replace")
    assert names(home) == ["twins:latest"]
    store = Store(home)
    assert store.check() == []
    reachable = assert_consistent(home)
    assert tmp_files(home) == []
    # The loser's manifest and config are unreferenced; prune removes exactly those.
    store.prune()
    assert blob_files(home) == reachable
    assert names(home) == ["twins:latest"]


def test_concurrent_builds_of_different_tags_all_land(
    add_project: Callable[..., Path], symbolic_model: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    project = add_project("tags", symbolic_model)
    builds = [start_build(project, home, "-t", f"tags:v{i}") for i in range(3)]
    for build in builds:
        _, stderr = build.communicate(timeout=300)
        assert build.returncode == 0, stderr.decode(errors="replace")
    assert names(home) == ["tags:v0", "tags:v1", "tags:v2"]
    assert_consistent(home)


# -- prune waits for writers -----------------------------------------------------------------


def _blocked_on(lock: Path) -> bool:
    """True when some process waits for ``lock`` (in Linux /proc/locks, '->' marks a blocked
    request; the device:inode column names the file)."""
    inode = os.stat(lock).st_ino
    return any(
        "->" in line.split() and f":{inode} " in line
        for line in Path("/proc/locks").read_text().splitlines()
    )


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_prune_waits_for_a_build_that_holds_the_write_lock(store: Store, tmp_path: Path) -> None:
    """A writer mid-image has one layer stored but not yet referenced, and a second one half
    written in tmp/. A prune started then must wait, and delete neither."""
    first = tmp_path / "first.bin"
    first.write_bytes(b"layer one " * 1000)  # one chunk
    second = tmp_path / "second.bin"
    second.write_bytes(os.urandom(3 << 20))  # three chunks
    chunks = 0
    mid_write = threading.Event()
    resume = threading.Event()
    failure: list[BaseException] = []

    def progress(_: int) -> None:
        nonlocal chunks
        chunks += 1
        if chunks == 2:  # the first chunk of the second layer is in tmp/
            mid_write.set()
            assert resume.wait(120)

    def write() -> None:
        try:
            store.write_image(
                parse("held:1"),
                {"note": "written while prune waits"},
                [
                    LayerSource(mediatypes.MODEL, "first.bin", path=first),
                    LayerSource(mediatypes.LABELS, "second.bin", path=second),
                ],
                progress=progress,
            )
        except BaseException as exc:
            failure.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    prune: subprocess.Popen[str] | None = None
    try:
        assert mid_write.wait(120)
        stored_first = blob_files(store.root)
        assert len(stored_first) == 1  # stored, referenced by nothing yet
        assert len(tmp_files(store.root)) == 1

        prune = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from gpux.store import Store; print(*Store(sys.argv[1]).prune())",
                str(store.root),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lock = store.root / "locks" / "gc.lock"
        deadline = time.monotonic() + 120
        while not _blocked_on(lock):
            assert prune.poll() is None, f"prune did not wait: {prune.communicate()}"
            assert time.monotonic() < deadline, "prune never reached the lock"
            time.sleep(0.01)
        # prune is waiting for the lock; nothing of the build has been touched.
        assert prune.poll() is None
        assert blob_files(store.root) == stored_first
        assert len(tmp_files(store.root)) == 1
    finally:
        resume.set()
        writer.join(120)
    assert not failure, failure
    assert prune is not None
    out, err = prune.communicate(timeout=120)
    assert prune.returncode == 0, err
    assert out.split() == ["0", "0"]  # it ran after the build: nothing was garbage
    assert names(store.root) == ["held:1"]
    image = store.get("held:1")
    assert {image.layers[0].digest} == stored_first  # the layer prune waited for
    assert store.check() == []
    assert_consistent(store.root)


def test_without_a_writer_prune_deletes_unreferenced_layers(store: Store) -> None:
    """The counterpart of the test above: the same unreferenced layer, no lock held, is deleted
    (so the test above would fail if prune ignored the lock)."""
    with store.writing():
        digest = store.blobs.put_bytes(b"layer one " * 1000)
    assert store.prune() == (1, 10_000)
    assert not store.blobs.exists(digest)
