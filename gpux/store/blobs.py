"""Content-addressed blobs under ``blobs/sha256/<hex>`` (OCI image layout).

A blob is written to a temp file in the store while it is hashed, fsynced, then renamed into
place, so a blob path either does not exist or holds exactly the bytes its name promises. Reads
verify the content again: disks and people do edit files. A write the machine refuses (a full
disk, a read-only store) is a :class:`MachineError` naming the store and the space needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from gpux.errors import DigestMismatchError, MachineError, NotFoundError, StoreError
from gpux.store import digest as digests

Progress = Callable[[int], None]
RACY_NS = 2_000_000_000
STORE = "the image store"


EARLY_FLUSH_BYTES = 16 << 20


class Readable(Protocol):
    """Anything with ``read(size)``: a file, or an HTTP response adapter (``gpux pull``)."""

    def read(self, size: int = -1, /) -> bytes: ...


class BlobStore:
    """``stamps``: where the stamps of verified blobs go (default ``root/verified``); elsewhere
    for a store that is read-only (a model folder: gpux/store/folder.py)."""

    def __init__(self, root: Path, stamps: Path | None = None) -> None:
        self.root = root
        self.directory = root / "blobs" / digests.ALGORITHM
        self.tmp = root / "tmp"
        self.stamps = stamps or root / "verified"

    def path(self, digest: str) -> Path:
        return self.directory / digests.hex_part(digest)

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def put_bytes(self, data: bytes) -> str:
        import io

        return self.put_stream(io.BytesIO(data))

    def put_file(self, source: Path, progress: Progress | None = None) -> str:
        with source.open("rb") as stream:
            return self.put_stream(
                stream, progress=progress, size=os.fstat(stream.fileno()).st_size
            )

    def put_stream(
        self,
        stream: Readable,
        expected: str | None = None,
        progress: Progress | None = None,
        size: int | None = None,
    ) -> str:
        """Copy ``stream`` into the store; return its digest. Atomic and idempotent."""
        chunks = iter(lambda: stream.read(digests.CHUNK), b"")
        return self.put_chunks(chunks, expected, progress, size)

    def put_chunks(
        self,
        chunks: Iterable[bytes],
        expected: str | None = None,
        progress: Progress | None = None,
        size: int | None = None,
    ) -> str:
        """Store the concatenation of ``chunks``, hashed on the way in; a content that does not
        match ``expected`` never enters the store. Atomic and idempotent. ``size``, when known,
        is only told to the user if the disk is full."""
        with refused_writes(self.root, size):
            self.directory.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="blob-", suffix=".partial")
        hasher = hashlib.sha256()
        tmp_path = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, _EarlyFlush(out) as flusher:
                for chunk in chunks:
                    hasher.update(chunk)
                    out.write(chunk)
                    flusher.wrote(len(chunk))
                    if progress:
                        progress(len(chunk))
                out.flush()
                flusher.finish()
                os.fsync(out.fileno())
            digest = f"sha256:{hasher.hexdigest()}"
            if expected is not None and digest != expected:
                raise DigestMismatchError(
                    f"content does not match its digest: expected {expected}, got {digest}",
                    "the source is corrupt or was changed in transit; fetch it again",
                )
            final = self.path(digest)
            if final.exists() and self._intact(digest):
                tmp_path.unlink()
            else:
                # Absent, or damaged on disk: the fresh copy we just hashed takes its place.
                make_readable(tmp_path)
                os.replace(tmp_path, final)
                _fsync_directory(self.directory)
            return digest
        except BaseException as exc:
            tmp_path.unlink(missing_ok=True)
            # A full disk shows at a write, or only when the file is closed (buffered data).
            # Mapped here, after the partial file is gone, so the free space told is the real
            # one. The source's own errors (a dropped connection) are none of those mapped.
            if isinstance(exc, OSError):
                refused = MachineError.from_os_error(exc, self.root, size, STORE)
                if refused is not None:
                    raise refused from exc
            raise

    def _intact(self, digest: str) -> bool:
        """Full re-hash, ignoring stamps: a write is the moment to repair silent corruption."""
        try:
            return digests.of_file(self.path(digest))[0] == digest
        except OSError:
            return False

    def open_verified(self, digest: str) -> bytes:
        """Read a (small) blob fully and check it against its digest."""
        path = self._existing(digest)
        data = path.read_bytes()
        if digests.of_bytes(data) != digest:
            raise self._corrupt(digest)
        return data

    def verified_path(self, digest: str) -> Path:
        """The path of a blob after checking its content (for large files handed to ONNX Runtime).

        Hashing costs about 0.7 ms per MB here (1.4 GB/s: 16 ms for the 23 MB MiniLM zoo model,
        whose ONNX Runtime session takes 220 ms to create), so a multi-GB model would pay
        seconds on every load. A successful check is therefore remembered with the file's size,
        mtime, ctime and inode (as git's index does). The ctime is what makes the stamp hold:
        a program can write a blob in place and put its size and mtime back (``os.utime``), but
        the kernel sets the ctime on every write and every ``utime``, and nothing but the clock
        sets it back. Damage below the filesystem (bit rot) changes no stamp: ``gpux verify``
        (:meth:`check`) re-hashes every blob and drops the stamp of a damaged one.
        """
        path = self._existing(digest)
        stamp = self._stamp(digest)
        status = path.stat()
        try:
            if stamp.read_text() == _fingerprint(status):
                return path
        except OSError:
            pass
        self._hash_and_stamp(digest, path, status)
        return path

    def check(self, digest: str, progress: Progress | None = None) -> None:
        """Re-hash a blob, ignoring its stamp; raise if it is missing or corrupt (``gpux verify``).

        An intact blob gets a fresh stamp; a corrupt one loses its stamp, so loading it hashes
        it again and refuses it."""
        path = self._existing(digest)
        self._hash_and_stamp(digest, path, path.stat(), progress)

    def _hash_and_stamp(
        self, digest: str, path: Path, status: os.stat_result, progress: Progress | None = None
    ) -> None:
        stamp = self._stamp(digest)
        hasher = hashlib.sha256()
        with path.open("rb") as stream:
            while chunk := stream.read(digests.CHUNK):
                hasher.update(chunk)
                if progress:
                    progress(len(chunk))
        if f"sha256:{hasher.hexdigest()}" != digest:
            with contextlib.suppress(OSError):  # a read-only store: the load hashes anyway
                stamp.unlink(missing_ok=True)
            raise self._corrupt(digest)
        if time.time_ns() - max(status.st_mtime_ns, status.st_ctime_ns) < RACY_NS:
            # Modified within the filesystem's timestamp granularity: a later edit in the same
            # tick would keep the same stamps, so do not remember this check (git's racy rule).
            return
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(_fingerprint(status))
        except OSError:
            pass  # a read-only store still works, it just hashes every time

    def _stamp(self, digest: str) -> Path:
        return self.stamps / digests.hex_part(digest)

    def delete(self, digest: str) -> int:
        path = self.path(digest)
        size = path.stat().st_size if path.exists() else 0
        path.unlink(missing_ok=True)
        self._stamp(digest).unlink(missing_ok=True)
        return size

    def __iter__(self) -> Iterator[str]:
        if not self.directory.is_dir():
            return
        for entry in self.directory.iterdir():
            name = f"sha256:{entry.name}"
            try:
                yield digests.validate(name)
            except StoreError:
                continue  # not ours; prune reports but never follows foreign names

    def _existing(self, digest: str) -> Path:
        path = self.path(digest)
        if not path.is_file():
            raise NotFoundError(
                f"blob {digest} is missing from the store",
                "the image is incomplete; remove it with 'gpux rm' and build or pull it again",
            )
        return path

    def _corrupt(self, digest: str) -> DigestMismatchError:
        return DigestMismatchError(
            f"blob {digests.short(digest)} in the store is corrupt (its content no longer matches "
            "its digest)",
            "rebuild it with 'gpux build --force' (or pull it again): a good copy replaces the damaged blob; 'gpux rm' and 'gpux prune' remove it",
        )


def _fingerprint(status: os.stat_result) -> str:
    """What a verified stamp remembers of a blob (stamps of older GPUX lack the ctime: they no
    longer match, so those blobs are hashed once more)."""
    return f"{status.st_size} {status.st_mtime_ns} {status.st_ctime_ns} {status.st_ino}"


@contextlib.contextmanager
def refused_writes(
    path: Path, needed: int | None = None, what: str | None = STORE
) -> Iterator[None]:
    """Turn the machine refusing a write under ``path`` (full disk or quota, read-only
    filesystem, permission) into a :class:`MachineError`; other OSErrors pass unchanged."""
    try:
        yield
    except OSError as exc:
        refused = MachineError.from_os_error(exc, path, needed, what)
        if refused is None:
            raise
        raise refused from exc


class _EarlyFlush:
    """Starts writing a large blob to disk while it is still arriving.

    Every ``EARLY_FLUSH_BYTES`` a thread runs ``fdatasync`` on the file, so the disk works in
    parallel with the network and the hashing, and the final ``fsync`` (which makes the blob
    durable before an image names it) finds little left to write.
    """

    def __init__(self, out: Any) -> None:
        self._out = out
        self._pending = 0
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _EarlyFlush:
        return self

    def wrote(self, size: int) -> None:
        self._pending += size
        if self._pending < EARLY_FLUSH_BYTES or (self._thread and self._thread.is_alive()):
            return
        self._pending = 0
        self._out.flush()
        descriptor = self._out.fileno()
        self._thread = threading.Thread(target=os.fdatasync, args=(descriptor,), daemon=True)
        self._thread.start()

    def finish(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def __exit__(self, *exc: object) -> None:
        self.finish()  # never close the file under a running fdatasync


def make_readable(path: Path) -> None:
    """mkstemp creates 0600 files; a shared GPUX_HOME needs blobs other users can read."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":  # pragma: no cover
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
