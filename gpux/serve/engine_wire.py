"""How the front-end processes of a shared engine talk to it: one message per model call.

A message is a small header (pickled: a call id, the model's key or an error, and each tensor's
name, dtype, shape and, for a tensor placed in the front-end's shared memory
(gpux/serve/engine_arena.py), its offset there) followed by the bytes of each other tensor as
they lie in memory, on an AF_UNIX stream socket. The connection is opened by ``multiprocessing.connection`` (its HMAC handshake
proves the peer holds the server's key); then its socket is used directly: the receiver
allocates each array and ``recv_into``s it, so a tensor is copied once into the socket and once
out of it, with the GIL released while the kernel copies. ``Connection.recv_bytes_into`` copied
each 600 KB ResNet-50 image three times with the GIL held (chunks, a BytesIO, the target), and
an engine behind four front-ends answered 1,522 images/s where four plain workers answered 2,137
(an H100, docs/benchmarks.md).

Three readers and writers of that format: :class:`Channel` for a thread that owns a socket (the
handshake), :class:`MessageReader` for an event loop that reads (a front-end's answers, through
asyncio's BufferedProtocol; the engine's calls, as its loop finds them readable), and
:class:`Outbox` for an event loop that writes without ever blocking (the engine's answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import pickle
import socket
import struct
from collections import deque
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from gpux.serve import engine_arena

Arrays = dict[str, np.ndarray[Any, Any]]
AUTHKEY_ENV = "GPUX_ENGINE_AUTHKEY"
ADDRESS_ENV = "GPUX_ENGINE_ADDRESS"
# A header names at most a few tensors: anything longer is not ours (the peer is authenticated,
# but a bound keeps one bad message from allocating at will).
MAX_HEADER_BYTES = 1 << 20
_LENGTH = struct.Struct("<Q")
SEND_BUFFER_BYTES = 4 << 20
_WAIT_SECONDS = 3600.0


class Channel:
    """Messages over one connected stream socket. ``send`` is not thread-safe: callers that
    share a channel hold a lock around it; one thread receives."""

    def __init__(self, sock: socket.socket) -> None:
        # Waits with a timeout, which Python implements by polling before each read or write:
        # that holds whatever the socket's blocking mode, which an event loop that watches the
        # fd may change (uvloop sets O_NONBLOCK).
        sock.settimeout(_WAIT_SECONDS)
        # A larger send buffer (the kernel caps it at net.core.wmem_max, often 4 MB; the
        # default is ~200 KB) takes a 400 KB answer in one write instead of several.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        self.sock = sock
        self.arena: mmap.mmap | None = None  # the peer's shared memory, once it gave it

    @classmethod
    def of(cls, conn: Connection) -> Channel:
        """The authenticated ``conn``'s socket, taken over (``conn`` is closed)."""
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        conn.close()
        return cls(sock)

    def send(self, head: Any, arrays: Mapping[str, np.ndarray[Any, Any]]) -> None:
        for part in encode(head, arrays):
            self.sock.sendall(part)

    def receive(self) -> tuple[Any, Arrays]:
        """The next message: its head and its arrays (fresh, writable). ``EOFError`` when the
        peer has gone."""
        (length,) = _LENGTH.unpack(self._exactly(_LENGTH.size))
        head, shapes = pickle.loads(self._exactly(checked_length(length)))
        arrays, inline = allocate(shapes, self.arena)
        for array in inline:
            self._fill(array.data.cast("B"))
        return head, arrays

    def receive_arena(self, size: int) -> bool:
        """The peer's shared memory: the descriptor it sends next (``SCM_RIGHTS``), mapped.
        False when it cannot be mapped (the connection goes on without it); ``ValueError`` or
        ``OSError`` when no descriptor came (the connection is out of step)."""
        _, fds, _, _ = socket.recv_fds(self.sock, 1, 1)
        if not fds:
            raise ValueError("the peer announced shared memory and sent none")
        for extra in fds[1:]:
            os.close(extra)
        try:
            self.arena = engine_arena.mapped(fds[0], size)
        except (OSError, ValueError, OverflowError):
            return False
        return True

    def _exactly(self, size: int) -> bytes:
        buffer = bytearray(size)
        self._fill(memoryview(buffer))
        return bytes(buffer)

    def _fill(self, view: memoryview) -> None:
        while view.nbytes:
            try:
                got = self.sock.recv_into(view)
            except TimeoutError:
                continue  # a quiet peer has not gone
            if not got:
                raise EOFError("the peer closed the connection")
            view = view[got:]

    def close(self) -> None:
        # Not the arena: arrays that view it may still be in a batch; it is unmapped when the
        # last of them goes.
        self.sock.close()


def encode(
    head: Any, arrays: Mapping[str, np.ndarray[Any, Any]], placed: Mapping[str, int] | None = None
) -> list[memoryview]:
    """One message as the buffers to write in turn: its length and header, then the bytes of
    each tensor not ``placed`` in shared memory (at the offset given), as they lie in memory
    (views, not copies: the arrays must not change until sent)."""
    placed = placed or {}
    shapes = [(name, a.dtype.str, a.shape, placed.get(name)) for name, a in arrays.items()]
    header = pickle.dumps((head, shapes), protocol=pickle.HIGHEST_PROTOCOL)
    parts = [memoryview(_LENGTH.pack(len(header)) + header)]
    for name, array in arrays.items():
        if array.nbytes and name not in placed:
            parts.append(np.ascontiguousarray(array).data.cast("B"))
    return parts


def checked_length(length: int) -> int:
    if length > MAX_HEADER_BYTES:
        raise ValueError(f"a message header of {length} bytes is not from a GPUX engine")
    return length


def allocate(
    shapes: list[tuple[str, str, tuple[int, ...], int | None]], arena: mmap.mmap | None = None
) -> tuple[Arrays, list[np.ndarray[Any, Any]]]:
    """The header's tensors: views of the ``arena`` for those placed there, the others
    allocated (fresh, writable) for their bytes to be read into; and those others, in order,
    with bytes to read."""
    arrays: Arrays = {}
    inline: list[np.ndarray[Any, Any]] = []
    for name, dtype, shape, offset in shapes:
        kind = np.dtype(dtype)
        if kind.hasobject:  # bytes would be read as pointers
            raise ValueError(f"tensor '{name}' of dtype {kind} cannot cross processes")
        if offset is not None:
            arrays[name] = engine_arena.view(arena, name, kind, tuple(shape), offset)
            continue
        arrays[name] = array = np.empty(shape, dtype=kind)
        if array.nbytes:
            inline.append(array)
    return arrays, inline


class MessageReader:
    """Messages read by whoever owns the socket's reads (an event loop's BufferedProtocol):
    :meth:`buffer` is where the next bytes go, :meth:`filled` says how many came, and each
    whole message goes to ``deliver``. Every tensor is read straight into its array."""

    def __init__(
        self, deliver: Callable[[Any, Arrays], None], arena: mmap.mmap | None = None
    ) -> None:
        self._deliver = deliver
        self._arena = arena  # the peer's shared memory, where its headers may place tensors
        self._expect_length()

    def buffer(self) -> memoryview:
        return self._view[self._filled :]

    def filled(self, count: int) -> None:
        """``ValueError`` on a message no GPUX engine sends."""
        self._filled += count
        while self._filled == len(self._view):
            self._then()

    def _expect(self, view: memoryview, then: Callable[[], None]) -> None:
        self._view, self._filled, self._then = view, 0, then

    def _expect_length(self) -> None:
        self._bytes = bytearray(_LENGTH.size)
        self._expect(memoryview(self._bytes), self._got_length)

    def _got_length(self) -> None:
        (length,) = _LENGTH.unpack(self._bytes)
        self._bytes = bytearray(checked_length(length))
        self._expect(memoryview(self._bytes), self._got_header)

    def _got_header(self) -> None:
        self._head, shapes = pickle.loads(self._bytes)
        self._arrays, self._unread = allocate(shapes, self._arena)
        self._next_array()

    def _next_array(self) -> None:
        if self._unread:
            self._expect(self._unread.pop(0).data.cast("B"), self._next_array)
            return
        head, arrays = self._head, self._arrays
        self._expect_length()
        self._deliver(head, arrays)


class Outbox:
    """Messages written from an event loop's thread without blocking it: what the socket does
    not take at once is kept (not copied: the arrays must stay as they are until written; the
    engine's outputs are fresh arrays of each call, which nothing writes again) and written
    when it can take more, so that one front-end slow to read its answers (a large output,
    a busy loop) holds up no one else's. Each write is ``MSG_DONTWAIT``, whatever the socket's
    blocking mode."""

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._sock = sock
        self._loop = loop
        self._on_close = on_close  # before the socket closes (the loop may read it too)
        self._waiting: deque[memoryview] = deque()
        self._watched = False
        self.closed = False

    def send(self, head: Any, arrays: Mapping[str, np.ndarray[Any, Any]]) -> None:
        if self.closed:
            return  # the peer went away: nobody waits for this answer
        # Kept as views: copying the unsent part of BERT-base's 400 KB answers held the
        # engine's loop 5% of the time (an H100, 8 front-ends at c=32, py-spy).
        parts = encode(head, arrays)
        if self._waiting:
            self._waiting.extend(parts)
            return
        for index, part in enumerate(parts):
            sent = self._write(part)
            if sent is None:
                return
            if sent < len(part):
                self._waiting.append(part[sent:])
                self._waiting.extend(parts[index + 1 :])
                break
        self._watch()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._waiting.clear()
        self._watch()
        if self._on_close is not None:
            self._on_close()
        self._sock.close()

    def _write(self, part: memoryview) -> int | None:
        """Bytes the socket took now; None once the peer has gone (the outbox is closed)."""
        try:
            return self._sock.send(part, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0
        except OSError:
            self.close()  # the peer went away
            return None

    def _flush(self) -> None:
        while self._waiting and not self.closed:
            part = self._waiting[0]
            sent = self._write(part)
            if sent is None:
                return
            if sent < len(part):
                self._waiting[0] = part[sent:]
                break
            self._waiting.popleft()
        self._watch()

    def _watch(self) -> None:
        """Wait for the socket to take more only while something waits to be written."""
        wanted = bool(self._waiting) and not self.closed
        if wanted != self._watched:
            if wanted:
                self._loop.add_writer(self._sock.fileno(), self._flush)
            else:
                self._loop.remove_writer(self._sock.fileno())
            self._watched = wanted
