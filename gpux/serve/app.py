"""The HTTP server: Open Inference Protocol v2, the friendly ``predict`` API, health and metrics.

Inference runs on a thread pool per model, off the event loop, so health checks and metrics
answer while models are busy; so do parsing large bodies and encoding large answers
(gpux/serve/bodies.py). Every error becomes a JSON body ``{"error", "hint"}`` with the status
that names its kind (400 bad input, 404 unknown model or route, 500 backend failure). What is
refused before routing (host, origin, token, body size and time) is in gpux/serve/guards.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gpux import env
from gpux.api import Model
from gpux.errors import GPUXError
from gpux.pipeline.outputs import result_to_json
from gpux.pipeline.runner import Pipeline
from gpux.runtime import host_memory
from gpux.runtime.host_memory import HostBuffers
from gpux.runtime.tensors import check_feed
from gpux.serve import bodies, json_codec, protocol, shared_stats, triton
from gpux.serve.access_log import AccessLog
from gpux.serve.batching import Batcher, Strategy
from gpux.serve.bodies import compressed, off_loop, predict_items, read_body
from gpux.serve.engine_client import RemoteBackend, engine_clients
from gpux.serve.generation import generative_refusal
from gpux.serve.guards import (
    Guards,
    HTTPError,
    RequestChecks,
    RequestPolicy,
    error_response,
    http_error_response,
)
from gpux.serve.infer_route import InferRoute, as_response
from gpux.serve.inference import STATUS_OF, Inference
from gpux.serve.metrics import Metrics
from gpux.serve.openai_api import speaks_openai
from gpux.serve.parsing import ParseProcesses
from gpux.serve.statistics import Statistics
from gpux.serve.warmup import warm_served
from gpux.serve.workers import shared_folder

if TYPE_CHECKING:
    from gpux.runtime.generative import GenerativeModel
    from gpux.runtime.speech import SpeechModel
    from gpux.serve.grpc_service import GRPCOptions

__all__ = ["HTTPError", "Limits", "RequestPolicy", "ServedModel", "create_app", "inference_threads"]


@dataclass
class Limits:
    """Batching and queueing settings of one served model (GPUXfile ``serving:`` or flags)."""

    max_batch_size: int = 1
    max_batch_delay_ms: float = 0.0
    timeout: float = 30.0
    max_queue: int = 256
    preferred_batch_sizes: tuple[int, ...] = ()
    max_tokens: int | None = None
    """Most tokens one OpenAI request may generate (None: the model's context length)."""


@dataclass
class ServedModel:
    name: str
    version: str
    model: Model
    load_seconds: float
    pipeline: Pipeline | None = None
    limits: Limits = field(default_factory=Limits)
    threads: int = 1
    """Model calls in flight at once, each on its own thread (see ``inference_threads``)."""
    _batchers: dict[str, Batcher[Any]] = field(default_factory=dict)
    warm: bool = False
    """Every preferred batch size has run once (:func:`gpux.serve.warmup.warm_up`): until then
    the model is not reported ready (requests that come anyway are served)."""
    warm_error: str | None = None
    generative: GenerativeModel | None = None
    """A generative image's engine (served on the OpenAI routes, gpux/serve/openai_api.py);
    ``model`` then only carries its placement, and the tensor routes refuse it."""
    speech: SpeechModel | None = None
    """A speech image's engine (served on ``/v1/audio/transcriptions``), as ``generative``."""
    remote: bool = False
    """The model runs in the shared engine (gpux/serve/engine.py), which forms and counts the
    batches that run; this process's batcher only passes calls on."""

    def __post_init__(self) -> None:
        self.executor = ThreadPoolExecutor(self.threads, thread_name_prefix="gpux-infer")
        self.statistics = Statistics(self.name, self.triton_version)

    @property
    def triton_version(self) -> str:
        """The version the protocols report. Triton's versions are whole numbers and its
        tools parse them as such (perf_analyzer stops on ``latest``); a GPUX tag is a name, so
        a tag that is not a number is reported as version 1. Routes answer to both."""
        return self.version if self.version.isdigit() else "1"

    def answers_to(self, version: str | None) -> bool:
        return version in (None, "", self.version, self.triton_version)

    @cached_property
    def host_buffers(self) -> HostBuffers:
        """Where batches are joined: page-locked buffers for a model on a CUDA device in this
        process (gpux/runtime/host_memory.py), plain arrays otherwise (and for a model in the
        shared engine, whose process joins the batches that run)."""
        if self.remote or not isinstance(self.model, Model):
            # A front-end joins its own requests before passing them to the engine: plain
            # buffers (page-locking would open a CUDA context in this process).
            return HostBuffers(limit_bytes=host_memory.CPU_LIMIT_BYTES)
        return host_memory.for_placement(self.model.placement)

    @property
    def batches_tensors(self) -> bool:
        """Only a model whose every input has a symbolic first (batch) dimension is batched."""
        return self.limits.max_batch_size > 1 and all(
            t.shape and not isinstance(t.shape[0], int) for t in self.model.inputs
        )

    def batcher(self, kind: str, metrics: Metrics) -> Batcher[Any]:
        """The tensor (``infer``) or item (``predict``) batcher, made in the running loop."""
        if kind not in self._batchers:
            strategy = tensor_strategy(self) if kind == "tensors" else item_strategy(self)
            batching = self.batches_tensors if kind == "tensors" else self.limits.max_batch_size > 1
            self._batchers[kind] = Batcher(
                strategy,
                self.executor,
                max_batch_size=self.limits.max_batch_size if batching else 1,
                max_delay=self.limits.max_batch_delay_ms / 1e3,
                max_queue=self.limits.max_queue,
                observe=None
                if self.remote
                else lambda rows, waited: metrics.batch(self.name, rows, waited),
                concurrency=self.threads,
                preferred_sizes=self.limits.preferred_batch_sizes if batching else (),
                padded=lambda rows: metrics.padding(self.name, rows),
                # In the shared engine's front-ends a "batch" is one call to the engine, which
                # counts the batches the model really runs (gpux/serve/engine.py).
                timed=None if self.remote else self.statistics.batch,
            )
        return self._batchers[kind]

    def metadata(self) -> dict[str, Any]:
        def tensor(t: Any) -> dict[str, Any]:
            shape = [d if isinstance(d, int) else -1 for d in (t.shape or [])]
            return {"name": t.name, "datatype": protocol.datatype(t.dtype), "shape": shape}

        return {
            "name": self.name,
            "versions": [self.triton_version],
            "platform": f"onnxruntime_onnx ({self.model.placement.backend})",
            "inputs": [tensor(t) for t in self.model.inputs],
            "outputs": [tensor(t) for t in self.model.outputs],
        }


def _count_instances(served: ServedModel, metrics: Metrics) -> None:
    """Per-instance series for a model on several devices: each instance's calls, rows and busy
    time (every instance appears at 0 from the start, a failed one never)."""
    from gpux.runtime.instances import InstancePool

    pool = served.model.backend if isinstance(served.model, Model) else None
    if not isinstance(pool, InstancePool):
        return
    pool.reset_counts()  # the loader's warm-up calls are not the server's
    for index, instance in enumerate(pool.instances):
        metrics.instance_calls.labels(served.name, str(index), instance.label)
    name = served.name
    pool.on_call = lambda index, device, rows, seconds: metrics.instance_call(
        name, index, device, rows, seconds
    )


def inference_threads(backend: str, shared_engine: bool = False) -> int:
    """Threads that run one model's calls. On the CPU one: ONNX Runtime already spreads each
    call over every core, and two calls would fight for them. On a GPU two, so one call's
    host-device copies overlap the other's kernels; in the shared engine, which runs the calls
    of every front-end, four: on an H100 (8 front-ends, c=32, CUDA graphs) 4 against 2 gave
    ResNet-50 2,990 against 2,891 req/s and BERT-base 2,857 against 2,137 (docs/benchmarks.md),
    and 6 no more than 4 (other GPU backends keep two: unmeasured). ``GPUX_INFERENCE_THREADS``
    sets it."""
    configured = env.inference_threads()
    if configured:
        return configured
    if backend == "cpu":
        return 1
    return 4 if shared_engine and backend == "cuda" else 2


# Needs no token: liveness, readiness (also per model), metrics and the web pages.
PUBLIC = re.compile(
    r"/v2/health/(live|ready)|/v2/models/[^/]+(/versions/[^/]+)?/ready|/metrics|/|/docs|/openapi\.json"
)


def create_app(
    models: list[ServedModel],
    *,
    token: str | None = None,
    policy: RequestPolicy | None = None,
    parse_processes: int | None = None,
    grpc: GRPCOptions | None = None,
) -> Starlette:
    """The server's app. ``parse_processes``: processes for very large JSON bodies
    (gpux/serve/parsing.py; default ``GPUX_PARSE_PROCESSES``, 1). ``grpc``: also serve the
    protocol over gRPC there (gpux/serve/grpc_service.py), started before the app answers."""
    policy = policy or RequestPolicy()
    parser = ParseProcesses(env.parse_processes() if parse_processes is None else parse_processes)
    by_name = {m.name: m for m in models}
    metrics = Metrics(by_name)
    for served in models:
        metrics.loaded(served.name, served.model.placement.backend, served.load_seconds)
        _count_instances(served, metrics)

    shared = shared_folder()
    core = Inference(models, metrics, shared)  # shared with the gRPC service
    checks = RequestChecks(
        policy=policy, token=token, public=lambda p: bool(PUBLIC.fullmatch(p)), openai=speaks_openai
    )
    infer_route = InferRoute(core, parser, policy, checks)

    def find(request: Request) -> ServedModel:
        return core.find(request.path_params["model"], request.path_params.get("version"))

    async def submit(served: ServedModel, kind: str, payload: Any) -> Any:
        return await core.submit(served, kind, payload)

    def guarded(
        endpoint: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Errors as JSON with their status, and a metric per request (the token was checked
        before routing, by Guards)."""

        async def wrapped(request: Request) -> Response:
            model_name = request.path_params.get("model", "")
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status_code
                return response
            except HTTPError as exc:
                status = exc.status
                return http_error_response(exc)
            except GPUXError as exc:
                status = next((s for t, s in STATUS_OF.items() if isinstance(exc, t)), 500)
                return error_response(status, exc.message, exc.hint)
            finally:
                if model_name:  # unserved names count under one label (gpux/serve/metrics.py)
                    metrics.request(model_name, endpoint, status, time.perf_counter() - started)

        return wrapped

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(triton.server_metadata())

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        # 503 until every model is warm (gpux/serve/warmup.py): probes treat non-2xx as not ready.
        waiting = {m.name: m.warm_error or "warming up" for m in models if not m.warm}
        if waiting:
            return JSONResponse({"ready": False, "waiting": waiting}, status_code=503)
        return JSONResponse({"ready": True})

    async def model_metadata(request: Request) -> Response:
        return JSONResponse(find(request).metadata())

    async def model_ready(request: Request) -> Response:
        served = find(request)
        if not served.warm:
            reason = served.warm_error or "warming up"
            answer = {"name": served.name, "ready": False, "reason": reason}
            return JSONResponse(answer, status_code=503)
        return JSONResponse({"name": served.name, "ready": True})

    async def model_config(request: Request) -> Response:
        return JSONResponse(triton.model_config(find(request)))

    def all_statistics() -> dict[str, Any]:
        return triton.statistics(models)

    async def model_statistics(request: Request) -> Response:
        name = request.path_params.get("model")
        version = request.path_params.get("version")
        return JSONResponse(await core.statistics(name, version))  # a 404 for a model not served

    async def repository_index(request: Request) -> Response:
        await read_body(request, policy)  # its filters ("ready") change nothing: all are loaded
        return JSONResponse(triton.repository_index(models))

    async def infer(request: Request) -> Response:
        # Only requests that take the middleware stack come here (gpux/serve/infer_route.py).
        raw_headers, content = await infer_route.answer(
            find(request),
            content_type=request.headers.get("content-type", ""),
            read=lambda: read_body(request, policy),
            header_length=request.headers.get(protocol.HEADER_LENGTH),
            accept_encoding=request.headers.get("accept-encoding", ""),
        )
        return as_response(raw_headers, content)

    async def predict(request: Request) -> Response:
        served = find(request) if "model" in request.path_params else _only(models)
        if served.generative is not None or served.speech is not None:
            raise generative_refusal("pipeline inputs", speech=served.speech is not None)
        pipeline = served.pipeline
        assert pipeline is not None
        items, many = await predict_items(request, pipeline, policy)
        started = time.perf_counter()
        # ?raw=1 adds the output tensors, summarised; ?raw=full adds them whole.
        shown = request.query_params.get("raw", "").lower()
        raw, full = shown in ("1", "true", "full"), shown == "full"
        with metrics.in_flight(served.name):
            results = await submit(served, "items", (items, raw))
        answer: dict[str, Any] = {
            "model": f"{served.name}:{served.version}",
            "backend": served.model.placement.backend,
            "latency_ms": round((time.perf_counter() - started) * 1e3, 3),
        }
        placements = getattr(served.model, "placements", None)
        if placements:  # a chain: where each of its models runs
            answer["backends"] = {k: p.backend for k, p in placements.items()}

        def encode() -> Response:
            shown = [result_to_json(r, full) for r in results]
            answer["results" if many else "result"] = shown if many else shown[0]
            return _json_answer(request, answer, policy)

        # Raw tensors or a batch can make a large answer: encode it off the loop.
        size = bodies.OFF_LOOP_BYTES if raw or len(results) > 16 else 0
        return await off_loop(size, encode)

    async def metrics_endpoint(request: Request) -> Response:
        content, media = metrics.render()
        return Response(content, media_type=media)

    model = "/v2/models/{model}"
    version = "/v2/models/{model}/versions/{version}"
    routes = [
        Route("/v2", guarded("metadata", server_metadata)),
        Route("/v2/health/live", guarded("health", live)),
        Route("/v2/health/ready", guarded("health", ready)),
        Route("/v2/models/stats", guarded("metadata", model_statistics)),  # before {model}
        Route(model, guarded("metadata", model_metadata)),
        Route(version, guarded("metadata", model_metadata)),
        Route(model + "/ready", guarded("health", model_ready)),
        Route(version + "/ready", guarded("health", model_ready)),
        Route(model + "/config", guarded("metadata", model_config)),
        Route(version + "/config", guarded("metadata", model_config)),
        Route(model + "/stats", guarded("metadata", model_statistics)),
        Route(version + "/stats", guarded("metadata", model_statistics)),
        Route("/v2/repository/index", guarded("metadata", repository_index), methods=["POST"]),
        Route(model + "/infer", guarded("infer", infer), methods=["POST"]),
        Route(version + "/infer", guarded("infer", infer), methods=["POST"]),
        Route("/v1/models/{model}/predict", guarded("predict", predict), methods=["POST"]),
        Route("/metrics", guarded("metrics", metrics_endpoint)),
    ]
    if len(models) == 1:
        routes.append(Route("/predict", guarded("predict", predict), methods=["POST"]))
    from gpux.serve.openai_api import openai_routes
    from gpux.serve.web import web_routes

    routes.extend(openai_routes(models, core, metrics, policy))

    # The pages themselves need no token: the playground sends it with each predict call.
    routes.extend(web_routes(models, token_required=token is not None))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # uvicorn listens only once this has started: HTTP readiness means gRPC is up too.
        for client in engine_clients(models):  # the shared engine's calls go through this loop
            await client.attach()
        warming = [asyncio.create_task(warm_served(m)) for m in models]
        if shared is not None:
            writer = shared_stats.keep_writing(shared / "stats", all_statistics)
            warming.append(asyncio.create_task(writer))
        grpc_server = None
        if grpc is not None:
            from gpux.serve import grpc_service

            grpc_server = await grpc_service.start(
                grpc, core, token=token, max_message_bytes=policy.max_body_bytes
            )
        try:
            yield
        finally:
            for task in warming:
                task.cancel()
            if grpc_server is not None:  # requests in flight get as long as a model may take
                await grpc_server.stop(grace=max(m.limits.timeout for m in models))
            parser.close()

    return GPUXApp(
        infer_route,
        routes=routes,
        middleware=_middleware(policy, checks),
        exception_handlers={StarletteHTTPException: _routing_error, Exception: _server_error},
        lifespan=lifespan,
    )


class GPUXApp(Starlette):
    """Starlette, with the hot ``infer`` route answered before the middleware stack
    (gpux/serve/infer_route.py) for the requests it takes."""

    def __init__(self, infer_route: InferRoute, **options: Any) -> None:
        super().__init__(**options)
        self.infer_route = infer_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.infer_route.takes(scope)
        if found is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await self.infer_route(scope, receive, send, found)


def _middleware(policy: RequestPolicy, checks: RequestChecks) -> list[Middleware]:
    """Outermost first: the access log sees every answer, refusals included; CORS (only when
    origins are given) answers preflights and adds its headers to refusals too."""
    stack = [Middleware(AccessLog)]
    if policy.cors_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(policy.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=[
                    "Authorization",
                    "Content-Type",
                    "Content-Encoding",
                    "Inference-Header-Content-Length",
                ],
                expose_headers=["Inference-Header-Content-Length", "Retry-After"],
            )
        )
    stack.append(Middleware(Guards, checks=checks))
    return stack


async def _routing_error(request: Request, exc: Exception) -> Response:
    """No route (404) or a wrong method (405), as JSON like every other error: tritonclient
    and scripts parse the body of any answer."""
    assert isinstance(exc, StarletteHTTPException)
    path = request.url.path
    openai = speaks_openai(path) or path.startswith("/v1/chat/")
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return error_response(
            405,
            f"{request.method} is not allowed on {path}",
            f"use {allowed}" if allowed else "see /docs for each endpoint's method",
            headers=exc.headers,
            openai=openai,
        )
    if exc.status_code == 404:
        return error_response(
            404, f"no endpoint {path}", "see /docs for the endpoints", openai=openai
        )
    return error_response(
        exc.status_code, str(exc.detail), None, headers=exc.headers, openai=openai
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(
        500, f"internal error: {type(exc).__name__}", "see the server's log; please report it"
    )


def _json_answer(request: Request, answer: dict[str, Any], policy: RequestPolicy) -> Response:
    # json_codec: pydantic-core, 9x json.dumps for a MiniLM answer (gpux/serve/json_codec.py).
    response = Response(json_codec.dumps(answer), media_type="application/json")
    return compressed(request, response, policy.gzip_min_bytes)


def tensor_strategy(served: ServedModel) -> Strategy[dict[str, Any]]:
    """``infer`` requests: concatenated along the batch axis when the other dims agree."""

    def key(feed: dict[str, Any]) -> Hashable:
        if not served.batches_tensors:
            return object()  # unique: never joined
        return tuple(sorted((n, a.shape[1:], a.dtype.str) for n, a in feed.items()))

    def size(feed: dict[str, Any]) -> int:
        first = next(iter(feed.values()), None)
        return int(first.shape[0]) if served.batches_tensors and first is not None else 1

    buffers = served.host_buffers

    def combine(feeds: Sequence[dict[str, Any]], rows: int) -> dict[str, Any]:
        """Joined and padded (``rows`` copies of the last row: real data, no NaN from zeros
        through a softmax) in one copy, into buffers that are page-locked on CUDA."""
        return {name: buffers.join([f[name] for f in feeds], rows) for name in feeds[0]}

    def release(feed: dict[str, Any]) -> None:
        for array in feed.values():
            buffers.give(array)

    axes = {s.name: s.batch_axis for s in served.model.outputs}

    def split(outputs: dict[str, Any], sizes: Sequence[int]) -> list[Any]:
        """Each request's rows, along each output's batch axis (an output without one, or
        whose axis does not hold the whole batch, goes to every request as it is)."""
        total, parts = sum(sizes), []
        offset = 0
        for rows in sizes:
            part = {}
            for name, value in outputs.items():
                axis = axes.get(name, 0)
                if axis is None or value.ndim <= axis or value.shape[axis] != total:
                    part[name] = value
                    continue
                rows_of = [slice(None)] * value.ndim  # a view, as for axis 0 before
                rows_of[axis] = slice(offset, offset + rows)
                part[name] = value[tuple(rows_of)]
            parts.append(part)
            offset += rows
        return parts

    return Strategy(key, size, combine, served.model.run, split, release, _start_of(served))


def _start_of(
    served: ServedModel,
) -> Callable[[dict[str, Any], int], asyncio.Future[Any]] | None:
    """A model of the shared engine is called from the loop, without a thread (its answer
    comes back on the loop: gpux/serve/engine_client.py); a chain's models run one after
    another on a thread, as everywhere else."""
    model = served.model
    if not served.remote or not isinstance(model, Model):
        return None
    backend = model.backend
    if not isinstance(backend, RemoteBackend):
        return None
    inputs = model.inputs
    return lambda feed, requests: backend.start(check_feed(feed, inputs), requests)


def item_strategy(served: ServedModel) -> Strategy[tuple[list[dict[str, Any]], bool]]:
    """``predict`` requests: their items joined into one pipeline run (text padded together)."""
    pipeline = served.pipeline
    assert pipeline is not None

    def combine(
        payloads: Sequence[tuple[list[dict[str, Any]], bool]], rows: int
    ) -> tuple[list[dict[str, Any]], bool]:
        items = [item for items, _ in payloads for item in items]
        return [*items, *[items[-1]] * rows], payloads[0][1]

    def run(payload: tuple[list[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return pipeline.run(payload[0], raw=payload[1])

    def split(results: list[dict[str, Any]], sizes: Sequence[int]) -> list[Any]:
        parts, offset = [], 0
        for rows in sizes:
            parts.append(results[offset : offset + rows])
            offset += rows
        return parts

    return Strategy(lambda p: p[1], lambda p: len(p[0]), combine, run, split)


def _only(models: list[ServedModel]) -> ServedModel:
    return models[0]
