"""The shared engine's messages (gpux/serve/engine_wire.py): what one side writes, the other
reads back exactly, however the bytes arrive; a header no engine sends is refused before
anything is allocated; and the engine's outbox never blocks its loop on a peer that does not
read, yet delivers everything, in order, once the peer reads."""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from gpux.serve.engine_wire import MAX_HEADER_BYTES, Channel, MessageReader, Outbox, encode


def _messages() -> list[tuple[Any, dict[str, np.ndarray[Any, Any]]]]:
    rng = np.random.default_rng(0)
    return [
        ((1, "resnet", 30.0), {"image": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}),
        ((2, None), {}),
        (
            (3, "bert", 5.0),
            {
                "ids": rng.integers(0, 30000, (1, 7)),
                "empty": np.zeros((0, 4), np.float16),
                "transposed": rng.standard_normal((5, 3)).T,  # not contiguous: sent as if it were
            },
        ),
        ((4, ("input", "bad shape", "send [1, 3]")), {"flag": np.array([True, False])}),
    ]


def _feed(reader: MessageReader, stream: bytes, cuts: list[int] | None = None) -> None:
    """``stream`` into ``reader`` as a BufferedProtocol gets it: at most what fits the buffer
    offered each time, in chunks of ``cuts`` (in turn) where given."""
    position, turn = 0, 0
    while position < len(stream):
        target = reader.buffer()
        assert len(target) > 0
        size = min(len(target), len(stream) - position)
        if cuts:
            size = min(size, cuts[turn % len(cuts)])
        target[:size] = stream[position : position + size]
        reader.filled(size)
        position, turn = position + size, turn + 1


def _equal(got: dict[str, Any], sent: dict[str, Any]) -> bool:
    return got.keys() == sent.keys() and all(
        got[k].dtype == sent[k].dtype and np.array_equal(got[k], sent[k]) for k in sent
    )


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(1, 400), min_size=1, max_size=40))
def test_a_reader_gets_every_message_whatever_the_chunks(cuts: list[int]) -> None:
    sent = _messages()
    stream = b"".join(bytes(part) for head, arrays in sent for part in encode(head, arrays))
    got: list[tuple[Any, dict[str, Any]]] = []
    reader = MessageReader(lambda head, arrays: got.append((head, arrays)))
    _feed(reader, stream, cuts)
    assert [head for head, _ in got] == [head for head, _ in sent]
    for (_, arrays), (_, expected) in zip(got, sent, strict=True):
        assert _equal(arrays, expected)
        assert all(a.flags.writeable for a in arrays.values())


def test_a_header_longer_than_any_engine_sends_is_refused() -> None:
    reader = MessageReader(lambda head, arrays: None)
    with pytest.raises(ValueError, match="not from a GPUX engine"):
        _feed(reader, struct.pack("<Q", MAX_HEADER_BYTES + 1))


def test_object_arrays_are_refused_not_read_as_pointers() -> None:
    header = pickle.dumps(((1, None), [("names", "|O", (2,), None)]))
    reader = MessageReader(lambda head, arrays: None)
    with pytest.raises(ValueError, match="cannot cross processes"):
        _feed(reader, struct.pack("<Q", len(header)) + header)


LOOPS = pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])


@LOOPS
def test_the_outbox_never_blocks_its_loop_and_delivers_in_order(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """A peer that reads nothing while 40 MB of answers are sent: every ``send`` returns (the
    socket holds a few MB at most; the rest waits in the outbox), and once the peer reads,
    every message arrives whole and in order."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    count = 10
    received: list[tuple[Any, dict[str, Any]]] = []

    def read() -> None:
        channel = Channel(theirs)
        for _ in range(count):
            received.append(channel.receive())

    async def main() -> None:
        outbox = Outbox(ours, asyncio.get_running_loop())
        for index in range(count):
            # Returns with nobody reading yet: a blocking send would hang here for good.
            outbox.send((index, None), {"out": np.arange(1 << 20, dtype=np.float32) + index})
        reader = threading.Thread(target=read)
        reader.start()
        while reader.is_alive():
            await asyncio.sleep(0.01)
        outbox.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert [head for head, _ in received] == [(i, None) for i in range(count)]
    for index, (_, arrays) in enumerate(received):
        assert np.array_equal(arrays["out"], np.arange(1 << 20, dtype=np.float32) + index)
    theirs.close()


@LOOPS
def test_the_outbox_drops_answers_for_a_peer_that_went_away(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.close()

    async def main() -> bool:
        outbox = Outbox(ours, asyncio.get_running_loop())
        outbox.send((1, None), {"out": np.zeros(1 << 20, np.float32)})
        outbox.send((2, None), {"out": np.zeros(4, np.float32)})  # after close: dropped
        return outbox.closed

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(main())


@LOOPS
def test_the_engine_loop_reads_calls_and_writes_answers_on_one_socket(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """The engine's layout (gpux/serve/engine.py::_FrontEnd): its loop reads a front-end's
    calls as they arrive and answers them through the outbox on the same socket, whose answers
    (4 MB each: more than the socket takes) wait for the front-end to read. Calls sent while
    answers wait are still read, each answer arrives whole and in order, and a front-end that
    goes away is dropped without disturbing the loop."""
    from gpux.serve.engine import _FrontEnd

    engine_side, front_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    calls = 5
    big = np.ones(1 << 20, np.float32)

    class Engine:
        stamped = False

        def __init__(self) -> None:
            self.received: list[Any] = []

        def call(self, outbox: Outbox, head: Any, feed: Any, read_at: float | None) -> None:
            self.received.append((head, feed["x"].tolist()))
            outbox.send(head, {"out": big * head[0]})

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        engine = Engine()
        connection = _FrontEnd(engine, Channel(engine_side), loop)  # type: ignore[arg-type]
        peer = Channel(front_end)
        for index in range(calls):  # every call before any answer is read
            await asyncio.to_thread(peer.send, (index, "model", 1.0), {"x": np.arange(index)})
        answers = [await asyncio.to_thread(peer.receive) for _ in range(calls)]
        assert engine.received == [((i, "model", 1.0), list(range(i))) for i in range(calls)]
        front_end.close()
        for _ in range(100):  # the loop sees the end of the stream
            if connection.outbox.closed:
                break
            await asyncio.sleep(0.01)
        assert connection.outbox.closed
        return answers

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        answers = runner.run(main())
    assert [head for head, _ in answers] == [(i, "model", 1.0) for i in range(calls)]
    assert all(np.array_equal(arrays["out"], big * i) for i, (_, arrays) in enumerate(answers))
