"""Digests are validated before any path is built from one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gpux.errors import StoreError
from gpux.store import digest as digests
from gpux.store.blobs import BlobStore

GOOD = "sha256:" + hashlib.sha256(b"hello").hexdigest()

BAD = [
    "sha256:../../etc/passwd",
    "sha256:" + "../" * 21 + "x",  # 64 characters of traversal
    "sha256:" + "A" * 64,  # uppercase hex
    "sha256:" + GOOD[7:].upper(),
    "sha256:" + "a" * 63,  # too short
    "sha256:" + "a" * 65,  # too long
    "sha256:" + "g" * 64,  # not hex
    "md5:" + hashlib.md5(b"hello").hexdigest(),
    "sha512:" + "a" * 64,
    GOOD[7:],  # no algorithm
    "SHA256:" + GOOD[7:],
    "sha256:",
    "",
    GOOD + "\n",  # a trailing newline must not sneak into a file name
    " " + GOOD,
    GOOD + "/../../x",
    "sha256:" + "a" * 32 + "/" + "a" * 31,
]


def test_validate_accepts_a_well_formed_digest() -> None:
    assert digests.validate(GOOD) == GOOD
    assert digests.hex_part(GOOD) == GOOD[7:]


@pytest.mark.parametrize("bad", BAD)
def test_validate_rejects_malformed_digests(bad: str) -> None:
    with pytest.raises(StoreError) as info:
        digests.validate(bad)
    assert repr(bad) in info.value.message
    assert "64 lowercase hex" in info.value.message
    assert info.value.hint


@pytest.mark.parametrize("bad", [None, 123, b"sha256:" + b"a" * 64])
def test_validate_rejects_non_strings(bad: object) -> None:
    with pytest.raises(StoreError):
        digests.validate(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", BAD)
def test_blob_paths_are_never_built_from_invalid_digests(bad: str, tmp_path: Path) -> None:
    root = tmp_path / "store"
    victim = tmp_path / "etc" / "passwd"
    victim.parent.mkdir()
    victim.write_text("root:x:0:0\n")
    blobs = BlobStore(root)
    for operation in (
        blobs.path,
        blobs.exists,
        blobs.delete,
        blobs.open_verified,
        blobs.verified_path,
    ):
        with pytest.raises(StoreError):
            operation(bad)
    assert victim.read_text() == "root:x:0:0\n"


def test_traversal_digest_cannot_delete_outside_the_store(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "store"
    outside = tmp_path / "a" / "secret"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_text("keep me")
    blobs = BlobStore(root)
    with pytest.raises(StoreError):
        blobs.delete("sha256:../../../secret")
    assert outside.read_text() == "keep me"


def test_digest_of_bytes_stream_and_file_agree(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # > one read chunk
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    expected = "sha256:" + hashlib.sha256(data).hexdigest()
    assert digests.of_bytes(data) == expected
    assert digests.of_file(path) == (expected, len(data))
    assert digests.short(expected) == expected[7:19]
