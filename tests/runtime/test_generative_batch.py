"""Generations decoded as the rows of one onnxruntime-genai batch, on the tiny random Llama: each
row's greedy answer equals the same request run alone (prompts of different lengths, a row that
ends on its end-of-sequence token, on its own token limit, on a stop string, a repetition
penalty), a closed row does not stop the others, a failed step reaches every row, and requests
that cannot share a generator are not grouped."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gpux.config.generation import Guidance
from gpux.errors import BackendError
from gpux.runtime.generative import Completion, GenerativeModel, Stream
from gpux.runtime.generative_batch import (
    Batch,
    GenerationRequest,
    batch_key,
    batches,
    generation_request,
    start_batch,
)

# (prompt, settings): different lengths; "world Hello" ends on the end-of-sequence token after
# 18 tokens, alone (checked below), while the others go on.
ROWS: list[tuple[str, dict[str, Any]]] = [
    ("Hello", {"max_new_tokens": 40}),
    ("The quick brown fox jumps over the lazy dog, and then", {"max_new_tokens": 40}),
    ("world Hello", {"max_new_tokens": 40}),
    ("0123456789 abc", {"max_new_tokens": 7}),
    ("Once upon a time", {"max_new_tokens": 40, "stop": ["e"]}),
]


@pytest.fixture(scope="module")
def model(tiny_llm: Path) -> GenerativeModel:
    return GenerativeModel(tiny_llm, "cpu")


def alone(model: GenerativeModel, prompt: str, settings: dict[str, Any]) -> Completion:
    result = model.generate(prompt, **settings)
    assert isinstance(result, Completion)
    return result


def requests(
    model: GenerativeModel, rows: Sequence[tuple[str, dict[str, Any]]]
) -> list[GenerationRequest]:
    return [generation_request(model, model.encode(p), **s) for p, s in rows]


def read_in_turn(streams: list[Stream]) -> list[str]:
    """Every stream's text, one piece of each in turn, as the server reads them."""
    texts = ["" for _ in streams]
    live = list(range(len(streams)))
    while live:
        for index in list(live):
            try:
                texts[index] += next(streams[index])
            except StopIteration:
                live.remove(index)
    return texts


def test_each_rows_greedy_answer_equals_the_request_run_alone(model: GenerativeModel) -> None:
    expected = [alone(model, p, s) for p, s in ROWS]
    assert [e.finish_reason for e in expected] == ["length", "length", "stop", "length", "stop"]
    assert expected[2].completion_tokens == 18 and expected[3].completion_tokens == 7
    assert len({len(model.encode(p)) for p, _ in ROWS}) == len(ROWS)  # every length differs

    streams = start_batch(requests(model, ROWS))
    texts = read_in_turn(streams)
    for stream, text, lone in zip(streams, texts, expected, strict=True):
        assert stream.completion is not None
        assert text == stream.completion.text == lone.text
        assert stream.completion.token_ids == lone.token_ids
        assert stream.completion.finish_reason == lone.finish_reason
        assert stream.completion.prompt_tokens == lone.prompt_tokens


def test_rows_read_one_after_another_equal_rows_read_in_turn(model: GenerativeModel) -> None:
    """A row read to its end first leaves the others' tokens waiting for them."""
    expected = [alone(model, p, s).text for p, s in ROWS]
    streams = start_batch(requests(model, ROWS))
    assert ["".join(stream) for stream in reversed(streams)] == expected[::-1]


def test_a_repetition_penalty_is_applied_per_row(model: GenerativeModel) -> None:
    rows = [(p, {"max_new_tokens": 40, "repetition_penalty": 1.3}) for p, _ in ROWS[:3]]
    expected = [alone(model, p, s).text for p, s in rows]
    assert expected != [alone(model, p, {"max_new_tokens": 40}).text for p, _ in rows]
    assert read_in_turn(start_batch(requests(model, rows))) == expected


def test_a_closed_row_does_not_stop_the_others(model: GenerativeModel) -> None:
    expected = [alone(model, p, s).text for p, s in ROWS]
    streams = start_batch(requests(model, ROWS))
    first = next(streams[1])
    assert expected[1].startswith(first)
    streams[1].close()  # its client went away after one piece
    streams[0].close()  # and this one before reading anything
    rest = read_in_turn([streams[2], streams[3], streams[4]])
    assert rest == expected[2:]


def test_the_generator_is_freed_once_every_row_has_ended(model: GenerativeModel) -> None:
    batch = Batch(requests(model, ROWS[:2]))
    first, second = batch.streams()
    assert next(first) and next(second)
    first.close()
    assert batch.open_rows == 1 and batch.running
    "".join(second)
    assert batch.open_rows == 0 and not batch.running


def test_an_unread_row_dropped_by_its_reader_is_closed(model: GenerativeModel) -> None:
    batch = Batch(requests(model, ROWS[:2]))
    first, second = batch.streams()
    del first
    gc.collect()
    assert batch.open_rows == 1
    assert "".join(second) == alone(model, *ROWS[1]).text


class FailingGenerator:
    """A generator whose steps fail, as onnxruntime-genai's do when the device runs out of memory."""

    def is_done(self) -> bool:
        return False

    def generate_next_token(self) -> None:
        raise RuntimeError("CUDA out of memory")


def test_a_failed_step_reaches_every_row(model: GenerativeModel) -> None:
    batch = Batch(requests(model, ROWS[:3]))
    batch.generator = FailingGenerator()
    streams = batch.streams()
    for stream in streams:
        with pytest.raises(BackendError, match="CUDA out of memory"):
            next(stream)


def test_requests_that_can_share_a_generator_are_grouped(model: GenerativeModel) -> None:
    def ask(prompt: str = "Hello", **settings: Any) -> GenerationRequest:
        return generation_request(model, model.encode(prompt), **settings)

    greedy = [ask(max_new_tokens=n, stop=["x"] * (n % 2)) for n in (5, 6, 7)]
    sampled = [ask(temperature=0.7, max_new_tokens=9), ask(temperature=0.7, max_new_tokens=3)]
    other_penalty = ask(repetition_penalty=1.2, max_new_tokens=5)
    seeded = ask(temperature=0.7, seed=1, max_new_tokens=5)
    guided = ask(guidance=Guidance(regex="(yes|no)"), max_new_tokens=5)
    pad_id = model.pad_token_id
    assert pad_id is not None
    ends_on_padding = generation_request(model, [*model.encode("Hi"), pad_id], max_new_tokens=5)
    near_the_context = ask(max_new_tokens=model.context_length)
    arrived = [
        greedy[0],
        sampled[0],
        seeded,
        greedy[1],
        guided,
        other_penalty,
        ends_on_padding,
        near_the_context,
        sampled[1],
        greedy[2],
    ]
    groups = batches(arrived, most=16)
    assert groups == [
        greedy,
        sampled,
        [seeded],
        [guided],
        [other_penalty],
        [ends_on_padding],
        [near_the_context],
    ]
    for lone in (seeded, guided, ends_on_padding, near_the_context):
        assert batch_key(lone) is None
    assert batches(greedy, most=2) == [greedy[:2], greedy[2:]]


def test_a_batch_stays_within_the_context_length(model: GenerativeModel) -> None:
    """Padding makes every row as long as the longest prompt: a row that fits alone but not
    beside a longer prompt starts another batch."""
    context = model.context_length
    short = generation_request(model, model.encode("Hi"), max_new_tokens=context - 20)
    long_prompt = model.encode("The quick brown fox jumps over the lazy dog. " * 3)
    assert 20 < len(long_prompt) < 60
    long = generation_request(model, long_prompt, max_new_tokens=10)
    assert batches([short, long], most=16) == [[short], [long]]
    fits = generation_request(model, model.encode("Hi"), max_new_tokens=10)
    assert batches([fits, long], most=16) == [[fits, long]]


def test_sampled_rows_give_answers_of_their_own(model: GenerativeModel) -> None:
    rows = [("Hello", {"max_new_tokens": 20, "temperature": 1.0})] * 3
    streams = start_batch(requests(model, rows))
    read_in_turn(streams)
    completions = [s.completion for s in streams]
    assert all(c is not None and c.completion_tokens > 0 for c in completions)
    assert len({c.text for c in completions if c is not None}) > 1  # not one draw copied
