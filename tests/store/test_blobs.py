"""Content-addressed blobs: atomic, idempotent writes and verified reads."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from gpux.errors import DigestMismatchError, NotFoundError
from gpux.store.blobs import BlobStore
from tests.store.consistency import blob_files, tmp_files

DATA = b"model weights " * 100_000  # ~1.4 MB: more than one write chunk
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


def test_put_bytes_stores_content_under_its_digest(blobs: BlobStore) -> None:
    digest = blobs.put_bytes(DATA)
    assert digest == DIGEST
    path = blobs.path(digest)
    assert path == blobs.root / "blobs" / "sha256" / DIGEST[7:]
    assert path.read_bytes() == DATA
    assert blobs.exists(digest)
    assert blobs.size(digest) == len(DATA)
    assert list(blobs) == [DIGEST]


def test_put_is_idempotent_across_bytes_and_files(blobs: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(DATA)
    seen: list[int] = []
    digests = {
        blobs.put_bytes(DATA),
        blobs.put_file(source),
        blobs.put_file(source, progress=seen.append),
        blobs.put_bytes(DATA),
    }
    assert digests == {DIGEST}
    assert blob_files(blobs.root) == {DIGEST}
    assert sum(seen) == len(DATA)
    assert blobs.path(DIGEST).read_bytes() == DATA


def test_no_partial_files_remain_after_writes(blobs: BlobStore, tmp_path: Path) -> None:
    blobs.put_bytes(DATA)
    blobs.put_bytes(DATA)
    blobs.put_bytes(b"")
    assert blobs.tmp.is_dir()
    assert tmp_files(blobs.root) == []


def test_expected_digest_mismatch_stores_nothing(blobs: BlobStore) -> None:
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatchError) as info:
        blobs.put_stream(io.BytesIO(DATA), expected=wrong)
    assert wrong in info.value.message
    assert DIGEST in info.value.message
    assert blob_files(blobs.root) == set()
    assert tmp_files(blobs.root) == []


def test_a_failing_source_leaves_no_partial_file(blobs: BlobStore) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.reads = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.reads += 1
            if self.reads > 2:
                raise OSError("disk went away")
            return b"x" * 1024

    with pytest.raises(OSError, match="disk went away"):
        blobs.put_stream(Broken())  # type: ignore[arg-type]
    assert tmp_files(blobs.root) == []
    assert blob_files(blobs.root) == set()


def _alter_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("reader", ["open_verified", "verified_path"])
def test_altered_blob_is_refused(blobs: BlobStore, reader: str) -> None:
    digest = blobs.put_bytes(DATA)
    _alter_one_byte(blobs.path(digest))
    with pytest.raises(DigestMismatchError) as info:
        getattr(blobs, reader)(digest)
    error = info.value
    assert "corrupt" in error.message
    assert digest[7:19] in error.message
    assert error.hint is not None
    for word in ("gpux rm", "gpux prune", "build"):
        assert word in error.hint


@pytest.mark.parametrize("reader", ["open_verified", "verified_path"])
def test_blob_edited_after_a_successful_read_is_refused(blobs: BlobStore, reader: str) -> None:
    digest = blobs.put_bytes(DATA)
    path = blobs.path(digest)
    assert getattr(blobs, reader)(digest)  # fine before the damage
    assert getattr(blobs, reader)(digest)  # and again
    before = path.stat()
    _alter_one_byte(path)
    # An edit made a second later (set explicitly: coarse file clocks may not tick otherwise).
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    with pytest.raises(DigestMismatchError, match="corrupt"):
        getattr(blobs, reader)(digest)
    with pytest.raises(DigestMismatchError, match="corrupt"):  # refused every time, not once
        getattr(blobs, reader)(digest)


def test_truncated_blob_is_refused(blobs: BlobStore) -> None:
    digest = blobs.put_bytes(DATA)
    path = blobs.path(digest)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DigestMismatchError, match="corrupt"):
        blobs.verified_path(digest)


@pytest.mark.parametrize("reader", ["open_verified", "verified_path"])
def test_missing_blob_is_not_found(blobs: BlobStore, reader: str) -> None:
    missing = "sha256:" + hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(NotFoundError) as info:
        getattr(blobs, reader)(missing)
    assert missing in info.value.message
    assert info.value.hint and "gpux rm" in info.value.hint


def test_delete_returns_freed_bytes_and_tolerates_missing(blobs: BlobStore) -> None:
    digest = blobs.put_bytes(DATA)
    assert blobs.delete(digest) == len(DATA)
    assert not blobs.exists(digest)
    assert blobs.delete(digest) == 0


def test_iteration_skips_foreign_file_names(blobs: BlobStore) -> None:
    digest = blobs.put_bytes(DATA)
    (blobs.directory / "README").write_text("not a blob")
    (blobs.directory / ("A" * 64)).write_text("uppercase name")
    assert list(blobs) == [digest]
