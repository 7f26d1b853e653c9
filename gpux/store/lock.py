"""Advisory file locks for the store.

Writers of new images take the lock *shared* (several builds may write blobs at once, and blob
writes are idempotent); operations that delete blobs (``rm``, ``prune``) take it *exclusive*, so
they never remove a blob that a running build has written but not yet referenced. Index updates
take a second, short exclusive lock.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from gpux.errors import MachineError


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold the lock file ``path`` (``<store>/locks/<name>``). A store that cannot be written
    (read-only, not ours) fails here, before any work, as a :class:`MachineError`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        refused = MachineError.from_os_error(exc, path.parent.parent, what="the image store")
        if refused is None:
            raise
        raise refused from exc
    try:
        if sys.platform == "win32":  # pragma: no cover - no shared locks there; exclusive is safe
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
