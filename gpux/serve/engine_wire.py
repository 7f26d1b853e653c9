"""How the front-end processes of a shared engine talk to it: one message per model call.

A message is a small header (pickled: a call id, the model's key or an error, and each tensor's
name, dtype and shape) followed by each tensor's bytes as they lie in memory, sent as separate
frames of one ``multiprocessing.connection`` (an AF_UNIX socket with an HMAC handshake). The
receiver allocates each array first and reads its frame straight into it, so a tensor is
copied once into the socket and once out of it, with no pickling of its contents (a 600 KB
ResNet-50 image: two memory copies, tens of microseconds, against the 1.9 ms of CPU a request
costs a server process: docs/benchmarks.md).
"""

from __future__ import annotations

import pickle
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


def send_message(conn: Connection, head: Any, arrays: Mapping[str, np.ndarray[Any, Any]]) -> None:
    """``head`` (picklable, small) and ``arrays``, as one message on ``conn``. Not thread-safe:
    callers that share ``conn`` hold a lock around it."""
    contiguous = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
    shapes = [(name, a.dtype.str, a.shape) for name, a in contiguous.items()]
    conn.send_bytes(pickle.dumps((head, shapes), protocol=pickle.HIGHEST_PROTOCOL))
    for array in contiguous.values():
        if array.nbytes:
            conn.send_bytes(array.data.cast("B"))


def receive_message(conn: Connection) -> tuple[Any, Arrays]:
    """The next message on ``conn``: its head and its arrays (fresh, writable). Raises
    ``EOFError`` when the peer has gone."""
    head, shapes = pickle.loads(conn.recv_bytes(MAX_HEADER_BYTES))
    arrays: Arrays = {}
    for name, dtype, shape in shapes:
        kind = np.dtype(dtype)
        if kind.hasobject:  # bytes would be read as pointers
            raise ValueError(f"tensor '{name}' of dtype {kind} cannot cross processes")
        array = np.empty(shape, dtype=kind)
        if array.nbytes:
            conn.recv_bytes_into(array.data.cast("B"))
        arrays[name] = array
    return head, arrays
