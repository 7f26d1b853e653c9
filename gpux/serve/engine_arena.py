"""Shared memory between a front-end and the shared engine: the tensors of a call, put where
the engine reads them, so that the socket carries only the call's header.

Why: through the socket, a 600 KB ResNet-50 image was copied into the kernel and out of it, in
pieces of the socket's buffer (~200 KB), and each piece woke the engine's reader thread, which
took the engine's one interpreter lock to ask for the next; the front-end's loop kept what the
socket did not take in a buffer of its own (a third copy) and wrote it as the engine read. Here
the front-end copies each large tensor once into its arena and the engine's batcher reads it
from there (into the batch it joins), whatever its size. Measured on an H100, 8 front-ends at
c=32 (docs/benchmarks.md): ResNet-50 over HTTP binary went from 2,323 to 2,823 requests/s
(different machines of the same kind: 0.62x to 0.65x in-process), the server's CPU per answer
from 2.01 to 1.53 ms.

Each front-end owns one arena: an anonymous file (``memfd_create``, Linux) mapped in both
processes, its descriptor passed to the engine at the handshake (``SCM_RIGHTS``), gone when
both close it; nothing is written to disk or to /dev/shm. A block is the front-end's again when
the engine answers the call that used it. A call that does not fit what is free goes through
the socket as before, so the arena's size bounds memory, not what a call may send.
"""

from __future__ import annotations

import math
import mmap
import os
from bisect import insort
from typing import Any

import numpy as np

# Bytes of each front-end's arena. Touched pages stay resident, so this bounds the memory it
# costs (x workers): 32 MiB holds 16 calls in flight of two ResNet-50 images each, or one of
# 52; larger calls take the socket.
ARENA_BYTES = 32 << 20
# Tensors smaller than this travel with the header: one more write of a few KB costs less than
# a block's bookkeeping, and most of a BERT call's inputs are that small.
SMALLEST_PLACED = 16 << 10
_ALIGN = 64  # each block starts on a cache line (and on any dtype's alignment)


class Arena:
    """The front-end's side: blocks taken for a call's tensors and given back on its answer.
    Used from one thread (the front-end's event loop)."""

    def __init__(self, size: int = ARENA_BYTES) -> None:
        self.fd = os.memfd_create("gpux-engine-arena", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            self.map = mmap.mmap(self.fd, size)
        except OSError:
            os.close(self.fd)
            raise
        self.size = size
        self._free: list[tuple[int, int]] = [(0, size)]  # (offset, bytes), by offset

    @classmethod
    def create(cls, size: int = ARENA_BYTES) -> Arena | None:
        """An arena, or None where the system has no anonymous shared files (calls then go
        through the socket)."""
        if not hasattr(os, "memfd_create"):
            return None
        try:
            return cls(size)
        except OSError:
            return None

    def place(self, array: np.ndarray[Any, Any]) -> int | None:
        """``array``'s bytes copied into a block: its offset, or None when none is free."""
        wanted = _block_bytes(array.nbytes)
        for index, (offset, size) in enumerate(self._free):
            if size >= wanted:
                if size == wanted:
                    del self._free[index]
                else:
                    self._free[index] = (offset + wanted, size - wanted)
                view = np.ndarray(array.shape, array.dtype, buffer=self.map, offset=offset)
                np.copyto(view, array, casting="no")
                return offset
        return None

    def give_back(self, offset: int, nbytes: int) -> None:
        """A block placed for a call that the engine has answered (it reads it no more)."""
        size = _block_bytes(nbytes)
        insort(self._free, (offset, size))
        merged: list[tuple[int, int]] = []
        for start, length in self._free:  # a few blocks at most: calls in flight
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + length)
            else:
                merged.append((start, length))
        self._free = merged

    @property
    def free_bytes(self) -> int:
        return sum(size for _, size in self._free)


def _block_bytes(nbytes: int) -> int:
    """The bytes a block of ``nbytes`` takes: rounded up to the alignment."""
    return -(-nbytes // _ALIGN) * _ALIGN


def mapped(fd: int, size: int) -> mmap.mmap:
    """The engine's side: a front-end's arena, mapped (the descriptor is closed)."""
    try:
        if os.fstat(fd).st_size < size:
            raise ValueError(f"an arena of {size} bytes is larger than its file")
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def view(
    arena: mmap.mmap | None,
    name: str,
    dtype: np.dtype[Any],
    shape: tuple[int, ...],
    offset: int,
) -> np.ndarray[Any, Any]:
    """The tensor a header places at ``offset``, as a view of the arena (no copy); a place
    outside it is refused (``ValueError``)."""
    if arena is None:
        raise ValueError(f"tensor '{name}' is placed in shared memory this connection has not")
    if any(size < 0 for size in shape):
        raise ValueError(f"tensor '{name}' has a negative dimension")
    nbytes = math.prod(shape) * dtype.itemsize
    if offset < 0 or offset + nbytes > len(arena):
        raise ValueError(f"tensor '{name}' is placed outside the shared memory")
    return np.ndarray(shape, dtype, buffer=arena, offset=offset)
