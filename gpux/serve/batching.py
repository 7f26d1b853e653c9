"""Dynamic batching: requests that arrive close together share one model call.

A ``Batcher`` owns a bounded queue and one worker task. The worker takes the oldest request and,
while another model call is in flight, waits up to ``max_delay`` for more that are compatible
with it (same key); with nothing in flight it runs at once, so a lone caller never pays the
delay (a request that finds the model idle and the queue empty is started by a callback on the
loop's next turn, as the worker would start it, without waking the worker). The batch runs as
one call on the model's thread, and each caller gets its own slice of the result. With ``preferred_sizes``, a batch is padded (its last row repeated) up to the next
preferred size, so the model only ever sees a few batch sizes: on the CUDA EP every new batch
size costs 0.1-0.85 s (docs/benchmarks.md); the padding rows are cut off and never reach a caller.
A request that fails inside a batch is retried alone, so one bad request never fails its
batch-mates.
A full queue answers at once (``QueueFull`` -> 503); a caller that waits too long gets
``TimeoutError`` (-> 504) and its request is dropped if it has not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from gpux.serve.statistics import BatchTiming

Payload = TypeVar("Payload")

# The requests behind the model call running on this thread: a shared engine's front-end passes
# it on with the call (gpux/serve/engine_client.py), so that a pipeline run of several joined
# ``predict`` requests counts each in the engine's statistics, as Triton counts requests.
CALLERS: ContextVar[int] = ContextVar("gpux_batch_callers", default=1)


class QueueFull(Exception):
    """The model's queue is at ``max_queue``."""


# eq=False: a job is itself, not its fields. The queue finds and removes jobs with ``in`` and
# ``list.remove``, which compare by ``==``, and a dataclass's ``==`` compares the payloads: two
# requests' numpy tensors raised ValueError ("the truth value of an array ... is ambiguous")
# while a batch was being taken, losing the requests it had already taken off the queue.
@dataclass(eq=False)
class _Job(Generic[Payload]):
    payload: Payload
    size: int
    key: Hashable
    future: asyncio.Future[Any]
    requests: int = 1  # callers behind the payload (a front-end's call to the shared engine)
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class Strategy(Generic[Payload]):
    """How payloads of one kind are batched: the compatibility key, how many rows a payload
    holds, how to join payloads, run them, and split the result back per payload."""

    key: Callable[[Payload], Hashable]
    size: Callable[[Payload], int]
    # The payloads as one, then N more rows (copies of the last: a batch padded to a
    # preferred size), in one copy where it can (gpux/runtime/host_memory.py).
    combine: Callable[[Sequence[Payload], int], Payload]
    run: Callable[[Payload], Any]
    split: Callable[[Any, Sequence[int]], list[Any]]
    # What ``combine`` made, handed back once the model has run (its buffer is reused).
    release: Callable[[Payload], None] | None = None
    # ``run`` without a thread, where the model answers on the loop (a call to the shared
    # engine, gpux/serve/engine_client.py): started on the loop's thread with the payload and
    # the number of requests in it, it returns the future of the result.
    start: Callable[[Payload, int], asyncio.Future[Any]] | None = None


class Batcher(Generic[Payload]):
    def __init__(
        self,
        strategy: Strategy[Payload],
        executor: Executor,
        *,
        max_batch_size: int,
        max_delay: float,
        max_queue: int,
        observe: Callable[[int, float], None] | None = None,
        concurrency: int = 1,
        preferred_sizes: Sequence[int] = (),
        padded: Callable[[int], None] | None = None,
        timed: Callable[[BatchTiming], None] | None = None,
    ) -> None:
        """``concurrency``: model calls in flight at once (the executor's threads).
        ``preferred_sizes``: the batch sizes the model runs (padded up to the next one)."""
        self.strategy = strategy
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self.max_queue = max_queue
        self.observe = observe  # (batch rows, queue seconds of the oldest) per model call
        self.padded = padded  # rows added to reach a preferred size, per model call
        self.timed = timed  # each successful model call's stages (gpux/serve/statistics.py)
        self.concurrency = concurrency
        self._pending: list[_Job[Payload]] = []
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._busy = 0  # model calls in flight, at most ``concurrency``
        self._starting = False  # _start_idle is due on the loop's next turn
        self._tasks: set[asyncio.Task[None]] = set()  # batches' tasks, referenced until done
        self.preferred_sizes = sorted({int(n) for n in preferred_sizes if 0 < n <= max_batch_size})

    def _add(self, payload: Payload, requests: int = 1) -> _Job[Payload]:
        if len(self._pending) >= self.max_queue:
            raise QueueFull
        loop = asyncio.get_running_loop()
        size, key = self.strategy.size(payload), self.strategy.key(payload)
        job = _Job(payload, size, key, loop.create_future(), requests)
        self._pending.append(job)
        if self._starting:  # the idle start on this turn of the loop takes it, or passes it on
            return job
        if len(self._pending) == 1 and not self._busy:
            # An idle model: the worker would start a batch at once. Started by a callback on
            # the loop's next turn instead, it skips the worker's wake-up (at c=1 those hops
            # cost as much as the rest of the request's batching; docs/benchmarks.md), and the
            # requests read on this turn from other connections still join the batch.
            self._starting = True
            loop.call_soon(self._start_idle)
            return job
        self._wake_worker(loop)
        return job

    def _wake_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        self._wakeup.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work())

    def _start_idle(self) -> None:
        self._starting = False
        if self._pending and not self._busy:  # else the worker has started it meanwhile
            self._launch(self._take(self._pending[0].key))
        if self._pending:  # what that batch could not take waits in the worker
            self._wake_worker(asyncio.get_running_loop())

    async def submit(self, payload: Payload, timeout: float) -> Any:
        job = self._add(payload)
        # The caller stops waiting at the timeout; a request that has not started is dropped,
        # one that has runs on (its result is dropped). A timer, not wait_for + shield: those
        # took three more turns of the event loop to hand the result over.
        expiry = asyncio.get_running_loop().call_later(timeout, self._expire, job)
        try:
            return await job.future
        finally:
            expiry.cancel()
            if job.future.cancelled() and job in self._pending:
                self._pending.remove(job)  # the caller was cancelled: nobody waits for it

    def _expire(self, job: _Job[Payload]) -> None:
        if job in self._pending:
            self._pending.remove(job)  # not started: nobody will run it
        _settle(job.future, exception=TimeoutError())

    def enqueue(self, payload: Payload, timeout: float, requests: int = 1) -> asyncio.Future[Any]:
        """``submit`` without a coroutine per request, for callers that take many requests at
        once on the loop's thread (the shared engine, gpux/serve/engine.py): the result's
        future, which fails with ``TimeoutError`` if the request has not started in time.
        ``requests``: the callers whose rows ``payload`` joins (a front-end's call), each
        counted in the statistics as Triton counts a request."""
        job = self._add(payload, requests)

        def expire() -> None:
            if job in self._pending:  # not started: nobody will run it
                self._pending.remove(job)
                _settle(job.future, exception=TimeoutError())

        expiry = asyncio.get_running_loop().call_later(timeout, expire)
        job.future.add_done_callback(lambda _: expiry.cancel())
        return job.future

    async def _work(self) -> None:
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            first = self._pending[0]
            deadline = first.queued_at + self.max_delay
            # Wait for batch-mates only while the model is busy anyway: an idle model runs now.
            while (
                self._busy
                and self._rows(first.key) < self.max_batch_size
                and time.perf_counter() < deadline
            ):
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), deadline - time.perf_counter())
                except TimeoutError:
                    break
            while self._busy >= self.concurrency:  # a free thread before forming the batch
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = self._take(first.key)
            if batch:
                self._launch(batch)

    def _launch(self, batch: list[_Job[Payload]]) -> None:
        """Start ``batch``'s model call on a free thread."""
        self._busy += 1
        if len(batch) == 1 and not self.padding(batch[0].size):
            self._start_alone(batch[0])
            return
        task = asyncio.get_running_loop().create_task(self._run_and_release(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _finished(self) -> None:
        self._busy -= 1
        self._wakeup.set()  # the model may be idle now: a waiting batch need not wait longer

    def padding(self, rows: int) -> int:
        """Rows to add to a batch of ``rows`` to reach the next preferred size (0 past the
        largest: a request that big runs as it is)."""
        target = next((size for size in self.preferred_sizes if size >= rows), rows)
        return target - rows

    async def _run_and_release(self, batch: list[_Job[Payload]]) -> None:
        try:
            await self._run(batch)
        finally:
            self._finished()

    def _start_alone(self, job: _Job[Payload]) -> None:
        """``_run([job])`` for a request that needs no padding, by callbacks: the model's
        thread (or, with ``strategy.start``, the model's own future) hands the outcome back
        with one callback, where a task awaiting ``run_in_executor`` took two more turns of
        the loop."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        if self.observe is not None:
            self.observe(job.size, started - job.queued_at)
        timing = BatchTiming(job.size, 0, [started - job.queued_at] * job.requests)
        if self.strategy.start is not None:
            try:
                running = self.strategy.start(job.payload, job.requests)
            except Exception as exc:
                self._done_alone(job, timing, None, exc)
                return
            running.add_done_callback(lambda done: self._started_done(job, timing, started, done))
            return
        try:
            self.executor.submit(self._call_alone, loop, job, timing)
        except Exception as exc:  # the executor is shut down: the server is stopping
            self._finished()
            _settle(job.future, exception=exc)

    def _started_done(
        self, job: _Job[Payload], timing: BatchTiming, started: float, done: asyncio.Future[Any]
    ) -> None:
        timing.ran = time.perf_counter() - started
        error = done.exception()
        self._done_alone(job, timing, None if error is not None else done.result(), error)

    def _call_alone(
        self, loop: asyncio.AbstractEventLoop, job: _Job[Payload], timing: BatchTiming
    ) -> None:
        """On the model's thread."""
        result: Any = None
        error: Exception | None = None
        try:
            result = _timed_run(self.strategy.run, job.payload, timing)
        except Exception as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # a closed loop: the server stopped
            loop.call_soon_threadsafe(self._done_alone, job, timing, result, error)

    def _done_alone(
        self, job: _Job[Payload], timing: BatchTiming, result: Any, error: BaseException | None
    ) -> None:
        self._finished()
        if error is not None:
            _settle(job.future, exception=error)
            return
        if self.timed is not None:
            self.timed(timing)
        _settle(job.future, result=result)

    def _rows(self, key: Hashable) -> int:
        return sum(job.size for job in self._pending if job.key == key)

    def _take(self, key: Hashable) -> list[_Job[Payload]]:
        batch: list[_Job[Payload]] = []
        rows = 0
        for job in list(self._pending):
            if job.key != key or (batch and rows + job.size > self.max_batch_size):
                continue
            batch.append(job)
            rows += job.size
            self._pending.remove(job)
        return batch

    async def _run(self, batch: list[_Job[Payload]]) -> None:
        loop = asyncio.get_running_loop()
        strategy = self.strategy
        sizes = [job.size for job in batch]
        extra = self.padding(sum(sizes))
        started = time.perf_counter()
        if self.observe is not None:  # the rows the model runs, padding included
            self.observe(sum(sizes) + extra, started - batch[0].queued_at)
        if extra and self.padded is not None:
            self.padded(extra)
        waits = [started - job.queued_at for job in batch for _ in range(job.requests)]
        timing = BatchTiming(sum(sizes) + extra, extra, waits)
        try:
            if strategy.start is not None:
                results = await self._started(batch, sizes, extra, timing)
            elif len(batch) == 1 and not extra:
                results = [
                    await loop.run_in_executor(
                        self.executor, _timed_run, strategy.run, batch[0].payload, timing
                    )
                ]
            else:
                payloads = [job.payload for job in batch]

                def joined_run() -> Any:
                    # Joining copies every row (8 ResNet-50 images: 4.8 MB): on the model's
                    # thread, not the event loop, where it cost 0.44 ms per batch.
                    begun = time.perf_counter()
                    joined = strategy.combine(payloads, extra)
                    timing.joined = time.perf_counter() - begun
                    try:
                        return _timed_run(strategy.run, joined, timing)
                    finally:
                        if strategy.release is not None:
                            strategy.release(joined)

                output = await loop.run_in_executor(self.executor, joined_run)
                begun = time.perf_counter()
                # The padding is one more "request" whose part is dropped here.
                results = strategy.split(output, [*sizes, extra] if extra else sizes)
                results = results[: len(batch)]
                timing.split = time.perf_counter() - begun
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].future, exception=exc)
                return
            for job in batch:  # find the culprit: each alone
                await self._run([job])
            return
        if self.timed is not None:
            self.timed(timing)
        for job, result in zip(batch, results, strict=True):
            _settle(job.future, result=result)

    async def _started(
        self, batch: list[_Job[Payload]], sizes: list[int], extra: int, timing: BatchTiming
    ) -> list[Any]:
        """``_run``'s model call through ``strategy.start``: the batch joined on the loop (a
        shared engine's front-end joins only what queued behind its calls in flight)."""
        strategy = self.strategy
        assert strategy.start is not None
        if len(batch) == 1 and not extra:
            begun = time.perf_counter()
            try:
                return [await strategy.start(batch[0].payload, batch[0].requests)]
            finally:
                timing.ran = time.perf_counter() - begun
        begun = time.perf_counter()
        joined = strategy.combine([job.payload for job in batch], extra)
        timing.joined = time.perf_counter() - begun
        try:
            begun = time.perf_counter()
            output = await strategy.start(joined, timing.requests)
            timing.ran = time.perf_counter() - begun
        finally:
            if strategy.release is not None:
                strategy.release(joined)  # the call has been read: its buffer is free
        results = strategy.split(output, [*sizes, extra] if extra else sizes)
        return results[: len(batch)]


def _timed_run(run: Callable[[Any], Any], payload: Any, timing: BatchTiming) -> Any:
    """On the model's thread."""
    callers = CALLERS.set(timing.requests)
    begun = time.perf_counter()
    try:
        return run(payload)
    finally:
        timing.ran = time.perf_counter() - begun
        CALLERS.reset(callers)


def _settle(
    future: asyncio.Future[Any], result: Any = None, exception: BaseException | None = None
) -> None:
    if future.done():  # the caller timed out and went away
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
