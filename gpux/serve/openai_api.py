"""The OpenAI-compatible API: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions`` and
``/v1/embeddings`` (and ``/v1/audio/transcriptions``, gpux/serve/openai_audio.py), so the
``openai`` SDK, LangChain and other OpenAI clients work unchanged.

Chat and text completions run on generative images (gpux/serve/generation.py batches and
interleaves concurrent ones on the model's thread); ``stream: true`` answers as server-sent
events, one ``data: {chunk}`` per text piece, then ``data: [DONE]``. The first event is awaited before the
answer starts, so a request the engine refuses (a guidance it cannot compile) is still a 400
and a model too busy to start in ``serving.timeout`` seconds a 504. A client that goes away
cancels its generation. Embeddings run on images whose pipeline has one text input and an
``embedding`` result, through the same batcher, queue and timeout as ``/predict``.

Errors take OpenAI's shape, ``{"error": {"message", "type", "param", "code", "hint"}}`` (its
clients read ``error.message``); the status is the one the rest of the server gives the same
mistake. The bearer token is checked before routing, as everywhere (gpux/serve/guards.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gpux.errors import GPUXError
from gpux.pipeline.text import TokenIds
from gpux.runtime.generative import Completion
from gpux.runtime.generative_batch import GenerationRequest, generation_request
from gpux.serve import bodies, json_codec
from gpux.serve.batching import QueueFull
from gpux.serve.generation import Cancelled, Generation, Interleaver
from gpux.serve.guards import HTTPError, RequestPolicy, error_response, openai_error
from gpux.serve.inference import STATUS_OF, Inference
from gpux.serve.metrics import Metrics
from gpux.serve.openai_audio import transcriptions_handler
from gpux.serve.openai_requests import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    OpenAIRefusal,
    Sampling,
    parse,
)

if TYPE_CHECKING:
    from gpux.serve.app import ServedModel

OPENAI_PATHS = re.compile(
    r"/v1/(models(/[^/]+)?|chat/completions|completions|embeddings|audio/transcriptions)"
)
CLIENT_CLOSED = 499  # nginx's status for a client that went away before its answer


def speaks_openai(path: str) -> bool:
    """The routes whose errors take OpenAI's shape."""
    return bool(OPENAI_PATHS.fullmatch(path))


def openai_routes(
    models: list[ServedModel], core: Inference, metrics: Metrics, policy: RequestPolicy
) -> list[Route]:
    """The OpenAI routes for ``models`` (each route says which models it can run)."""
    interleavers = {
        m.name: Interleaver(m.name, m.limits.max_queue, metrics)
        for m in models
        if m.generative is not None or m.speech is not None
    }
    created = int(time.time())

    def find(name: str) -> ServedModel:
        for served in models:
            if name in (served.name, f"{served.name}:{served.version}"):
                return served
        raise OpenAIRefusal(
            404,
            f"model '{name}' is not served here",
            f"served models: {', '.join(m.name for m in models)} (GET /v1/models)",
            param="model",
            code="model_not_found",
        )

    def generative(request: Request, name: str) -> ServedModel:
        served = find(name)
        request.state.model = served.name
        if served.generative is None:
            raise OpenAIRefusal(
                400,
                f"model '{served.name}' does not generate text",
                "send it to /v1/embeddings if it embeds, else to /v1/models/"
                f"{served.name}/predict; /v1/models lists what each model does",
                param="model",
            )
        return served

    def describe(served: ServedModel) -> dict[str, Any]:
        return {
            "id": served.name,
            "object": "model",
            "created": created,
            "owned_by": "gpux",
            "version": served.version,
            "backend": served.model.placement.backend,
            "endpoints": _endpoints(served),
        }

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [describe(m) for m in models]})

    async def retrieve_model(request: Request) -> Response:
        return JSONResponse(describe(find(request.path_params["model"])))

    async def chat_completions(request: Request) -> Response:
        chat = parse(ChatRequest, await _json_body(request, policy))
        chat.refuse_unsupported()
        served = generative(request, chat.model)
        assert served.generative is not None
        messages = [{"role": m.role, "content": m.text()} for m in chat.messages]
        settings = _settings(chat, served)
        model = served.generative
        return await _answer(
            request,
            served,
            interleavers[served.name],
            lambda: generation_request(
                model, model.encode(model.chat_prompt(messages)), **settings
            ),
            chat,
            chat=True,
        )

    async def completions(request: Request) -> Response:
        completion = parse(CompletionRequest, await _json_body(request, policy))
        completion.refuse_unsupported()
        served = generative(request, completion.model)
        assert served.generative is not None
        prompt = completion.one_prompt()
        settings = _settings(completion, served)
        model = served.generative

        def start() -> GenerationRequest:
            ids = model.encode(prompt) if isinstance(prompt, str) else prompt
            return generation_request(model, ids, **settings)

        return await _answer(
            request, served, interleavers[served.name], start, completion, chat=False
        )

    async def embeddings(request: Request) -> Response:
        asked = parse(EmbeddingRequest, await _json_body(request, policy))
        served = find(asked.model)
        request.state.model = served.name
        name = embedding_input(served)
        if name is None:
            raise OpenAIRefusal(
                400,
                f"model '{served.name}' does not embed text",
                "an embedding model's pipeline has one text input and an 'embedding' result "
                "(see examples/minilm-embeddings); GET /v1/models lists what each model does",
                param="model",
            )
        assert served.pipeline is not None
        values = [TokenIds(v) if isinstance(v, list) else v for v in asked.inputs()]
        processor = served.pipeline.processor(name)
        counts = await asyncio.to_thread(processor.count_tokens, values)  # also checks ids
        items = [{name: value} for value in values]
        with metrics.in_flight(served.name):
            results = await core.submit(served, "items", (items, False))
        vectors = [np.asarray(result["embedding"], dtype="<f4").ravel() for result in results]
        if asked.dimensions is not None and asked.dimensions != vectors[0].size:
            raise OpenAIRefusal(
                400,
                f"model '{served.name}' makes {vectors[0].size}-dimensional embeddings; it "
                f"cannot shorten them to {asked.dimensions}",
                "leave dimensions out",
                param="dimensions",
            )
        metrics.tokens_in.labels(served.name).inc(sum(counts))
        answer = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": index, "embedding": _encoded(vector, asked)}
                for index, vector in enumerate(vectors)
            ],
            "model": served.name,
            "usage": {"prompt_tokens": sum(counts), "total_tokens": sum(counts)},
        }
        return Response(json_codec.dumps(answer), media_type="application/json")

    async def _answer(
        request: Request,
        served: ServedModel,
        interleaver: Interleaver,
        start: Callable[[], GenerationRequest],
        asked: Sampling,
        *,
        chat: bool,
    ) -> Response:
        generation, first = await start_generation(served, interleaver, start, "answering")
        reply = _Reply(served.name, chat, asked.include_usage)
        if asked.stream:
            return StreamingResponse(
                _server_sent_events(request, generation, first, reply),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        completion = await await_completion(request, generation, first)
        if completion is None:  # nobody is waiting for this answer any more
            return Response(status_code=CLIENT_CLOSED)
        return JSONResponse(reply.whole(completion))

    def guarded(
        endpoint: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status_code
                return response
            except OpenAIRefusal as exc:
                status = exc.status
                body = openai_error(exc.status, exc.message, exc.hint, exc.param, exc.code)
                return JSONResponse(body, status_code=exc.status)
            except HTTPError as exc:
                status = exc.status
                headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
                return error_response(status, exc.message, exc.hint, headers, openai=True)
            except GPUXError as exc:
                status = next((s for t, s in STATUS_OF.items() if isinstance(exc, t)), 500)
                return error_response(status, exc.message, exc.hint, openai=True)
            finally:
                name = getattr(request.state, "model", "")
                if name:
                    metrics.request(name, endpoint, status, time.perf_counter() - started)

        return wrapped

    return [
        Route("/v1/models", guarded("openai", list_models), methods=["GET"]),
        Route("/v1/models/{model}", guarded("openai", retrieve_model), methods=["GET"]),
        Route("/v1/chat/completions", guarded("chat", chat_completions), methods=["POST"]),
        Route("/v1/completions", guarded("completions", completions), methods=["POST"]),
        Route("/v1/embeddings", guarded("embeddings", embeddings), methods=["POST"]),
        Route(
            "/v1/audio/transcriptions",
            guarded("transcriptions", transcriptions_handler(find, interleavers, policy)),
            methods=["POST"],
        ),
    ]


def embedding_input(served: ServedModel) -> str | None:
    """The text input of an embedding model (one text input, an ``embedding`` result), else None."""
    pipeline = served.pipeline
    if pipeline is None or not any(r.name == "embedding" for r in pipeline.results):
        return None
    names = pipeline.input_names
    if len(names) != 1 or pipeline.kind(names[0]) != "text":
        return None
    entry = next(e for e in pipeline.entries if e.name == names[0])
    return None if entry.text is None or entry.text.pairs else names[0]


def _endpoints(served: ServedModel) -> list[str]:
    if served.generative is not None:
        return ["/v1/chat/completions", "/v1/completions"]
    if served.speech is not None:
        return ["/v1/audio/transcriptions"]
    found = [f"/v1/models/{served.name}/predict", f"/v2/models/{served.name}/infer"]
    return (["/v1/embeddings"] if embedding_input(served) else []) + found


def _settings(asked: Sampling, served: ServedModel) -> dict[str, Any]:
    """The request's generation settings over the image's defaults; max_tokens within the cap."""
    model = served.generative
    assert model is not None
    cap = served.limits.max_tokens or model.context_length or None
    wanted = asked.max_completion_tokens or asked.max_tokens
    if wanted is not None and cap is not None and wanted > cap:
        field = "max_completion_tokens" if asked.max_completion_tokens else "max_tokens"
        raise OpenAIRefusal(
            400,
            f"{field} is {wanted}; this server generates at most {cap} tokens per request",
            f"ask for {cap} or fewer, or start gpux serve with a larger --max-tokens "
            "(serving.max_tokens in the GPUXfile)",
            param=field,
        )
    if wanted is None and cap is not None:
        wanted = min(model.defaults.max_new_tokens, cap)
    settings = {
        "max_new_tokens": wanted,
        "temperature": asked.temperature,
        "top_p": asked.top_p,
        "seed": asked.seed,
        "stop": asked.stop,
        "guidance": asked.guidance(),
    }
    try:
        model.defaults.merged(**settings)  # checked here, so a mistake is a 400 with its field
    except ValueError as exc:
        raise OpenAIRefusal(400, f"invalid generation setting: {exc}", "see /docs") from exc
    return settings


async def _json_body(request: Request, policy: RequestPolicy) -> Any:
    bodies.require_media(request, (bodies.JSON,), "send the request as application/json")
    body = await bodies.read_body(request, policy)
    try:
        return json.loads(body)
    except ValueError as exc:
        raise OpenAIRefusal(400, f"the body is not JSON: {exc}", "send a JSON object") from exc


def _encoded(vector: np.ndarray[Any, Any], asked: EmbeddingRequest) -> Any:
    if asked.encoding_format == "base64":  # little-endian float32, as OpenAI sends them
        return base64.b64encode(vector.tobytes()).decode("ascii")
    return vector.tolist()


async def wait_disconnected(request: Request) -> None:
    """Returns once the client has gone away (the body was read before)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def await_completion(
    request: Request, generation: Generation, first: str | Completion
) -> Completion | None:
    """The finished completion, or None when the client went away first (generation cancelled)."""
    watcher = asyncio.ensure_future(wait_disconnected(request))
    event: Any = first
    try:
        while not isinstance(event, Completion):
            getting = asyncio.ensure_future(generation.events.get())
            done, _ = await asyncio.wait({getting, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if getting not in done:
                getting.cancel()
                return None
            event = getting.result()
            if isinstance(event, Cancelled):
                return None
            if isinstance(event, BaseException):
                raise event
        return event
    finally:
        watcher.cancel()
        generation.cancel()  # a no-op once it has finished


async def _server_sent_events(
    request: Request, generation: Generation, first: str | Completion, reply: _Reply
) -> AsyncIterator[str]:
    """``data: {chunk}`` per piece, the finish (and usage) chunks, ``data: [DONE]``. A client
    that disconnects cancels the generation (Starlette cancels this iterator; the watcher covers
    a client gone while the model is between pieces)."""
    watcher = asyncio.ensure_future(wait_disconnected(request))
    watcher.add_done_callback(lambda _: generation.cancel())
    event: Any = first
    try:
        if reply.chat:
            yield sse_data(reply.chunk({"role": "assistant", "content": ""}))
        while True:
            if isinstance(event, str):
                yield sse_data(reply.chunk(event))
            elif isinstance(event, Completion):
                yield sse_data(reply.chunk(None, event.finish_reason))
                if reply.include_usage:
                    yield sse_data(reply.usage_chunk(event))
                yield "data: [DONE]\n\n"
                return
            elif isinstance(event, Cancelled):
                return
            else:  # the headers are gone: the error goes in the stream, as vLLM sends it
                status, message = 500, f"generation failed: {event}"
                if isinstance(event, GPUXError):
                    status = next((s for t, s in STATUS_OF.items() if isinstance(event, t)), 500)
                    message = event.message
                yield sse_data(openai_error(status, message, None))
                yield "data: [DONE]\n\n"
                return
            event = await generation.events.get()
    finally:
        watcher.cancel()
        generation.cancel()


def sse_data(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


class _Reply:
    """The answer's bodies, in OpenAI's shapes (chat or text completion, whole or in chunks)."""

    def __init__(self, model: str, chat: bool, include_usage: bool) -> None:
        self.model, self.chat, self.include_usage = model, chat, include_usage
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def whole(self, completion: Completion) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "logprobs": None}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": completion.text}
        else:
            choice["text"] = completion.text
        choice["finish_reason"] = completion.finish_reason
        kind = "chat.completion" if self.chat else "text_completion"
        return {**self._envelope(kind), "choices": [choice], "usage": _usage(completion)}

    def chunk(
        self, content: str | dict[str, Any] | None, finish: str | None = None
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "logprobs": None}
        if self.chat:
            delta = content if isinstance(content, dict) else {}
            if isinstance(content, str):
                delta = {"content": content}
            choice["delta"] = delta
        else:
            choice["text"] = content if isinstance(content, str) else ""
        choice["finish_reason"] = finish
        body = {**self._envelope(self.kind), "choices": [choice]}
        if self.include_usage:  # OpenAI: null on every chunk but the last
            body["usage"] = None
        return body

    def usage_chunk(self, completion: Completion) -> dict[str, Any]:
        return {**self._envelope(self.kind), "choices": [], "usage": _usage(completion)}

    @property
    def kind(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"


def _usage(completion: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


async def start_generation(
    served: ServedModel, interleaver: Interleaver, start: Callable[[], Any], doing: str
) -> tuple[Any, Any]:
    """A generation queued among the model's others, and its first event (a piece, or the
    completion of an empty one): 503 when the queue is full, 504 when nothing came within the
    model's timeout (``doing``: "answering", "transcribing"), which then cancels it."""
    try:
        generation = interleaver.submit(start)
    except QueueFull as exc:
        raise OpenAIRefusal(
            503,
            f"model '{served.name}' has {served.limits.max_queue} generations running or waiting",
            "retry after a moment, or raise serving.max_queue",
        ) from exc
    timeout = served.limits.timeout
    try:
        first = await asyncio.wait_for(generation.events.get(), timeout)
    except TimeoutError as exc:
        generation.cancel()
        raise OpenAIRefusal(
            504,
            f"model '{served.name}' did not start {doing} within {timeout:g} s",
            "retry, or raise serving.timeout (it bounds the wait for the first token)",
        ) from exc
    except asyncio.CancelledError:
        generation.cancel()
        raise
    if isinstance(first, BaseException):
        raise first
    return generation, first
