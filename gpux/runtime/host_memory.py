"""Host buffers for batches: joined once, and page-locked when they go to a CUDA device.

A server joins the rows of a batch into one array per input and hands it to the backend. On
ONNX Runtime's CUDA EP the array is then copied to the GPU inside ``run``; from pageable memory
the driver stages it through a pinned buffer of its own, from page-locked memory it is one DMA.
Measured on an H100 with ResNet-50 (``benchmarks/gpu_input_copy.py``): a call of 16 images
takes 4.16 ms from a numpy array, 3.49 ms from the same array page-locked with
``cudaHostRegister`` and 3.31 ms with the input already on the device (b32: 7.91, 6.23, 5.85).

Page-locking costs a system call and pins RAM, so buffers are kept and reused: a server runs a
few batch sizes (its preferred sizes), so a few shapes cover every call. Each buffer is used
by one call at a time, taken before the join and given back after ``run`` returns (ONNX Runtime
has read it by then: copied it to the device, or computed from it on the CPU, whose outputs
are arrays of their own). Past ``limit_bytes`` kept, buffers are fresh arrays, used once.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from gpux.runtime.backend import Placement

Array = np.ndarray[Any, Any]

DEFAULT_LIMIT_BYTES = 1 << 30  # ResNet-50: 4 calls in flight x sizes 1..32 take ~150 MB
CPU_LIMIT_BYTES = 256 << 20  # no preferred sizes on the CPU: up to 32 shapes per input


class HostBuffers:
    """Reusable host arrays by (shape, dtype), page-locked through ``pin`` when it is given.

    Reuse pays on the CPU too: a fresh array of a few MB is fresh pages from the kernel, and
    writing a batch into them faults each page in (joining five ResNet-50 images took 0.75 ms
    on the 2-core CPU machine, most of it page faults)."""

    def __init__(self, pin: Any | None = None, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self._pin = pin  # libcudart, or None: nothing page-locked
        self._limit = limit_bytes
        self._free: dict[tuple[tuple[int, ...], str], list[Array]] = {}
        self._kept: dict[int, Array] = {}  # id -> buffer, every one that is reused
        self._pinned: set[int] = set()  # the ids of those page-locked
        self._kept_bytes = 0
        self._lock = threading.Lock()  # calls in flight take and give from their threads

    @property
    def pins(self) -> bool:
        return self._pin is not None

    @property
    def kept_bytes(self) -> int:
        return self._kept_bytes

    @property
    def pinned_bytes(self) -> int:
        return sum(self._kept[i].nbytes for i in self._pinned)

    def take(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array:
        """An array of ``shape`` and ``dtype`` (contents undefined) for one call."""
        key = (tuple(shape), np.dtype(dtype).str)
        with self._lock:
            free = self._free.get(key)
            if free:
                return free.pop()
            array: Array = np.empty(shape, dtype)
            if not array.nbytes or self._kept_bytes + array.nbytes > self._limit:
                return array  # used once
            self._kept[id(array)] = array
            self._kept_bytes += array.nbytes
            if self._pin is not None and self._register(array):
                self._pinned.add(id(array))
            return array

    def give(self, array: Array) -> None:
        """``array`` back after its call, for the next call of its shape."""
        with self._lock:
            if self._kept.get(id(array)) is array:
                self._free.setdefault((array.shape, array.dtype.str), []).append(array)

    def join(self, parts: Sequence[Array], extra: int = 0) -> Array:
        """:func:`join_rows` written once into a buffer from ``take``."""
        rows = sum(int(part.shape[0]) for part in parts) + extra
        return join_rows(parts, extra, self.take((rows, *parts[0].shape[1:]), parts[0].dtype))

    def close(self) -> None:
        with self._lock:
            if self._pin is not None:
                for key in self._pinned:
                    self._pin.cudaHostUnregister(ctypes.c_void_p(self._kept[key].ctypes.data))
            self._kept.clear()
            self._pinned.clear()
            self._free.clear()
            self._kept_bytes = 0

    def _register(self, array: Array) -> bool:
        assert self._pin is not None
        code = self._pin.cudaHostRegister(  # 1: cudaHostRegisterPortable, for every GPU
            ctypes.c_void_p(array.ctypes.data), ctypes.c_size_t(array.nbytes), 1
        )
        if code != 0:  # out of lockable memory, say: the copy is slower, never wrong
            self._pin.cudaGetLastError()  # reset the last error: no later call reports it
            return False
        return True


def join_rows(parts: Sequence[Array], extra: int = 0, out: Array | None = None) -> Array:
    """``parts`` one after another along the first axis, then ``extra`` copies of the last row
    (a batch padded to a size the model runs: real data, no NaN from zeros through a softmax),
    in ``out`` when given (its rows: the parts' and ``extra``). A large join is copied by
    several threads (:func:`_copy_in_parallel`)."""
    rows = sum(int(part.shape[0]) for part in parts)
    if out is None:
        out = np.empty((rows + extra, *parts[0].shape[1:]), parts[0].dtype)
    pool = _copiers() if len(parts) > 1 and out.nbytes >= PARALLEL_BYTES else None
    if pool is None:
        np.concatenate(parts, out=out[:rows])
    else:
        _copy_in_parallel(pool, parts, out, rows)
    if extra:
        out[rows:] = parts[-1][-1:]
    return out


# Joins at least this large are split between threads: numpy copies without the GIL, but one
# core copies ~6 GB/s (an H100 host, 16 cores: 12 ResNet-50 images, 7.5 MB, took 1.24 ms per
# batch in a shared engine's calls, on the path of every request in it).
PARALLEL_BYTES = 2 << 20
COPY_THREADS = min(4, (os.cpu_count() or 1) // 4)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _copiers() -> ThreadPoolExecutor | None:
    """Threads for large joins: a quarter of the cores, at most 4 (memory bandwidth, not
    cores, is what they share); none below 8 cores, where the model's threads need them."""
    global _pool
    if COPY_THREADS < 2:
        return None
    with _pool_lock:
        if _pool is None:  # the joining thread copies one share itself
            _pool = ThreadPoolExecutor(COPY_THREADS - 1, thread_name_prefix="gpux-join")
    return _pool


def _copy_in_parallel(
    pool: ThreadPoolExecutor, parts: Sequence[Array], out: Array, rows: int
) -> None:
    """``parts`` into ``out[:rows]`` in groups of about equal rows, one group on this thread
    and the others on ``pool``."""
    groups = min(len(parts), COPY_THREADS)
    spans: list[tuple[int, list[Array]]] = [(0, [])]
    done = 0
    for part in parts:
        if spans[-1][1] and done * groups >= len(spans) * rows:  # this group has its share
            spans.append((done, []))
        spans[-1][1].append(part)
        done += int(part.shape[0])
    ends = [start for start, _ in spans[1:]] + [rows]
    copies = [
        pool.submit(np.concatenate, group, out=out[start:end])
        for (start, group), end in zip(spans[1:], ends[1:], strict=True)
    ]
    start, group = spans[0]
    np.concatenate(group, out=out[start : ends[0]])
    for copy in copies:
        copy.result()


def for_placement(placement: Placement, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> HostBuffers:
    """Page-locking buffers for a model on ONNX Runtime's CUDA or TensorRT EP (whose inputs
    are copied from host memory in ``run``); plain reused ones for any other placement."""
    if not {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(placement.providers):
        return HostBuffers(limit_bytes=CPU_LIMIT_BYTES)
    from gpux.runtime import libraries

    cudart = libraries.cuda_runtime()
    if cudart is None:
        return HostBuffers(limit_bytes=CPU_LIMIT_BYTES)
    return HostBuffers(cudart, limit_bytes)
