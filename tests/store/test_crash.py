"""A build killed at any point leaves the store consistent (acceptance: a test kills one
mid-write). The build is the real ``gpux build`` in a subprocess, killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import gpux.api
from gpux.store import Store
from tests.store.builds import start_build
from tests.store.consistency import assert_consistent, blob_files, names, tmp_files

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")

Condition = Callable[[], bool]


def partial_blob_size(home: Path) -> int:
    """Size of the largest partial blob being written in the store's tmp/ (0 when none)."""
    try:
        with os.scandir(home / "tmp") as entries:
            sizes = []
            for entry in entries:
                try:
                    sizes.append(entry.stat().st_size)
                except FileNotFoundError:  # renamed into place meanwhile
                    continue
            return max(sizes, default=0)
    except FileNotFoundError:
        return 0


def wait_until(process: subprocess.Popen[bytes], condition: Condition) -> bool:
    """Poll until ``condition`` holds (True) or the process exits (False). The windows to hit
    are short (writing 64 MiB takes about 0.1 s on a fast disk), so the poll is tight."""
    deadline = time.monotonic() + 120
    while not condition():
        if process.poll() is not None:
            return False
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the build neither reached the kill point nor exited in 120 s")
        time.sleep(0.0002)
    return True


def kill_when(process: subprocess.Popen[bytes], condition: Condition, what: str) -> None:
    """SIGKILL the build as soon as ``condition`` holds; fail if it exits first."""
    if not wait_until(process, condition):
        _, stderr = process.communicate()
        pytest.fail(
            f"the build exited ({process.returncode}) before {what}; if it finished, make "
            f"the model bigger (BIG_MEGABYTES).\n{stderr.decode(errors='replace')}"
        )
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the build finished before it was killed"


@pytest.fixture
def big_project(add_project: Callable[..., Path], big_model: Path) -> Path:
    return add_project("crash", big_model)


def expected_output(model_path: Path, x: np.ndarray) -> np.ndarray:
    model = onnx.load(str(model_path))
    constant: np.ndarray = next(
        numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "C"
    )
    expected: np.ndarray = x + constant
    return expected


def test_build_killed_mid_write_leaves_the_store_consistent(
    big_project: Path, big_model: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    build = start_build(big_project, home)
    kill_when(build, lambda: partial_blob_size(home) > 0, "a partial blob appeared in tmp/")

    # The kill really happened mid-write: a partial blob is left behind...
    leftovers = tmp_files(home)
    assert leftovers, "no partial file left: the write finished before the kill"
    leftover_bytes = sum(path.stat().st_size for path in leftovers)
    assert leftover_bytes > 0
    # ... but no image is visible, and nothing visible is broken.
    store = Store(home)
    assert store.images() == []
    assert store.find("crash") is None
    assert store.find("crash:latest") is None
    assert store.check() == []
    assert_consistent(home)  # no manifest in the index references a missing blob

    # prune cleans up the leftovers.
    unreferenced = blob_files(home)
    count, freed = store.prune()
    assert count == len(leftovers) + len(unreferenced)
    assert freed >= leftover_bytes
    assert tmp_files(home) == []
    assert blob_files(home) == set()

    # A rebuild succeeds and the image runs: y = x + C.
    rebuild = start_build(big_project, home)
    _, stderr = rebuild.communicate(timeout=300)
    assert rebuild.returncode == 0, stderr.decode(errors="replace")
    assert names(home) == ["crash:latest"]
    reachable = assert_consistent(home)
    assert blob_files(home) == reachable
    assert tmp_files(home) == []
    with gpux.api.load("crash", store=store) as model:
        (length,) = model.inputs[0].shape or [0]
        assert isinstance(length, int)
        x = np.linspace(-1, 1, length, dtype=np.float32)
        y = model.run({"x": x})["y"]
    np.testing.assert_array_equal(y, expected_output(big_model, x))


def test_builds_killed_at_many_points_leave_the_store_consistent(
    big_project: Path, big_model: Path, tmp_path: Path
) -> None:
    """Kill a build at several delays and at several stages of the write; after every kill the
    store is consistent: the image is either absent or complete, and prune leaves exactly the
    referenced blobs."""
    size = big_model.stat().st_size
    points: list[tuple[str, Callable[[Path], Condition]]] = [
        (f"{delay} s after start", _after(delay)) for delay in (0.05, 0.3, 0.8, 1.5)
    ]
    points += [
        ("half the model written", lambda home: lambda: partial_blob_size(home) >= size // 2),
        ("the model blob renamed into place", lambda home: lambda: bool(blob_files(home))),
    ]
    outcomes = []
    for index, (label, make_condition) in enumerate(points):
        home = tmp_path / f"home-{index}"
        build = start_build(big_project, home)
        if wait_until(build, make_condition(home)):
            build.send_signal(signal.SIGKILL)
        _, stderr = build.communicate()
        assert build.returncode in (0, -signal.SIGKILL), (label, stderr.decode(errors="replace"))

        store = Store(home)
        listed = names(home)
        assert listed in ([], ["crash:latest"]), label
        reachable = assert_consistent(home)  # check() == [] and every reference resolves
        if listed:
            assert store.get("crash").layers[0].size == size
        store.prune()
        assert tmp_files(home) == [], label
        assert blob_files(home) == reachable, label
        assert names(home) == listed, label  # prune never removes a complete image
        assert store.check() == []
        outcomes.append((label, build.returncode, listed))
    # At least one kill landed inside the write of the model blob.
    assert any(
        label == "half the model written" and code == -signal.SIGKILL and not listed
        for label, code, listed in outcomes
    ), outcomes


def _after(seconds: float) -> Callable[[Path], Condition]:
    """A kill point ``seconds`` after the build starts (the clock starts when it is asked for)."""

    def condition(home: Path) -> Condition:
        deadline = time.monotonic() + seconds
        return lambda: time.monotonic() >= deadline

    return condition
