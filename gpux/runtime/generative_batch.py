"""Several generations of one model decoded together, as the rows of one onnxruntime-genai batch.

A generation is first a :class:`GenerationRequest`: its prompt's token ids and checked settings.
``batches(requests)`` groups requests that can share a generator: the same search options
(greedy, or sampling with the same temperature, top_p and top_k, without a seed), and the same
repetition penalty. ``start_batch(group)`` then starts one ``og.Generator`` with ``batch_size``
rows, the prompts right-padded with the model's ``pad_token_id``, and gives each row its
:class:`~gpux.runtime.generative.Stream`: stop strings, token limits and closing stay per row.

What onnxruntime-genai 0.18 guarantees here, checked before relying on it (tests/runtime/
test_generative_batch.py, and scratch runs on random Llamas of 2 and 4 layers, prompts of 1 to 60
tokens, batches of 2 to 16, with and without a repetition penalty): a right-padded row's greedy
tokens equal the same prompt run alone, also after another row has ended on an end-of-sequence
token. Left padding did not (3 rows of 4 differed), nor did a prompt whose *last* token is the
pad id (genai reads it as padding), so such a prompt runs alone.

What it does not offer: a ``Generator`` cannot drop a row, so a row that has ended (end token,
stop string, its own token limit, a closed stream) is still computed, its tokens thrown away,
until every row has ended or been closed; then the generator and its KV cache are freed. Its
continuous batching (``og.Engine``) changed greedy answers (gpux/serve/generation.py), so rows
join only when a batch starts.

Not batched (a batch of one, as before): guidance (llguidance compiles one grammar per generator),
a seeded sample (the seed's draws would be shared between rows, so the answer would depend on its
neighbours), and a row that would reach the context length (alone it gets fewer tokens than
asked; in a batch the padding would cut it shorter still).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Generator, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpux.config.generation import Generation
from gpux.errors import BackendError
from gpux.runtime.generative import GenerativeModel, Stream


@dataclass(frozen=True, eq=False)
class GenerationRequest:
    """One generation before it starts: the prompt's token ids and settings checked by
    ``model.checked_settings`` (see :func:`generation_request`)."""

    model: GenerativeModel
    prompt_ids: tuple[int, ...]
    settings: Generation


def generation_request(
    model: GenerativeModel, prompt_ids: Sequence[int], **overrides: Any
) -> GenerationRequest:
    """A request for ``prompt_ids`` with the model's defaults overridden; InputError when the
    settings or the prompt are not valid (as ``model.generate_ids`` would say)."""
    ids = tuple(model.checked_ids(prompt_ids))
    return GenerationRequest(model, ids, model.checked_settings(ids, overrides))


def batch_key(request: GenerationRequest) -> Hashable | None:
    """What requests must share to be rows of one generator; None: this one runs alone."""
    settings, model = request.settings, request.model
    if settings.guidance is not None or model.pad_token_id is None:
        return None
    if settings.temperature > 0 and settings.seed is not None:
        return None
    if request.prompt_ids[-1] == model.pad_token_id:
        return None
    if model.context_length and (
        len(request.prompt_ids) + settings.max_new_tokens > model.context_length
    ):
        return None
    sampling = (
        (settings.temperature, settings.top_p, settings.top_k) if settings.temperature > 0 else ()
    )
    return (id(model), settings.repetition_penalty, sampling)


def batches(requests: Sequence[GenerationRequest], most: int) -> list[list[GenerationRequest]]:
    """``requests`` grouped into batches of at most ``most`` rows, in arrival order (a batch's
    place is its first row's). A batch also stays within the context length: its longest prompt
    plus any row's token limit (the padding makes every row as long as the longest)."""
    grouped: list[list[GenerationRequest]] = []
    open_batches: dict[Hashable, list[GenerationRequest]] = {}
    for each in requests:
        key = batch_key(each)
        current = open_batches.get(key) if key is not None else None
        if current is not None and len(current) < most and _fits(current, each):
            current.append(each)
            continue
        grouped.append([each])
        if key is not None:
            open_batches[key] = grouped[-1]
    return grouped


def _fits(rows: list[GenerationRequest], new: GenerationRequest) -> bool:
    context = new.model.context_length
    if not context:
        return True
    longest = max(len(r.prompt_ids) for r in (*rows, new))
    most_new = max(r.settings.max_new_tokens for r in (*rows, new))
    return longest + most_new <= context


class Batch:
    """One ``og.Generator`` decoding ``requests`` (one :func:`batches` group) as its rows.

    Rows are read through ``streams()``, in any order: the stream that needs a token the batch has
    not made yet takes the next step (one token for every row), and the other rows find theirs
    waiting. A failed step fails every row that asks for a token after it.
    """

    def __init__(self, requests: Sequence[GenerationRequest]) -> None:
        if not requests:
            raise ValueError("a batch needs at least one request")
        model = requests[0].model
        self.model = model
        self.rows = len(requests)
        self._waiting: list[deque[int]] = [deque() for _ in requests]
        self._open = set(range(self.rows))
        self._failure: BaseException | None = None
        longest = max(len(r.prompt_ids) for r in requests)
        limit = longest + max(r.settings.max_new_tokens for r in requests)
        started = time.perf_counter()
        # The og.Generator; None once every row has ended (which frees its KV cache).
        self.generator: Any = model.open_generator(requests[0].settings, limit, self.rows)
        if self.rows == 1:
            prompt: Any = list(requests[0].prompt_ids)
        else:
            prompt = np.full((self.rows, longest), model.pad_token_id, dtype=np.int32)
            for row, each in enumerate(requests):
                prompt[row, : len(each.prompt_ids)] = each.prompt_ids
        try:
            self.generator.append_tokens(prompt)
        except Exception as exc:
            self.generator = None
            raise BackendError(f"onnxruntime-genai failed on the prompts: {exc}") from exc
        # The streams hold the batch, not the other way round: a row nobody reads any more is
        # collected, which closes it.
        self._streams: list[Stream] | None = [
            Stream.over(
                _primed(self._row(row, each.settings)),
                len(each.prompt_ids),
                each.settings.stop,
                self,
                started=started,
            )
            for row, each in enumerate(requests)
        ]

    @property
    def open_rows(self) -> int:
        """Rows still being read (not ended, closed or dropped by their reader)."""
        return len(self._open)

    @property
    def running(self) -> bool:
        return self.generator is not None

    def streams(self) -> list[Stream]:
        """The rows' streams, in the order of the requests (given once)."""
        streams, self._streams = self._streams, None
        if streams is None:
            raise RuntimeError("a batch's streams are given once")
        return streams

    def _step(self) -> bool:
        """One token for every row; False once the generator has ended (every row done)."""
        if self._failure is not None:
            raise BackendError(f"onnxruntime-genai failed: {self._failure}") from self._failure
        generator = self.generator
        if generator is None or generator.is_done():
            return False
        try:
            generator.generate_next_token()
            tokens = generator.get_next_tokens()
        except Exception as exc:
            self._failure = exc
            raise BackendError(f"onnxruntime-genai failed: {exc}") from exc
        for row in tuple(self._open):  # a dropped row's stream may close on the collector's thread
            self._waiting[row].append(int(tokens[row]))
        return True

    def _row(self, row: int, settings: Generation) -> Generator[tuple[int, str], None, str]:
        """(token, text piece) per token of ``row``; returns the finish reason."""
        waiting = self._waiting[row]
        decoder = self.model.tokenizer.create_stream()
        ends = self.model.eos_token_ids
        made = 0
        try:
            yield 0, ""  # taken at once by _primed, so that closing an unread row runs finally
            while made < settings.max_new_tokens:
                if not waiting and not self._step():
                    return "length"
                token = waiting.popleft()
                if token in ends:
                    return "stop"
                made += 1
                yield token, decoder.decode(token)
            return "length"
        finally:
            self._open.discard(row)
            waiting.clear()
            if not self._open:
                self.generator = None  # frees the KV cache of every row


def _primed(pieces: Generator[tuple[int, str], None, str]) -> Generator[tuple[int, str], None, str]:
    """``pieces`` past its first (empty) yield: a generator closed before it ever ran skips its
    ``finally``, and a row's ``finally`` is what lets the batch stop computing it."""
    next(pieces)
    return pieces


def start_batch(requests: Sequence[GenerationRequest]) -> list[Stream]:
    """One stream per request, decoded as the rows of one batch (a :func:`batches` group)."""
    return Batch(requests).streams()
