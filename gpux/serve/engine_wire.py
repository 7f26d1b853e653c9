"""How the front-end processes of a shared engine talk to it: one message per model call.

A message is a small header (pickled: a call id, the model's key or an error, and each tensor's
name, dtype and shape) followed by each tensor's bytes as they lie in memory, on an AF_UNIX
stream socket. The connection is opened by ``multiprocessing.connection`` (its HMAC handshake
proves the peer holds the server's key); then its socket is used directly: the receiver
allocates each array and ``recv_into``s it, so a tensor is copied once into the socket and once
out of it, with the GIL released while the kernel copies. ``Connection.recv_bytes_into`` copied
each 600 KB ResNet-50 image three times with the GIL held (chunks, a BytesIO, the target), and
an engine behind four front-ends answered 1,522 images/s where four plain workers answered 2,137
(an H100, docs/benchmarks.md).
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray[Any, Any]]
AUTHKEY_ENV = "GPUX_ENGINE_AUTHKEY"
ADDRESS_ENV = "GPUX_ENGINE_ADDRESS"
# A header names at most a few tensors: anything longer is not ours (the peer is authenticated,
# but a bound keeps one bad message from allocating at will).
MAX_HEADER_BYTES = 1 << 20
_LENGTH = struct.Struct("<Q")


class Channel:
    """Messages over one connected stream socket. ``send`` is not thread-safe: callers that
    share a channel hold a lock around it; one thread receives."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def of(cls, conn: Connection) -> Channel:
        """The authenticated ``conn``'s socket, taken over (``conn`` is closed)."""
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        conn.close()
        sock.setblocking(True)
        return cls(sock)

    def send(self, head: Any, arrays: Mapping[str, np.ndarray[Any, Any]]) -> None:
        contiguous = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
        shapes = [(name, a.dtype.str, a.shape) for name, a in contiguous.items()]
        header = pickle.dumps((head, shapes), protocol=pickle.HIGHEST_PROTOCOL)
        self.sock.sendall(_LENGTH.pack(len(header)) + header)
        for array in contiguous.values():
            if array.nbytes:
                self.sock.sendall(array.data.cast("B"))

    def receive(self) -> tuple[Any, Arrays]:
        """The next message: its head and its arrays (fresh, writable). ``EOFError`` when the
        peer has gone."""
        (length,) = _LENGTH.unpack(self._exactly(_LENGTH.size))
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"a message header of {length} bytes is not from a GPUX engine")
        head, shapes = pickle.loads(self._exactly(length))
        arrays: Arrays = {}
        for name, dtype, shape in shapes:
            kind = np.dtype(dtype)
            if kind.hasobject:  # bytes would be read as pointers
                raise ValueError(f"tensor '{name}' of dtype {kind} cannot cross processes")
            array = np.empty(shape, dtype=kind)
            if array.nbytes:
                self._fill(array.data.cast("B"))
            arrays[name] = array
        return head, arrays

    def _exactly(self, size: int) -> bytes:
        buffer = bytearray(size)
        self._fill(memoryview(buffer))
        return bytes(buffer)

    def _fill(self, view: memoryview) -> None:
        while view.nbytes:
            got = self.sock.recv_into(view)
            if not got:
                raise EOFError("the peer closed the connection")
            view = view[got:]

    def close(self) -> None:
        self.sock.close()
