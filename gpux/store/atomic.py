"""Files written all at once: readers see the old content or the new, never a part."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gpux.errors import MachineError
from gpux.store.blobs import make_readable


@contextlib.contextmanager
def atomic_file(
    path: Path, *, readable: bool = True, needed: int | None = None
) -> Iterator[BinaryIO]:
    """A temp file beside ``path``, fsynced and renamed over it when the block succeeds; removed
    when it fails. ``readable``: other users may read it (a shared store), else it stays 0600
    (credentials). A full disk or a read-only folder is a :class:`MachineError` naming
    ``path`` (and ``needed``, the bytes the file will take, when the caller knows them)."""
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    except OSError as exc:
        refused = MachineError.from_os_error(exc, path, needed)
        if refused is None:
            raise
        raise refused from exc
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        if readable:
            make_readable(Path(temporary))
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        # Only errors that can only come from writing (the block may read files: a permission
        # error there is not about ``path``); mapped once the partial file is gone, so the free
        # space told is the real one.
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            refused = MachineError.from_os_error(exc, path, needed)
            if refused is not None:
                raise refused from exc
        raise
