"""The interleaver's policy, in-process, on scripted streams (one token per turn) and on the tiny
Llama: turns go round the active generations in order, a cancelled one is closed at its next
turn and never decoded again, one generation's failure reaches only its own caller, a full queue
refuses at once, and interleaved answers equal the same answers run alone. Text generations that
arrive together start as one batch (a lone one at once), each row's answer equal to its lone
run, and a cancelled row does not stop its batch."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpux.config.generation import Guidance
from gpux.errors import InputError
from gpux.runtime.generative import Completion, GenerativeModel, Stream
from gpux.runtime.generative_batch import GenerationRequest, generation_request
from gpux.serve.batching import QueueFull
from gpux.serve.generation import (
    ACTIVE_GENERATIONS,
    GATHER_MOST,
    GATHER_QUIET,
    Cancelled,
    Generation,
    Interleaver,
    burst_over,
)
from gpux.serve.metrics import Metrics


class ScriptedStream:
    """A stream of ``count`` one-token pieces named after it; records every turn in ``log``."""

    def __init__(self, name: str, count: int, log: list[str], fail_at: int | None = None) -> None:
        self.name, self.count, self.log, self.fail_at = name, count, log, fail_at
        self.token_ids: list[int] = []
        self.prompt_tokens = 3
        self.completion: Completion | None = None
        self.closed = False

    def __iter__(self) -> ScriptedStream:
        return self

    def __next__(self) -> str:
        assert not self.closed, "decoded after close()"
        if len(self.token_ids) == self.fail_at:
            raise InputError(f"{self.name} failed", "a scripted failure")
        if len(self.token_ids) == self.count:
            self.completion = Completion("", "length", 3, self.count, 0.0, 0.0)
            raise StopIteration
        self.token_ids.append(len(self.token_ids))
        self.log.append(self.name)
        return f"{self.name}{len(self.token_ids)}"

    def close(self) -> None:
        self.closed = True


async def drain(generation: Generation) -> tuple[list[str], object]:
    """Every piece of ``generation``, and its last event (Completion, Cancelled or an error)."""
    pieces: list[str] = []
    while True:
        event = await asyncio.wait_for(generation.events.get(), 10)
        if isinstance(event, str):
            pieces.append(event)
        else:
            return pieces, event


def start(stream: Any) -> Callable[[], Stream]:
    return lambda: stream  # type: ignore[no-any-return]


def hold(interleaver: Interleaver, log: list[str]) -> threading.Event:
    """Keep the model's thread busy (a generation whose start waits) until the event is set, so
    that what is submitted meanwhile is all queued before its first turn."""
    release, started = threading.Event(), threading.Event()

    def waiting() -> Stream:
        started.set()
        assert release.wait(10)
        return ScriptedStream("hold", 0, log)  # type: ignore[return-value]

    interleaver.submit(waiting)
    # Its turn has begun: what is submitted from now on waits for the next round (else the
    # model's thread could take a generation submitted next into this round with it).
    assert started.wait(10)
    return release


def test_turns_go_round_the_generations_in_order() -> None:
    async def scenario() -> None:
        log: list[str] = []
        interleaver = Interleaver("m", max_queue=8, metrics=Metrics(["m"]))
        release = hold(interleaver, log)
        streams = [ScriptedStream(name, 4, log) for name in "abc"]
        generations = [interleaver.submit(start(s)) for s in streams]
        release.set()
        results = [await drain(g) for g in generations]
        for (pieces, last), name in zip(results, "abc", strict=True):
            assert pieces == [f"{name}{i}" for i in range(1, 5)]
            assert isinstance(last, Completion) and last.finish_reason == "length"
        # All three were queued before the first turn: each turn of the round goes to the
        # next generation, so none waits for another to finish.
        assert log == list("abc" * 4)

    asyncio.run(scenario())


def test_a_cancelled_generation_is_closed_and_never_decoded_again() -> None:
    async def scenario() -> None:
        log: list[str] = []
        metrics = Metrics(["m"])
        interleaver = Interleaver("m", max_queue=8, metrics=metrics)
        long = ScriptedStream("long", 10_000, log)
        other = ScriptedStream("other", 50, log)
        cancelled = interleaver.submit(start(long))
        kept = interleaver.submit(start(other))
        assert (await cancelled.events.get()) == "long1"
        cancelled.cancel()
        _, last = await drain(cancelled)
        assert isinstance(last, Cancelled) and long.closed
        decoded = len(long.token_ids)
        other_pieces, other_last = await drain(kept)
        assert len(other_pieces) == 50 and isinstance(other_last, Completion)
        assert len(long.token_ids) == decoded < 10_000
        assert metrics.generations.labels("m", "cancelled")._value.get() == 1
        assert metrics.generations.labels("m", "length")._value.get() == 1
        assert metrics.tokens_out.labels("m")._value.get() == decoded + 50

    asyncio.run(scenario())


def test_a_failure_reaches_only_its_own_caller() -> None:
    async def scenario() -> None:
        log: list[str] = []
        interleaver = Interleaver("m", max_queue=8, metrics=Metrics(["m"]))
        failing = interleaver.submit(start(ScriptedStream("bad", 10, log, fail_at=2)))
        fine = interleaver.submit(start(ScriptedStream("good", 5, log)))

        def refused() -> Stream:
            raise InputError("the prompt is empty", "give some text")

        at_start = interleaver.submit(refused)
        pieces, last = await drain(failing)
        assert pieces == ["bad1", "bad2"] and isinstance(last, InputError)
        _, last_at_start = await drain(at_start)
        assert isinstance(last_at_start, InputError) and "empty" in last_at_start.message
        good, good_last = await drain(fine)
        assert len(good) == 5 and isinstance(good_last, Completion)

    asyncio.run(scenario())


def test_a_full_queue_refuses_at_once_and_waiting_generations_start_in_turn() -> None:
    async def scenario() -> None:
        log: list[str] = []
        total = ACTIVE_GENERATIONS + 2
        interleaver = Interleaver("m", max_queue=total + 1)
        release = hold(interleaver, log)
        generations = [
            interleaver.submit(start(ScriptedStream(f"g{i}-", 3, log))) for i in range(total)
        ]
        with pytest.raises(QueueFull):
            interleaver.submit(start(ScriptedStream("late", 3, log)))
        release.set()
        for generation in generations:
            _, last = await drain(generation)
            assert isinstance(last, Completion)
        # The two beyond ACTIVE_GENERATIONS waited until the first ones had finished.
        first_turns = list(dict.fromkeys(log))
        assert first_turns[-2:] == [f"g{total - 2}-", f"g{total - 1}-"]
        assert log.index(f"g{total - 2}-") == ACTIVE_GENERATIONS * 3
        interleaver.submit(start(ScriptedStream("again", 1, log)))  # room once they are done

    asyncio.run(scenario())


def test_interleaved_answers_equal_answers_run_alone(tiny_llm: Path) -> None:
    model = GenerativeModel(tiny_llm, "cpu")
    prompts = ["Hello, world!", "The quick brown fox", "Once", "0123456789 abc"]
    alone = [model.generate(p, max_new_tokens=30) for p in prompts]

    async def scenario() -> list[str]:
        interleaver = Interleaver("m", max_queue=8)
        generations = [
            interleaver.submit(
                lambda p=p: model.generate(p, max_new_tokens=30, stream=True)  # type: ignore[misc]
            )
            for p in prompts
        ]
        texts = []
        for generation in generations:
            pieces, last = await drain(generation)
            assert isinstance(last, Completion)
            texts.append("".join(pieces))
        return texts

    assert asyncio.run(scenario()) == [a.text for a in alone]  # type: ignore[union-attr]


PROMPTS = ["Hello, world!", "The quick brown fox", "Once", "0123456789 abc"]


def batch_rows(metrics: Metrics) -> tuple[float, float]:
    """(batches started, rows they started with) of model ``m``."""
    count = metrics.registry.get_sample_value("gpux_generation_batch_rows_count", {"model": "m"})
    total = metrics.registry.get_sample_value("gpux_generation_batch_rows_sum", {"model": "m"})
    return count or 0.0, total or 0.0


def asking(model: GenerativeModel, prompt: str, **settings: Any) -> Callable[[], Any]:
    def start() -> GenerationRequest:
        return generation_request(model, model.encode(prompt), **settings)

    return start


def test_a_burst_waits_for_the_rest_of_itself_unless_nothing_runs() -> None:
    assert burst_over(first=10.0, last=10.0, now=10.0, running=False)  # c=1: never delayed
    assert not burst_over(first=10.0, last=10.0, now=10.0 + GATHER_QUIET / 2, running=True)
    assert burst_over(first=10.0, last=10.0, now=10.0 + GATHER_QUIET * 1.01, running=True)
    # Arrivals keep coming: the first waits GATHER_MOST at most.
    late = 10.0 + GATHER_MOST - GATHER_QUIET / 2
    assert not burst_over(first=10.0, last=late, now=late + GATHER_QUIET / 4, running=True)
    assert burst_over(first=10.0, last=late, now=10.0 + GATHER_MOST * 1.01, running=True)


def test_generations_that_arrive_together_run_as_one_batch(tiny_llm: Path) -> None:
    model = GenerativeModel(tiny_llm, "cpu")
    settings: list[dict[str, Any]] = [
        {"max_new_tokens": 30},
        {"max_new_tokens": 4},  # its own token limit, long before the others
        {"max_new_tokens": 30, "stop": ["e"]},
        {"max_new_tokens": 30, "guidance": Guidance(regex="(yes|no)")},  # runs alone
    ]
    alone = [model.generate(p, **s) for p, s in zip(PROMPTS, settings, strict=True)]

    async def scenario() -> None:
        metrics = Metrics(["m"])
        interleaver = Interleaver("m", max_queue=8, metrics=metrics)
        release = hold(interleaver, [])
        generations = [
            interleaver.submit(asking(model, p, **s))
            for p, s in zip(PROMPTS, settings, strict=True)
        ]
        release.set()
        for generation, lone in zip(generations, alone, strict=True):
            pieces, last = await drain(generation)
            assert isinstance(last, Completion) and isinstance(lone, Completion)
            assert "".join(pieces) == last.text == lone.text
            assert last.finish_reason == lone.finish_reason
        assert [lone.finish_reason for lone in alone] == ["length", "length", "stop", "stop"]
        assert batch_rows(metrics) == (2, 4)  # the three greedy rows, and the guided one
        assert metrics.generations.labels("m", "stop")._value.get() == 2

    asyncio.run(scenario())


def test_arrivals_while_the_model_is_busy_gather_into_one_batch(tiny_llm: Path) -> None:
    model = GenerativeModel(tiny_llm, "cpu")
    alone = [model.generate(p, max_new_tokens=20) for p in PROMPTS]

    async def scenario() -> None:
        log: list[str] = []
        metrics = Metrics(["m"])
        interleaver = Interleaver("m", max_queue=8, metrics=metrics)
        busy = interleaver.submit(start(ScriptedStream("busy", 1_000_000, log)))
        assert (await busy.events.get()) == "busy1"
        generations = [interleaver.submit(asking(model, p, max_new_tokens=20)) for p in PROMPTS]
        texts = []
        for generation in generations:
            pieces, last = await drain(generation)
            assert isinstance(last, Completion)
            texts.append("".join(pieces))
        busy.cancel()
        assert texts == [lone.text for lone in alone]  # type: ignore[union-attr]
        assert batch_rows(metrics) == (1, len(PROMPTS))

    asyncio.run(scenario())


def test_a_cancelled_row_does_not_stop_its_batch(tiny_llm: Path) -> None:
    model = GenerativeModel(tiny_llm, "cpu")
    alone = [model.generate(p, max_new_tokens=40) for p in PROMPTS]

    async def scenario() -> None:
        metrics = Metrics(["m"])
        interleaver = Interleaver("m", max_queue=8, metrics=metrics)
        release = hold(interleaver, [])
        generations = [interleaver.submit(asking(model, p, max_new_tokens=40)) for p in PROMPTS]
        release.set()
        gone = generations[1]
        await gone.events.get()  # one piece, then its client goes away
        gone.cancel()
        _, last = await drain(gone)
        assert isinstance(last, Cancelled)
        for index in (0, 2, 3):
            pieces, finished = await drain(generations[index])
            assert isinstance(finished, Completion)
            assert "".join(pieces) == alone[index].text  # type: ignore[union-attr]
        assert batch_rows(metrics) == (1, len(PROMPTS))
        assert metrics.generations.labels("m", "cancelled")._value.get() == 1
        assert metrics.generations.labels("m", "length")._value.get() == 3 + 1  # and hold()

    asyncio.run(scenario())
