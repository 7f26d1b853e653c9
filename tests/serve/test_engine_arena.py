"""A front-end's shared memory for the engine (gpux/serve/engine_arena.py): blocks never overlap
and hold their tensor until given back, whatever the order calls end in; a full arena says so
(the call then takes the socket); the engine reads placed tensors where they lie, after the
handshake gave it the arena; and a header that places a tensor outside the arena, or in an
arena the connection has not, is refused before anything is read."""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import socket
import struct
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpux.serve.engine_arena import Arena, mapped
from gpux.serve.engine_wire import Channel, MessageReader, encode

SIZE = 1 << 16

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="Linux's memfd_create")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(1, SIZE // 4), st.integers(0, 1 << 30)),
        min_size=1,
        max_size=40,
    )
)
def test_blocks_never_overlap_and_keep_their_bytes(steps: list[tuple[bool, int, int]]) -> None:
    arena = Arena(SIZE)
    held: list[tuple[int, np.ndarray[Any, Any]]] = []
    for place, nbytes, pick in steps:
        if place or not held:
            array = np.random.default_rng(pick).integers(0, 255, nbytes, dtype=np.uint8)
            offset = arena.place(array)
            if offset is None:  # full: what is free is less than asked (rounded up)
                assert arena.free_bytes < nbytes + 64 or not held
                continue
            held.append((offset, array))
        else:
            offset, array = held.pop(pick % len(held))
            arena.give_back(offset, array.nbytes)
        spans = sorted((o, o + a.nbytes) for o, a in held)
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))
        assert all(start >= 0 and end <= SIZE for start, end in spans)
        for offset, array in held:
            assert bytes(arena.map[offset : offset + array.nbytes]) == array.tobytes()
    for offset, array in held:
        arena.give_back(offset, array.nbytes)
    assert arena.free_bytes == SIZE
    assert arena.place(np.zeros(SIZE, np.uint8)) == 0  # one block again, not fragments


def _connected(size: int) -> tuple[Arena, Channel, Channel]:
    """A front-end's arena, and both ends of a connection whose handshake gave it to the
    engine's side, as EngineClient and Engine._read do."""
    front, back = (Channel(s) for s in socket.socketpair())
    arena = Arena(size)
    front.send(("hello", arena.size), {})
    socket.send_fds(front.sock, [b"\0"], [arena.fd])
    head, _ = back.receive()
    assert head == ("hello", size)
    assert back.receive_arena(head[1])
    return arena, front, back


def test_the_engine_reads_placed_tensors_where_they_lie() -> None:
    arena, front, back = _connected(1 << 20)
    rng = np.random.default_rng(0)
    feed = {
        "image": rng.standard_normal((2, 3, 64, 64)).astype(np.float32),  # placed
        "scale": np.array([0.5], np.float32),  # small: with the header
        "transposed": rng.standard_normal((40, 50)).T,  # not contiguous: placed contiguous
    }
    placed = {name: arena.place(feed[name]) for name in ("image", "transposed")}
    assert None not in placed.values()
    front.send((7, "resnet", 30.0), {})  # a message without tensors first
    for part in encode((8, "resnet", 30.0), feed, placed):  # type: ignore[arg-type]
        front.sock.sendall(part)
    assert back.receive() == ((7, "resnet", 30.0), {})
    head, arrays = back.receive()
    assert head == (8, "resnet", 30.0)
    assert arrays.keys() == feed.keys()
    for name, array in feed.items():
        assert arrays[name].dtype == array.dtype and np.array_equal(arrays[name], array)
    # No copy: the engine's array is the arena's memory (the front-end writes, it sees).
    arena.map[placed["image"] : placed["image"] + 4] = np.float32(42.0).tobytes()
    assert arrays["image"].flat[0] == 42.0


def _header(shapes: list[tuple[str, str, tuple[int, ...], int | None]]) -> bytes:
    header = pickle.dumps(((1, "m", 5.0), shapes))
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize(
    ("shapes", "problem"),
    [
        ([("x", "<f4", (1024,), (1 << 16) - 1024)], "outside the shared memory"),
        ([("x", "<f4", (4,), -8)], "outside the shared memory"),
        ([("x", "<f4", (1 << 40, 1 << 40), 0)], "outside the shared memory"),
        ([("x", "<f4", (-4, 2), 0)], "negative dimension"),
    ],
)
def test_a_tensor_placed_outside_the_arena_is_refused(
    shapes: list[tuple[str, str, tuple[int, ...], int | None]], problem: str
) -> None:
    _, front, back = _connected(1 << 16)
    front.sock.sendall(_header(shapes))
    with pytest.raises(ValueError, match=problem):
        back.receive()


def test_a_placed_tensor_without_an_arena_is_refused() -> None:
    """Answers never come placed: a front-end that reads one refuses it."""
    reader = MessageReader(lambda head, arrays: None)
    stream = _header([("x", "<f4", (4,), 0)])
    with pytest.raises(ValueError, match="shared memory this connection has not"):
        while stream:
            target = reader.buffer()
            size = min(len(target), len(stream))
            target[:size], stream = stream[:size], stream[size:]
            reader.filled(size)


def test_an_arena_smaller_than_announced_is_refused() -> None:
    fd = os.memfd_create("small")
    os.ftruncate(fd, 4096)
    with pytest.raises(ValueError, match="larger than its file"):
        mapped(fd, 1 << 20)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed either way


def test_a_full_arena_places_nothing_and_takes_calls_again_once_answered() -> None:
    arena = Arena(1 << 16)
    first = arena.place(np.zeros(40_000, np.uint8))
    assert first is not None
    assert arena.place(np.zeros(40_000, np.uint8)) is None  # this call takes the socket
    arena.give_back(first, 40_000)
    assert arena.place(np.zeros(40_000, np.uint8)) == first


def test_an_arena_the_engine_cannot_map_leaves_the_connection_working() -> None:
    """A front-end that announces more shared memory than its file holds: the engine maps
    none (and says so at the handshake), and the calls that follow come through the socket."""
    front, back = (Channel(s) for s in socket.socketpair())
    fd = os.memfd_create("small")
    os.ftruncate(fd, 4096)
    front.send(("hello", 1 << 20), {})
    socket.send_fds(front.sock, [b"\0"], [fd])
    os.close(fd)
    head, _ = back.receive()
    assert back.receive_arena(head[1]) is False
    assert back.arena is None
    image = np.arange(30_000, dtype=np.float32)
    front.send((1, "resnet", 5.0), {"image": image})
    head, arrays = back.receive()
    assert head == (1, "resnet", 5.0) and np.array_equal(arrays["image"], image)


@pytest.mark.parametrize("engine_maps_it", [True, False])
def test_a_front_end_places_large_tensors_and_frees_them_on_the_answer(
    tmp_path: Any, engine_maps_it: bool
) -> None:
    """EngineClient against a stand-in engine that speaks the real handshake: a call's large
    tensor arrives as a view of the front-end's arena (the small one inline), its block is free
    again once the answer is in; when the engine says it could not map the arena, every tensor
    takes the socket. (The second case calls from a model thread, as a pipeline does, where
    the call carries the requests of the batch that thread runs.)"""
    from multiprocessing.connection import Listener

    from gpux.serve.batching import CALLERS
    from gpux.serve.engine_client import EngineClient, RemoteBackend

    address, key = str(tmp_path / "engine.sock"), b"k" * 32
    listener = Listener(address, family="AF_UNIX", authkey=key)
    seen: dict[str, Any] = {}

    def engine() -> None:
        channel = Channel.of(listener.accept())
        try:
            serve_one_call(channel)
        except BaseException as exc:  # reported by the test, not left as a hang
            seen["error"] = exc
        finally:
            channel.close()  # the client's wait ends: its answer came, or the engine is gone

    def serve_one_call(channel: Channel) -> None:
        head, _ = channel.receive()
        mapped = channel.receive_arena(head[1])
        if not engine_maps_it:
            channel.arena = None
        where = {"backend": "cpu", "providers": [], "device": "cpu", "requested": "cpu"}
        channel.send(("hello", {"m": where}, mapped and engine_maps_it), {})
        (call_id, model, _, requests), arrays = channel.receive()
        seen["model"], seen["requests"] = model, requests
        seen["placed"] = {
            name: channel.arena is not None and np.shares_memory(array, np.asarray(channel.arena))
            for name, array in arrays.items()
        }
        channel.send((call_id, None), {"sum": np.array([arrays["image"].sum()])})
        seen["arrays"] = arrays

    thread = threading.Thread(target=engine)
    thread.start()
    client = EngineClient(address, key)
    image = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)

    feed = {"image": image, "scale": np.ones(4, np.float32)}

    def from_a_model_thread() -> dict[str, Any]:
        CALLERS.set(3)  # a batch of three joined predict requests runs on this thread
        return RemoteBackend(client, "m", 5.0).run(feed)

    async def call() -> dict[str, Any]:
        await client.attach()
        if engine_maps_it:
            return await client.start("m", feed, 5.0)
        return await asyncio.to_thread(from_a_model_thread)

    with asyncio.Runner() as runner:
        try:
            answer = runner.run(asyncio.wait_for(call(), 30))
        finally:
            thread.join(30)
            listener.close()
            if "error" in seen:  # the stand-in engine's own failure is the one to see
                raise seen["error"]
    assert seen["model"] == "m" and seen["requests"] == (1 if engine_maps_it else 3)
    assert seen["placed"] == {"image": engine_maps_it, "scale": False}
    assert np.array_equal(seen["arrays"]["image"], image)
    assert np.isclose(answer["sum"][0], image.sum())
    if engine_maps_it:
        assert client._arena is not None and client._arena.free_bytes == client._arena.size
    else:
        assert client._arena is None
