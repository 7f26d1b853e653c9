"""The HTTP server: Open Inference Protocol v2, the friendly ``predict`` API, health and metrics.

Inference runs on a thread pool per model, off the event loop, so health checks and metrics
answer while models are busy. Every GPUX error becomes a JSON body ``{"error", "hint"}`` with
the status that names its kind (400 bad input, 404 unknown model, 500 backend failure).
"""

from __future__ import annotations

import hmac
import json
import time
import zlib
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gpux import __version__
from gpux.api import Model
from gpux.errors import GPUXError, InputError, NotFoundError, UsageError
from gpux.pipeline.runner import Pipeline
from gpux.runtime.tensors import check_feed
from gpux.serve import protocol
from gpux.serve.batching import Batcher, QueueFull, Strategy
from gpux.serve.metrics import Metrics

MAX_BODY_BYTES = 64 << 20


@dataclass
class Limits:
    """Batching and queueing settings of one served model (GPUXfile ``serving:`` or flags)."""

    max_batch_size: int = 1
    max_batch_delay_ms: float = 0.0
    timeout: float = 30.0
    max_queue: int = 256


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

    def __post_init__(self) -> None:
        self.executor = ThreadPoolExecutor(self.threads, thread_name_prefix="gpux-infer")

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
                observe=lambda rows, waited: metrics.batch(self.name, rows, waited),
                concurrency=self.threads,
            )
        return self._batchers[kind]

    def metadata(self) -> dict[str, Any]:
        def tensor(t: Any) -> dict[str, Any]:
            shape = [d if isinstance(d, int) else -1 for d in (t.shape or [])]
            return {"name": t.name, "datatype": protocol.datatype(t.dtype), "shape": shape}

        return {
            "name": self.name,
            "versions": [self.version],
            "platform": f"onnxruntime_onnx ({self.model.placement.backend})",
            "inputs": [tensor(t) for t in self.model.inputs],
            "outputs": [tensor(t) for t in self.model.outputs],
        }


def inference_threads(backend: str) -> int:
    """Threads that run one model's calls. On the CPU one: ONNX Runtime already spreads each
    call over every core, and two calls would fight for them. On a GPU two, so one call's
    host-device copies overlap the other's kernels."""
    return 1 if backend == "cpu" else 2


class HTTPError(Exception):
    def __init__(
        self, status: int, message: str, hint: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint
        self.retry_after = retry_after


STATUS_OF = {InputError: 400, UsageError: 400, NotFoundError: 404}


def create_app(
    models: list[ServedModel],
    *,
    token: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Starlette:
    by_name = {m.name: m for m in models}
    metrics = Metrics()
    for served in models:
        metrics.loaded(served.name, served.model.placement.backend, served.load_seconds)

    def find(request: Request) -> ServedModel:
        name = request.path_params["model"]
        served = by_name.get(name)
        version = request.path_params.get("version")
        if served is None or (version is not None and version != served.version):
            shown = f"{name}/versions/{version}" if version else name
            raise HTTPError(
                404,
                f"model '{shown}' is not served here",
                f"served models: {', '.join(f'{m.name} ({m.version})' for m in models)}",
            )
        return served

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            raise HTTPError(413, f"the request body is over {max_body_bytes} bytes", "send less")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise HTTPError(
                    413, f"the request body is over {max_body_bytes} bytes", "send less"
                )
            chunks.append(chunk)
        body = b"".join(chunks)
        if request.headers.get("content-encoding", "").lower() == "gzip":
            # Bounded: a small gzip bomb must not expand into all of memory.
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                body = inflater.decompress(body, max_body_bytes + 1)
            except zlib.error as exc:
                raise HTTPError(
                    400, f"the body is not valid gzip: {exc}", "compress it again"
                ) from None
            if len(body) > max_body_bytes:
                raise HTTPError(
                    413, f"the request body is over {max_body_bytes} bytes", "send less"
                )
        return body

    async def submit(served: ServedModel, kind: str, payload: Any) -> Any:
        try:
            return await served.batcher(kind, metrics).submit(payload, served.limits.timeout)
        except QueueFull:
            raise HTTPError(
                503,
                f"model '{served.name}' has {served.limits.max_queue} requests waiting",
                "retry after a moment, or raise serving.max_queue",
                retry_after=1,
            ) from None
        except TimeoutError:
            raise HTTPError(
                504,
                f"model '{served.name}' did not answer within {served.limits.timeout:g} s",
                "retry, send smaller requests, or raise serving.timeout",
            ) from None

    def guarded(
        endpoint: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            model_name = request.path_params.get("model", "")
            started = time.perf_counter()
            status = 500
            try:
                if token is not None and endpoint not in ("health", "metrics"):
                    given = request.headers.get("authorization", "")
                    # Constant-time: the comparison must not leak how much of the token matched.
                    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                        raise HTTPError(
                            401, "missing or wrong bearer token", "send Authorization: Bearer TOKEN"
                        )
                response = await handler(request)
                status = response.status_code
                return response
            except HTTPError as exc:
                status = exc.status
                response = _error(exc.status, exc.message, exc.hint)
                if exc.retry_after is not None:
                    response.headers["Retry-After"] = str(exc.retry_after)
                return response
            except GPUXError as exc:
                status = next((s for t, s in STATUS_OF.items() if isinstance(exc, t)), 500)
                return _error(status, exc.message, exc.hint)
            finally:
                if model_name:
                    metrics.request(model_name, endpoint, status, time.perf_counter() - started)

        return wrapped

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(
            {
                "name": "gpux",
                "version": __version__,
                "extensions": ["binary_tensor_data", "classification"],
            }
        )

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": True})

    async def model_metadata(request: Request) -> Response:
        return JSONResponse(find(request).metadata())

    async def model_ready(request: Request) -> Response:
        served = find(request)
        return JSONResponse({"name": served.name, "ready": True})

    async def infer(request: Request) -> Response:
        served = find(request)
        body = await body_of(request)
        header = request.headers.get(protocol.HEADER_LENGTH)
        parsed = protocol.parse_request(body, protocol.parse_header_length(header))
        _check_datatypes(parsed.inputs, served.model.inputs)
        feed = check_feed(parsed.inputs, served.model.inputs)
        with metrics.in_flight(served.name):
            outputs = await submit(served, "tensors", feed)
        if parsed.outputs is not None:
            unknown = [n for n in parsed.outputs if n not in outputs]
            if unknown:
                raise InputError(
                    f"unknown output '{unknown[0]}'",
                    f"the model's outputs are: {', '.join(outputs)}",
                )
            outputs = {n: outputs[n] for n in parsed.outputs}
        for name, top in parsed.classification.items():
            outputs[name] = protocol.classify(outputs[name], top, served.model.labels)
        content, header_length = protocol.encode_response(
            served.name, served.version, parsed, outputs
        )
        headers = {}
        media = "application/json"
        if header_length is not None:
            headers["Inference-Header-Content-Length"] = str(header_length)
            media = "application/octet-stream"
        return _compressed(request, Response(content, media_type=media, headers=headers))

    async def predict(request: Request) -> Response:
        served = find(request) if "model" in request.path_params else _only(models)
        pipeline = served.pipeline
        assert pipeline is not None
        items, many = await _items(request, pipeline, body_of)
        started = time.perf_counter()
        raw = request.query_params.get("raw") in ("1", "true")
        with metrics.in_flight(served.name):
            results = await submit(served, "items", (items, raw))
        answer: dict[str, Any] = {
            "model": f"{served.name}:{served.version}",
            "backend": served.model.placement.backend,
            "latency_ms": round((time.perf_counter() - started) * 1e3, 3),
        }
        answer["results" if many else "result"] = results if many else results[0]
        return _compressed(request, JSONResponse(answer))

    async def metrics_endpoint(request: Request) -> Response:
        content, media = metrics.render()
        return Response(content, media_type=media)

    model = "/v2/models/{model}"
    version = "/v2/models/{model}/versions/{version}"
    routes = [
        Route("/v2", guarded("metadata", server_metadata)),
        Route("/v2/health/live", guarded("health", live)),
        Route("/v2/health/ready", guarded("health", ready)),
        Route(model, guarded("metadata", model_metadata)),
        Route(version, guarded("metadata", model_metadata)),
        Route(model + "/ready", guarded("health", model_ready)),
        Route(version + "/ready", guarded("health", model_ready)),
        Route(model + "/infer", guarded("infer", infer), methods=["POST"]),
        Route(version + "/infer", guarded("infer", infer), methods=["POST"]),
        Route("/v1/models/{model}/predict", guarded("predict", predict), methods=["POST"]),
        Route("/metrics", guarded("metrics", metrics_endpoint)),
    ]
    if len(models) == 1:
        routes.append(Route("/predict", guarded("predict", predict), methods=["POST"]))
    from gpux.serve.web import web_routes

    # The pages themselves need no token: the playground sends it with each predict call.
    routes.extend(web_routes(models, token_required=token is not None))
    from starlette.middleware import Middleware

    from gpux.serve.access_log import AccessLog

    return Starlette(routes=routes, middleware=[Middleware(AccessLog)])


def tensor_strategy(served: ServedModel) -> Strategy[dict[str, Any]]:
    """``infer`` requests: concatenated along the batch axis when the other dims agree."""
    import numpy as np

    def key(feed: dict[str, Any]) -> Hashable:
        if not served.batches_tensors:
            return object()  # unique: never joined
        return tuple(sorted((n, a.shape[1:], a.dtype.str) for n, a in feed.items()))

    def size(feed: dict[str, Any]) -> int:
        first = next(iter(feed.values()), None)
        return int(first.shape[0]) if served.batches_tensors and first is not None else 1

    def combine(feeds: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}

    def split(outputs: dict[str, Any], sizes: Sequence[int]) -> list[Any]:
        total, parts = sum(sizes), []
        offset = 0
        for rows in sizes:
            parts.append(
                {
                    n: v[offset : offset + rows] if v.ndim and v.shape[0] == total else v
                    for n, v in outputs.items()
                }
            )
            offset += rows
        return parts

    return Strategy(key, size, combine, served.model.run, split)


def item_strategy(served: ServedModel) -> Strategy[tuple[list[dict[str, Any]], bool]]:
    """``predict`` requests: their items joined into one pipeline run (text padded together)."""
    pipeline = served.pipeline
    assert pipeline is not None

    def combine(
        payloads: Sequence[tuple[list[dict[str, Any]], bool]],
    ) -> tuple[list[dict[str, Any]], bool]:
        return [item for items, _ in payloads for item in items], payloads[0][1]

    def run(payload: tuple[list[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return pipeline.run(payload[0], raw=payload[1])

    def split(results: list[dict[str, Any]], sizes: Sequence[int]) -> list[Any]:
        parts, offset = [], 0
        for rows in sizes:
            parts.append(results[offset : offset + rows])
            offset += rows
        return parts

    return Strategy(lambda p: p[1], lambda p: len(p[0]), combine, run, split)


def _check_datatypes(inputs: dict[str, Any], signatures: list[Any]) -> None:
    """The protocol names each tensor's datatype: a mismatch is the client's mistake (as in
    Triton), not something to convert silently."""
    for signature in signatures:
        array = inputs.get(signature.name)
        if array is None:
            continue
        sent = "string" if array.dtype.kind in "OUS" else str(array.dtype)
        if sent != signature.dtype:
            raise InputError(
                f"input '{signature.name}': datatype {protocol.datatype(sent)}, but the model "
                f"expects {protocol.datatype(signature.dtype)}",
                f"send {signature.name} as {protocol.datatype(signature.dtype)}",
            )


GZIP_MIN_BYTES = 4096


def _compressed(request: Request, response: Response) -> Response:
    """Inference answers in gzip for clients that accept it (JSON tensors shrink 3-5x).

    Only these (Starlette's GZipMiddleware also compressed the web pages, and Chromium then
    never fired the playground's load event in the browser tests). The header length of a
    binary answer counts uncompressed bytes, which clients read after inflating."""
    body = bytes(response.body)
    accepts = "gzip" in request.headers.get("accept-encoding", "").lower()
    if not accepts or len(body) < GZIP_MIN_BYTES:
        return response
    packed = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    response.body = packed.compress(body) + packed.flush()
    response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"
    response.headers["Content-Length"] = str(len(response.body))
    return response


def _only(models: list[ServedModel]) -> ServedModel:
    return models[0]


def _error(status: int, message: str, hint: str | None) -> Response:
    body: dict[str, Any] = {"error": message}
    if hint:
        body["hint"] = hint
    return JSONResponse(body, status_code=status)


async def _items(
    request: Request, pipeline: Pipeline, body_of: Callable[[Request], Awaitable[bytes]]
) -> tuple[list[dict[str, Any]], bool]:
    """The items of a predict request: JSON (an object, or a list for a batch) or multipart."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        item: dict[str, Any] = {}
        for key, value in form.multi_items():
            item[key] = await value.read() if hasattr(value, "read") else str(value)
        return [pipeline.item(item)], False
    body = await body_of(request)
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(
            f"the request body is not valid JSON: {exc}",
            'send {"' + '": ..., "'.join(pipeline.input_names) + '": ...}',
        ) from None
    if isinstance(value, list):
        if not value:
            raise InputError("the request holds an empty list", "send at least one item")
        return [pipeline.item(v) for v in value], True
    return [pipeline.item(value)], False
