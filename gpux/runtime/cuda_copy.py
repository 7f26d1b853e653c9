"""Copies between host arrays and fixed CUDA buffers without holding the interpreter lock.

A CUDA graph reads its inputs from, and writes its outputs to, fixed device buffers
(onnxruntime_backend._GraphRunner). ONNX Runtime's ``OrtValue.update_inplace`` and
``OrtValue.numpy`` copy into and out of them with the GIL held: on an H100 with 8 front-ends
at c=32 (py-spy, ``benchmarks/serve.py --profile``), the shared engine's interpreter was held
8% of the time by ``update_inplace`` (ResNet-50: 12 images, 7 MB per call) and 12% by
``numpy`` (BERT-base's hidden states: 6 MB per call), while its event loop and reader threads
waited. Here the same copies go through the CUDA runtime that ONNX Runtime loaded, called
with ctypes, which releases the GIL for the length of each call.

Each copy is issued on a stream of its own (non-blocking: it does not wait for work that other
threads queued on the legacy default stream) and waited for before returning, so the copy is
complete before the graph replays, and an output is complete before anyone reads it (ONNX
Runtime synchronizes its own stream at the end of ``run_with_iobinding``).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

_HOST_TO_DEVICE = 1  # cudaMemcpyHostToDevice
_DEVICE_TO_HOST = 2  # cudaMemcpyDeviceToHost
_NON_BLOCKING = 1  # cudaStreamNonBlocking


class CudaCopies:
    """Host <-> device copies on one device. Any thread may copy, on a stream of its own
    (made on the device the first time: a copy issued to a stream runs on the stream's device,
    whichever device the thread has made current since, CUDA's programming guide, "Stream and
    Event Behavior")."""

    def __init__(self, cudart: Any, device: int) -> None:
        self._cudart = cudart
        self._device = device
        self._streams = threading.local()  # copies of two calls in flight overlap

    @classmethod
    def load(cls, device: int) -> CudaCopies | None:
        """Copies through the CUDA runtime ONNX Runtime's CUDA EP loaded; None without one."""
        from gpux.runtime import libraries

        cudart = libraries.cuda_runtime()
        return None if cudart is None else cls(cudart, device)

    def to_device(self, pointer: int, array: np.ndarray[Any, Any]) -> bool:
        """``array``'s bytes into the device buffer at ``pointer`` (as large); False if CUDA
        refused (the caller copies another way)."""
        source = np.ascontiguousarray(array)
        return self._copy(pointer, source.ctypes.data, source.nbytes, _HOST_TO_DEVICE)

    def to_host(
        self, pointer: int, shape: tuple[int, ...], dtype: np.dtype[Any]
    ) -> np.ndarray[Any, Any] | None:
        """A fresh array of the device buffer at ``pointer``; None if CUDA refused."""
        array: np.ndarray[Any, Any] = np.empty(shape, dtype)
        if not self._copy(array.ctypes.data, pointer, array.nbytes, _DEVICE_TO_HOST):
            return None
        return array

    def _copy(self, destination: int, source: int, nbytes: int, kind: int) -> bool:
        if not nbytes:
            return True
        stream = self._stream()
        if stream is None:
            return False
        cudart = self._cudart
        code = cudart.cudaMemcpyAsync(
            ctypes.c_void_p(destination),
            ctypes.c_void_p(source),
            ctypes.c_size_t(nbytes),
            ctypes.c_int(kind),
            stream,
        )
        if code == 0:
            code = cudart.cudaStreamSynchronize(stream)
        if code != 0:
            cudart.cudaGetLastError()  # reset: no later CUDA call reports this one's error
            return False
        return True

    def _stream(self) -> ctypes.c_void_p | None:
        stream: ctypes.c_void_p | None = getattr(self._streams, "stream", None)
        if stream is not None:
            return stream
        cudart = self._cudart
        made = ctypes.c_void_p()
        code = cudart.cudaSetDevice(ctypes.c_int(self._device))
        if code == 0:
            code = cudart.cudaStreamCreateWithFlags(
                ctypes.byref(made), ctypes.c_uint(_NON_BLOCKING)
            )
        if code != 0:
            cudart.cudaGetLastError()
            return None
        self._streams.stream = made
        return made
