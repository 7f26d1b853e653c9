"""Files written all at once: readers see the old content or the new, never a part."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gpux.store.blobs import _make_readable


@contextlib.contextmanager
def atomic_file(path: Path, *, readable: bool = True) -> Iterator[BinaryIO]:
    """A temp file beside ``path``, fsynced and renamed over it when the block succeeds; removed
    when it fails. ``readable``: other users may read it (a shared store), else it stays 0600
    (credentials)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        if readable:
            _make_readable(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
