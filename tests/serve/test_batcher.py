"""The batcher itself, on a real thread pool and a numpy "model" that records every call: batch
sizes stay at the preferred sizes, padding rows never reach a caller, a lone request is not held
back by the batch delay, and batches form while the model is busy."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from gpux.serve.batching import CALLERS, Batcher, Strategy


class Recorder:
    """y = 2x + 1 per row, after ``delay`` seconds; remembers the batch size of each call."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.callers: list[int] = []  # the requests behind each call, as the thread sees them
        self.delay = delay
        self.lock = threading.Lock()

    def run(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.sizes.append(int(x.shape[0]))
            self.callers.append(CALLERS.get())
        time.sleep(self.delay)
        return 2 * x + 1


def strategy(model: Recorder) -> Strategy[np.ndarray]:
    def split(y: np.ndarray, sizes: Sequence[int]) -> list[Any]:
        offsets = np.cumsum([0, *sizes])
        return [y[a:b] for a, b in itertools.pairwise(offsets)]

    return Strategy(
        key=lambda x: x.shape[1:],
        size=lambda x: int(x.shape[0]),
        combine=lambda xs, n: np.concatenate([*xs, np.repeat(xs[-1][-1:], n, axis=0)]),
        run=model.run,
        split=split,
    )


def batcher(model: Recorder, **options: Any) -> Batcher[np.ndarray]:
    settings: dict[str, Any] = {"max_batch_size": 8, "max_delay": 0.05, "max_queue": 100}
    return Batcher(strategy(model), ThreadPoolExecutor(1), **{**settings, **options})


def test_batches_are_padded_to_preferred_sizes_and_padding_never_returns() -> None:
    model = Recorder(delay=0.02)
    padded: list[int] = []

    async def main() -> list[np.ndarray]:
        b = batcher(model, preferred_sizes=(1, 4, 8), padded=padded.append)
        requests = [np.full((rows, 3), i, np.float32) for i, rows in enumerate([3, 1, 2, 1, 3, 2])]
        return await asyncio.gather(*(b.submit(x, 10) for x in requests))

    answers = asyncio.run(main())
    for i, (rows, answer) in enumerate(zip([3, 1, 2, 1, 3, 2], answers, strict=True)):
        assert answer.shape == (rows, 3)  # its own rows, no padding
        np.testing.assert_array_equal(answer, np.full((rows, 3), 2 * i + 1))
    assert set(model.sizes) <= {1, 4, 8}, model.sizes
    assert sum(model.sizes) == 12 + sum(padded) and padded  # some batch needed padding


def test_a_request_larger_than_every_preferred_size_runs_as_it_is() -> None:
    model = Recorder()

    async def main() -> np.ndarray:
        return await batcher(model, preferred_sizes=(1, 2, 4), max_batch_size=8).submit(
            np.ones((6, 2), np.float32), 10
        )

    assert asyncio.run(main()).shape == (6, 2)
    assert model.sizes == [6]


def test_a_lone_request_does_not_wait_for_the_batch_delay() -> None:
    """With a delay of a minute and a timeout of 5 s, a request that waited would time out."""
    model = Recorder()

    async def main() -> np.ndarray:
        return await batcher(model, max_delay=60.0).submit(np.zeros((1, 2), np.float32), 5)

    np.testing.assert_array_equal(asyncio.run(main()), np.ones((1, 2)))


def test_batches_form_while_the_model_is_busy() -> None:
    model = Recorder(delay=0.2)

    async def main() -> None:
        b = batcher(model, max_delay=5.0, max_batch_size=8)
        first = asyncio.ensure_future(b.submit(np.zeros((1, 2), np.float32), 10))
        await asyncio.sleep(0.05)  # the first call is running: the next ones queue behind it
        rest = [b.submit(np.zeros((1, 2), np.float32), 10) for _ in range(8)]
        await asyncio.gather(first, *rest)

    asyncio.run(main())
    assert model.sizes[0] == 1 and sum(model.sizes) == 9 and len(model.sizes) <= 3, model.sizes


def test_a_request_that_does_not_fit_the_batch_stays_queued_and_the_rest_run() -> None:
    """A batch skips a queued request too large for what it has left and takes the next ones.
    Requests were compared by value to take them off the queue, and two requests' tensors
    compared that way raise ("the truth value of an array ... is ambiguous"): the batch's
    requests, already off the queue, never ran, and their callers waited out their timeout
    (the shared engine's 30 s 504s at c=64 on the 2-core machine, docs/benchmarks.md)."""
    model = Recorder(delay=0.3)

    async def main() -> list[np.ndarray]:
        b = batcher(model, max_batch_size=4)
        first = asyncio.ensure_future(b.submit(np.zeros((1, 2), np.float32), 3))
        await asyncio.sleep(0.03)  # the model is busy: the next ones queue behind it
        rows = [3, 3, 1]  # 3 + 1 fill a batch of 4; the second 3 waits for the next
        rest = [b.submit(np.full((n, 2), i, np.float32), 3) for i, n in enumerate(rows)]
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(main())
    for i, (n, answer) in enumerate(zip([3, 3, 1], answers[1:], strict=True)):
        np.testing.assert_array_equal(answer, np.full((n, 2), 2 * i + 1))
    assert model.sizes == [1, 4, 3], model.sizes


def test_requests_of_another_shape_queued_between_do_not_lose_a_batch() -> None:
    """Requests of two shapes (a text model's lengths) queue together: each batch takes one
    shape and steps over the other, which the same comparison bug made lose the batch."""
    model = Recorder(delay=0.3)

    async def main() -> list[np.ndarray]:
        b = batcher(model)
        first = asyncio.ensure_future(b.submit(np.zeros((1, 2), np.float32), 3))
        await asyncio.sleep(0.03)
        widths = [3, 5, 3, 5]
        rest = [b.submit(np.full((1, w), i, np.float32), 3) for i, w in enumerate(widths)]
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(main())
    for i, (width, answer) in enumerate(zip([3, 5, 3, 5], answers[1:], strict=True)):
        np.testing.assert_array_equal(answer, np.full((1, width), 2 * i + 1))
    assert sorted(model.sizes) == [1, 2, 2], model.sizes


@pytest.mark.parametrize(
    ("given", "backend", "expected"),
    [
        (None, "cuda", (1, 2, 4, 8, 16, 24)),
        (None, "wgpu", (1, 2, 4, 8, 16, 24)),  # its batch buckets: padded to, warmed
        (None, "cpu", ()),
        ([1, 8, 64], "cpu", (1, 8)),
        ([], "cuda", ()),
    ],
)
def test_default_preferred_sizes(
    given: list[int] | None, backend: str, expected: tuple[int, ...]
) -> None:
    from gpux.serve.load import preferred_sizes

    assert preferred_sizes(given, 24, backend) == expected


def test_enqueue_batches_like_submit_and_expires_requests_that_never_start() -> None:
    """``enqueue`` (the shared engine's way in): requests taken together share a model call and
    get their own rows; one still queued when its time is up fails with TimeoutError and never
    runs, while the others are answered."""
    model = Recorder(delay=0.2)

    async def main() -> tuple[list[np.ndarray], BaseException | None]:
        queue = batcher(model, max_batch_size=2, max_delay=0.0)
        first = queue.enqueue(np.array([[0.0]]), timeout=5)
        await asyncio.sleep(0.01)  # the model is busy with the first
        pair = [queue.enqueue(np.array([[float(i)]]), timeout=5) for i in (1, 2)]
        late = queue.enqueue(np.array([[3.0]]), timeout=0.05)  # waits behind the pair
        answers = [await f for f in (first, *pair)]
        try:
            await late
        except TimeoutError as exc:
            return answers, exc
        return answers, None

    answers, expired = asyncio.run(main())
    assert [a.ravel().tolist() for a in answers] == [[1.0], [3.0], [5.0]]
    assert isinstance(expired, TimeoutError)
    assert model.sizes == [1, 2]  # the expired request never reached the model


def test_joined_batches_come_from_reused_buffers_and_go_back_after_the_call() -> None:
    """With ``join``/``release`` (gpux/runtime/host_memory.py), a padded batch is written once
    into a buffer that is given back when the model has run, and the next batch of that size
    reuses it; callers still get their own rows, never the padding."""
    from gpux.runtime.host_memory import HostBuffers

    buffers = HostBuffers()
    model = Recorder(delay=0.02)
    seen: list[int] = []

    def run(x: np.ndarray) -> np.ndarray:
        seen.append(id(x))
        return model.run(x)

    rounds = [[3, 1, 2, 1], [2, 2, 1]]

    async def main() -> list[list[np.ndarray]]:
        joining = Strategy(
            **{**strategy(model).__dict__, "run": run},
        )
        joining.combine = buffers.join
        joining.release = buffers.give
        b = Batcher(
            joining,
            ThreadPoolExecutor(1),
            max_batch_size=8,
            max_delay=0.05,
            max_queue=100,
            preferred_sizes=(8,),
        )
        answers = []
        for sizes in rounds:  # one batch each: padded to 8 rows
            requests = [np.full((rows, 3), i, np.float32) for i, rows in enumerate(sizes)]
            answers.append(await asyncio.gather(*(b.submit(x, 10) for x in requests)))
        return answers

    answers = asyncio.run(main())
    for sizes, got in zip(rounds, answers, strict=True):
        for i, (rows, answer) in enumerate(zip(sizes, got, strict=True)):
            np.testing.assert_array_equal(answer, np.full((rows, 3), 2 * i + 1))
    assert model.sizes[-1] == 8 and 8 in model.sizes
    joined = [key for key, size in zip(seen, model.sizes, strict=True) if size == 8]
    assert len(joined) >= 2 and len(set(joined)) == 1  # the same buffer, taken back each time
    assert buffers.kept_bytes == 8 * 3 * 4


def test_an_idle_model_starts_a_request_at_once_and_counts_it_like_a_batch() -> None:
    """A request that finds the queue empty and the model idle is started by ``submit`` itself
    (no worker hop): it is still observed, timed and answered like a batch of one."""
    from gpux.serve.statistics import BatchTiming

    model = Recorder()
    observed: list[tuple[int, float]] = []
    timed: list[BatchTiming] = []

    async def main() -> list[np.ndarray]:
        b = batcher(model, observe=lambda rows, waited: observed.append((rows, waited)))
        b.timed = timed.append
        answers = [await b.submit(np.full((2, 1), i, np.float32), 5) for i in range(3)]
        assert b._worker is None  # never needed
        return answers

    answers = asyncio.run(main())
    assert [a.ravel().tolist() for a in answers] == [[1.0, 1.0], [3.0, 3.0], [5.0, 5.0]]
    assert model.sizes == [2, 2, 2]
    assert [rows for rows, _ in observed] == [2, 2, 2]
    assert [t.rows for t in timed] == [2, 2, 2] and all(t.ran > 0 for t in timed)


def test_a_call_of_several_requests_counts_each_request_in_the_timings() -> None:
    """The shared engine's calls hold a front-end's requests: each is one entry in the call's
    queue times (Triton's statistics count the queue per request), alone or batched, and the
    model still sees rows; the model's thread sees the call's requests in ``CALLERS``."""
    from gpux.serve.statistics import BatchTiming

    model = Recorder(delay=0.05)
    timed: list[BatchTiming] = []

    async def main() -> None:
        queue = batcher(model, max_delay=0.02)
        queue.timed = timed.append
        lone = queue.enqueue(np.zeros((3, 1)), timeout=5, requests=3)  # starts alone
        await asyncio.sleep(0.01)  # the model is busy: the next two join one batch
        pair = [queue.enqueue(np.zeros((n, 1)), timeout=5, requests=n) for n in (2, 1)]
        for answer in (lone, *pair):
            await answer

    asyncio.run(main())
    assert model.sizes == [3, 3]
    assert [len(t.queued) for t in timed] == [3, 3]
    # The model's thread knows it too: a shared engine's front-end passes it on with a
    # pipeline's call (joined predict requests), and the engine counts each.
    assert model.callers == [3, 3]


def batcher_running(run: Any) -> Batcher[np.ndarray]:
    """A batcher of up to 4 rows on one thread whose model is ``run``."""
    return Batcher(
        Strategy(**{**strategy(Recorder()).__dict__, "run": run}),
        ThreadPoolExecutor(1),
        max_batch_size=4,
        max_delay=0.05,
        max_queue=10,
    )


def test_a_failing_lone_request_fails_alone_and_frees_the_model() -> None:
    calls: list[float] = []

    def run(x: np.ndarray) -> np.ndarray:
        calls.append(float(x[0, 0]))
        if x[0, 0] < 0:
            raise ValueError("negative")
        return x + 1

    async def main() -> tuple[BaseException | None, np.ndarray]:
        b = batcher_running(run)
        failure = None
        try:
            await b.submit(np.array([[-1.0]]), 5)
        except ValueError as exc:
            failure = exc
        return failure, await b.submit(np.array([[1.0]]), 5)

    failure, answer = asyncio.run(main())
    assert isinstance(failure, ValueError) and answer.tolist() == [[2.0]]
    assert calls == [-1.0, 1.0]


def test_a_batch_that_fails_runs_each_request_alone_and_only_the_culprit_fails() -> None:
    """A joined batch whose call raises: each of its requests runs again alone, the good ones
    get their rows, the bad one its error, and the model is free again afterwards."""
    calls: list[int] = []

    def run(x: np.ndarray) -> np.ndarray:
        calls.append(int(x.shape[0]))
        time.sleep(0.02)
        if (x < 0).any():
            raise ValueError("negative")
        return x + 1

    async def main() -> tuple[list[Any], np.ndarray, int]:
        b = batcher_running(run)
        busy = asyncio.create_task(b.submit(np.array([[0.0]]), 5))  # the model is busy ...
        await asyncio.sleep(0.005)
        values = [[[1.0]], [[-1.0]], [[3.0]]]  # ... so these three queue and join
        answers = await asyncio.gather(
            *(b.submit(np.array(v), 5) for v in values), return_exceptions=True
        )
        await busy
        after = await b.submit(np.array([[5.0]]), 5)
        return answers, after, b._busy

    answers, after, busy = asyncio.run(main())
    assert answers[0].tolist() == [[2.0]] and answers[2].tolist() == [[4.0]]
    assert isinstance(answers[1], ValueError)
    assert calls[:2] == [1, 3] and calls[2:5] == [1, 1, 1]  # the batch, then each alone
    assert after.tolist() == [[6.0]] and busy == 0


def test_a_timed_out_caller_gets_timeout_error_while_its_call_keeps_the_thread() -> None:
    """The caller stops waiting at its timeout; the model call it started still holds the
    model's thread, so the next request runs only after it (not beside it)."""
    model = Recorder(delay=0.3)

    async def main() -> tuple[float, float]:
        b = batcher(model, max_delay=0.0)
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            await b.submit(np.zeros((1, 1), np.float32), 0.05)
        gave_up = time.perf_counter() - started
        await b.submit(np.zeros((1, 1), np.float32), 5)
        return gave_up, time.perf_counter() - started

    gave_up, answered = asyncio.run(main())
    assert gave_up < 0.25  # did not wait for the call
    assert answered >= 0.55  # the second call waited for the first's thread
    assert model.sizes == [1, 1]


def test_a_cancelled_caller_s_queued_request_never_runs() -> None:
    model = Recorder(delay=0.2)

    async def main() -> None:
        b = batcher(model, max_delay=0.0, max_batch_size=1)
        first = asyncio.ensure_future(b.submit(np.zeros((1, 1), np.float32), 5))
        await asyncio.sleep(0.02)  # running
        queued = asyncio.ensure_future(b.submit(np.ones((1, 1), np.float32), 5))
        await asyncio.sleep(0.02)
        queued.cancel()
        await first
        await asyncio.sleep(0.05)  # the worker had its chance to take the queued one

    asyncio.run(main())
    assert model.sizes == [1]
