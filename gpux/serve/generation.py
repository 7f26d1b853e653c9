"""Concurrent generations of one served generative model, batched and interleaved on the model's
thread.

Each generative model gets one thread (started with its first request) that owns every
onnxruntime-genai generator of that model. Text generations that arrive together and share their
search options start as the rows of one generator (gpux/runtime/generative_batch.py: one
``og.Generator`` of ``batch_size`` rows, prompts right-padded), so N concurrent chats cost one
batched step per token instead of N steps of one row. "Together": a generation waits while
others arrive, until none came for ``GATHER_QUIET`` seconds or it has waited ``GATHER_MOST``;
when nothing is running it starts at once, so a lone request is never delayed. Generations that
arrive while a batch runs form the next batch, which runs beside it.

The thread takes one step of each active generation in turn (one
:class:`~gpux.runtime.generative.Stream` piece: usually one token, more while a possible stop
string is held back); the first row of a batch that needs a token steps the whole batch, and its
other rows find theirs waiting, so concurrent requests share the model fairly and a long answer
never holds a short one back. Up to ``ACTIVE_GENERATIONS`` rows run at once; the rest wait in
arrival order; beyond the model's ``max_queue`` a request is refused at once (503), as on
``/infer``. ``gpux_generation_batch_rows`` counts the rows each generator started with.

Why not onnxruntime-genai's continuous batching (``og.Engine``, in 0.18): measured on the tiny
Llama of tools/make_tiny_llm.py, greedy answers of requests batched with a longer prompt differ
from the same requests run alone, where a static right-padded batch of the same prompts matches
(gpux/runtime/generative_batch.py says what was checked), so the Engine is not yet something
answers can depend on (docs/architecture.md). A row cannot leave a static batch: the batch runs
until its last row has ended.

A generation ends when the model stops, at its token limit, or when its request is cancelled
(the client disconnected or did not get its first token in time): the thread closes its stream
at its next turn; a lone generation's KV cache is freed then, a batch's when its last row ends.
``gpux_generations{finish="cancelled"}`` counts those, and ``gpux_generated_tokens`` stops
growing.

Events reach the request's asyncio queue through ``loop.call_soon_threadsafe``: a text piece
(``str``), the finished :class:`Completion`, or the exception that ended the generation.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpux.config.schema import Runtime
from gpux.errors import InputError, UsageError
from gpux.runtime.backend import Backend, Placement
from gpux.runtime.generative import Completion, GenerativeModel, Stream
from gpux.runtime.generative_batch import GenerationRequest, batches, start_batch
from gpux.runtime.speech import SpeechModel
from gpux.serve.batching import QueueFull
from gpux.serve.metrics import Metrics

ACTIVE_GENERATIONS = 16
"""Generations (batch rows) decoded at once per model: each holds its own KV cache, so memory
grows with this (a batch keeps its ended rows' cache until its last row ends); the others wait
for a free turn (counted against ``max_queue``)."""
GATHER_QUIET = 0.010
"""Seconds without a new arrival after which waiting generations start (as batches)."""
GATHER_MOST = 0.050
"""Seconds the oldest waiting generation waits at most for others to batch with."""


class Cancelled(Exception):
    """The last event of a generation cancelled before it finished."""


Event = str | Completion | BaseException


@dataclass(eq=False)
class Generation:
    """One request's generation: how to start it (on the model's thread), where its events go.
    ``start`` gives a ``GenerationRequest`` (a text generation, which may join a batch) or a
    :class:`Stream` (one that runs alone, such as a transcription)."""

    start: Callable[[], Stream | GenerationRequest]
    events: asyncio.Queue[Event]
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    stream: Stream | None = None
    tokens: int = 0  # generated so far
    last_token_at: float | None = None

    def cancel(self) -> None:
        """Stop at the next turn (called from the event loop: a plain flag, read by the thread)."""
        self.cancelled = True

    def send(self, event: Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop has closed (the server stopped): nobody is listening
            self.cancelled = True  # closed and freed at its next turn


class Interleaver:
    """The generations of one model: a queue and the thread that decodes them in turn."""

    def __init__(self, name: str, max_queue: int, metrics: Metrics | None = None) -> None:
        self.name = name
        self.max_queue = max_queue
        self.metrics = metrics
        self._waiting: deque[Generation] = deque()
        self._active: list[Generation] = []
        self._starting = 0  # taken from _waiting, not yet in _active: they count against the queue
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        return len(self._waiting) + self._starting + len(self._active)

    def submit(self, start: Callable[[], Stream | GenerationRequest]) -> Generation:
        """Queue a generation (``start`` runs on the model's thread); QueueFull past max_queue."""
        with self._wakeup:
            if self.pending >= self.max_queue:
                raise QueueFull
            generation = Generation(start, asyncio.Queue(), asyncio.get_running_loop())
            self._waiting.append(generation)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"gpux-generate-{self.name}", daemon=True
                )
                self._thread.start()
            self._wakeup.notify()
        return generation

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._waiting and not self._active:
                    self._wakeup.wait()
                starting = self._take_ready(time.perf_counter())
            if starting:
                self._start(starting)
            with self._wakeup:
                turn = list(self._active)
            for generation in turn:
                if not self._step(generation):
                    with self._wakeup:
                        self._active.remove(generation)
            with self._wakeup:  # cancelled while waiting: never started, nothing to free
                for generation in [g for g in self._waiting if g.cancelled]:
                    self._waiting.remove(generation)
                    self._finished(generation, "cancelled")
                    generation.send(Cancelled())

    def _take_ready(self, now: float) -> list[Generation]:
        """The waiting generations to start now (holding the lock): all that fit when nothing
        runs, else once their burst is over (``GATHER_QUIET``) or has lasted ``GATHER_MOST``."""
        if not self._waiting:
            return []
        first, last = self._waiting[0].arrived, self._waiting[-1].arrived
        if not burst_over(first, last, now, running=bool(self._active)):
            return []
        starting: list[Generation] = []
        while self._waiting and len(self._active) + len(starting) < ACTIVE_GENERATIONS:
            starting.append(self._waiting.popleft())
        self._starting = len(starting)
        return starting

    def _start(self, starting: list[Generation]) -> None:
        """Start ``starting``: streams of their own as they come, text generations grouped into
        batches; a failure reaches the generations it concerns (a batch's: each of its rows)."""
        started: list[Generation] = []
        requests: list[GenerationRequest] = []
        asking: dict[int, Generation] = {}
        for generation in starting:
            if generation.cancelled:
                self._finished(generation, "cancelled")
                generation.send(Cancelled())
                continue
            try:
                made = generation.start()
            except Exception as exc:  # the request's own mistake (an invalid setting)
                self._finished(generation, "error")
                generation.send(exc)
                continue
            if isinstance(made, GenerationRequest):
                requests.append(made)
                asking[id(made)] = generation
            else:
                generation.stream = made
                started.append(generation)
        for group in batches(requests, ACTIVE_GENERATIONS):
            rows = [asking[id(each)] for each in group]
            try:
                streams = start_batch(group)
            except Exception as exc:  # guidance that does not compile, a backend failure
                for generation in rows:
                    self._finished(generation, "error")
                    generation.send(exc)
                continue
            if self.metrics is not None:
                self.metrics.generation_batch_rows.labels(self.name).observe(len(group))
            for generation, stream in zip(rows, streams, strict=True):
                generation.stream = stream
                started.append(generation)
        for generation in started:
            if self.metrics is not None and generation.stream is not None:
                prompt = generation.stream.prompt_tokens
                self.metrics.tokens_in.labels(self.name).inc(prompt)
        with self._wakeup:
            self._active.extend(started)
            self._starting = 0

    def _step(self, generation: Generation) -> bool:
        """One turn of ``generation``; False once it has ended."""
        stream = generation.stream
        assert stream is not None
        if generation.cancelled:
            stream.close()  # frees the generator and its KV cache (a batch's with its last row)
            self._finished(generation, "cancelled")
            generation.send(Cancelled())
            return False
        try:
            piece: str | None = next(stream)
        except StopIteration:
            piece = None
        except Exception as exc:  # a backend failure
            self._count_tokens(generation)
            self._finished(generation, "error")
            generation.send(exc)
            return False
        self._count_tokens(generation)
        if piece is not None:
            generation.send(piece)
            # onnxruntime-genai 0.18 holds the GIL while it computes a token, so the event loop
            # that must write this piece only gets it when this thread lets go: by itself at
            # Python's switch interval (5 ms), often a token or more later. Sleeping 0 s lets go
            # now. Measured on the tiny Llama (tools/make_tiny_llm.py, 2 cores), a 32-token
            # stream's pieces reached the client all at once after the last token without it,
            # and one by one with it.
            time.sleep(0)
            return True
        completion = stream.completion
        assert completion is not None
        self._finished(generation, completion.finish_reason)
        generation.send(completion)
        return False

    def _count_tokens(self, generation: Generation) -> None:
        """Tokens out, time to first token and between tokens. A turn that decoded several
        tokens (a held-back stop string) shares its time evenly between them."""
        stream = generation.stream
        new = 0 if stream is None else len(stream.token_ids) - generation.tokens
        if new <= 0:
            return
        now = time.perf_counter()
        if self.metrics is not None:
            self.metrics.tokens_out.labels(self.name).inc(new)
            between = self.metrics.inter_token.labels(self.name)
            if generation.last_token_at is None:
                self.metrics.time_to_first_token.labels(self.name).observe(now - generation.arrived)
                for _ in range(new - 1):
                    between.observe(0.0)
            else:
                gap = (now - generation.last_token_at) / new
                for _ in range(new):
                    between.observe(gap)
        generation.tokens += new
        generation.last_token_at = now

    def _finished(self, generation: Generation, finish: str) -> None:
        if self.metrics is not None:
            self.metrics.generations.labels(self.name, finish).inc()


def burst_over(first: float, last: float, now: float, *, running: bool) -> bool:
    """Whether generations waiting since ``first`` (the latest arrived at ``last``) start at
    ``now``: at once when nothing is ``running`` (a lone request is never delayed), else when no
    other came for ``GATHER_QUIET`` seconds or the first has waited ``GATHER_MOST``. Those that
    arrive meanwhile share their batch; waiting costs little then, as the model is busy."""
    if not running:
        return True
    return now - last >= GATHER_QUIET or now - first >= GATHER_MOST


class GenerativeBackend(Backend):
    """What the tensor routes (``/infer``, gRPC) see of a generative model: its placement, and a
    ``run`` that refuses tensors, pointing to the OpenAI routes."""

    name = "onnxruntime-genai"

    def __init__(self, model: GenerativeModel | SpeechModel) -> None:
        self.model = model
        self.speech = isinstance(model, SpeechModel)

    @classmethod
    def load(
        cls,
        model_path: Path,
        runtime: Runtime,
        cache_dir: Path | None = None,
        dimensions: Mapping[str, int] | None = None,
    ) -> Backend:
        raise UsageError(
            "a generative model is loaded from its image, not from one ONNX file",
            "use gpux.runtime.generative.load_generative(image)",
        )

    def run(self, feed: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        raise generative_refusal("tensors", speech=self.speech)

    @property
    def placement(self) -> Placement:
        return self.model.placement


def generative_refusal(what: str, *, speech: bool = False) -> InputError:
    """The 400 of a tensor or pipeline route asked to run a generative (or speech) model."""
    if speech:
        return InputError(
            f"this is a speech-to-text model: it takes audio files, not {what}",
            "POST the file as multipart to /v1/audio/transcriptions (the OpenAI API)",
        )
    return InputError(
        f"this is a generative model: it takes prompts or chat messages, not {what}",
        "POST to /v1/chat/completions or /v1/completions (the OpenAI API)",
    )
