"""Host buffers for batches (gpux/runtime/host_memory.py): the join equals concatenating and
repeating the last row; buffers are reused by shape and dtype, bounded in bytes, page-locked
through the CUDA runtime when one is given, and a buffer the runtime cannot lock still works.
The CUDA runtime is replaced here by a recorder of its two calls (this machine has no GPU);
tests/gpu/test_pinned_batches.py runs the real one."""

from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpux.runtime import host_memory
from gpux.runtime.backend import Placement
from gpux.runtime.host_memory import HostBuffers


class RecordingRuntime:
    """``cudaHostRegister`` / ``cudaHostUnregister`` / ``cudaGetLastError`` as ctypes calls them."""

    def __init__(self, refuse: bool = False) -> None:
        self.registered: dict[int, int] = {}
        self.refuse = refuse
        self.errors_cleared = 0

    def cudaHostRegister(self, ptr: ctypes.c_void_p, size: ctypes.c_size_t, flags: int) -> int:
        if self.refuse:
            return 2  # cudaErrorMemoryAllocation
        assert flags == 1  # portable: locked for every device's context
        self.registered[int(ptr.value or 0)] = int(size.value)
        return 0

    def cudaHostUnregister(self, ptr: ctypes.c_void_p) -> int:
        del self.registered[int(ptr.value or 0)]
        return 0

    def cudaGetLastError(self) -> int:
        self.errors_cleared += 1
        return 0


@pytest.mark.parametrize("extra", [0, 1, 5])
def test_join_is_concatenate_then_the_last_row_repeated(extra: int) -> None:
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((rows, 3, 4)).astype(np.float32) for rows in (2, 1, 3)]
    joined = HostBuffers().join(parts, extra)
    expected = np.concatenate([*parts, np.repeat(parts[-1][-1:], extra, axis=0)])
    np.testing.assert_array_equal(joined, expected)
    assert joined.dtype == np.float32 and joined.flags.c_contiguous


def test_buffers_are_reused_by_shape_and_dtype_only_after_they_are_given_back() -> None:
    buffers = HostBuffers()
    first = buffers.take((4, 3), np.dtype(np.float32))
    second = buffers.take((4, 3), np.dtype(np.float32))  # the first is still in use
    assert first is not second
    buffers.give(first)
    assert buffers.take((4, 3), np.dtype(np.int64)) is not first  # another dtype
    assert buffers.take((5, 3), np.dtype(np.float32)) is not first  # another shape
    assert buffers.take((4, 3), np.dtype(np.float32)) is first
    buffers.give(np.empty((4, 3), np.float32))  # never taken from here: not kept
    assert buffers.take((4, 3), np.dtype(np.float32)) is not first


def test_past_the_limit_buffers_are_used_once() -> None:
    buffers = HostBuffers(limit_bytes=100)
    kept = buffers.take((20,), np.dtype(np.float32))  # 80 bytes: kept
    once = buffers.take((20,), np.dtype(np.float32))  # 160 would pass the limit
    buffers.give(kept)
    buffers.give(once)
    assert buffers.kept_bytes == 80
    assert buffers.take((20,), np.dtype(np.float32)) is kept
    assert buffers.take((20,), np.dtype(np.float32)) is not once


def test_kept_buffers_are_page_locked_once_and_unlocked_on_close() -> None:
    runtime = RecordingRuntime()
    buffers = HostBuffers(runtime)
    array = buffers.take((8, 3), np.dtype(np.float32))
    buffers.give(array)
    assert buffers.take((8, 3), np.dtype(np.float32)) is array
    assert runtime.registered == {array.ctypes.data: array.nbytes}
    assert buffers.pinned_bytes == array.nbytes
    buffers.close()
    assert runtime.registered == {}


def test_a_buffer_that_cannot_be_locked_is_still_used_and_reused() -> None:
    runtime = RecordingRuntime(refuse=True)
    buffers = HostBuffers(runtime)
    array = buffers.take((2, 2), np.dtype(np.float32))
    assert runtime.errors_cleared == 1 and buffers.pinned_bytes == 0
    buffers.give(array)
    assert buffers.take((2, 2), np.dtype(np.float32)) is array
    buffers.close()  # nothing to unlock


def test_only_cuda_placements_lock_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    def placement(providers: list[str]) -> Placement:
        return Placement("x", providers, "device", "auto")

    assert not host_memory.for_placement(placement(["CPUExecutionProvider"])).pins
    loaded: list[Any] = []

    class Found:
        found = "libcudart.so.13"

    monkeypatch.setattr(host_memory.ctypes, "CDLL", lambda name: loaded.append(name) or name)
    from gpux.runtime import libraries

    monkeypatch.setattr(libraries, "find", lambda name: Found())
    assert host_memory.for_placement(placement(["CUDAExecutionProvider"])).pins
    assert loaded == ["libcudart.so.13"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=2, max_size=12), st.integers(2, 4), st.integers(0, 3))
def test_a_large_join_split_between_threads_equals_concatenate(
    rows: list[int], threads: int, extra: int
) -> None:
    """A many-core host copies a large batch's rows on several threads, each its share of the
    rows, one of them the joining thread: the result is the same join, whatever the shares."""
    rng = np.random.default_rng(len(rows))
    parts = [rng.standard_normal((n, 3, 5)).astype(np.float32) for n in rows]
    with (
        pytest.MonkeyPatch.context() as patch,
        ThreadPoolExecutor(threads - 1) as pool,
    ):
        patch.setattr(host_memory, "PARALLEL_BYTES", 1)
        patch.setattr(host_memory, "COPY_THREADS", threads)
        patch.setattr(host_memory, "_copiers", lambda: pool)
        got = host_memory.join_rows(parts, extra)
    expected = np.concatenate([*parts, np.repeat(parts[-1][-1:], extra, axis=0)])
    assert np.array_equal(got, expected)
