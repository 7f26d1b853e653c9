"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), for
``gpux serve --grpc-port``.

It runs on the HTTP server's event loop, started and stopped by the app's lifespan
(gpux/serve/app.py), so it serves the same models through the same batchers: a gRPC request
and an HTTP request that arrive together share one model call. The messages and the service
table are the ones Triton's client ships (``tritonclient.grpc``), generated from the protocol's
``grpc_service.proto``; methods not served here (streaming, shared memory, model control)
answer UNIMPLEMENTED.

Refusals are those of the HTTP side with the same message and hint, as a status code and its
details: 400 -> INVALID_ARGUMENT, 404 -> NOT_FOUND, 503 (queue full) -> UNAVAILABLE, 504 ->
DEADLINE_EXCEEDED, 500 -> INTERNAL. With a token, every method but the health ones (live,
ready, model ready) needs ``authorization: Bearer TOKEN`` metadata. Messages are bounded by
``--max-body-mb`` (a larger one is refused by gRPC itself with RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format  # type: ignore[import-untyped]
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from gpux.errors import UsageError
from gpux.serve import grpc_tensors, protocol, triton
from gpux.serve.access_log import logger as access_logger
from gpux.serve.bodies import off_loop
from gpux.serve.guards import token_matches
from gpux.serve.inference import Inference, chosen_outputs, error_status, require_tensors

Context = grpc.aio.ServicerContext[Any, Any]
Method = Callable[["Service", Any, Context], Awaitable[Any]]

SERVICE = "inference.GRPCInferenceService"
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
MAX_MESSAGE_BYTES = (1 << 31) - 1  # gRPC's own ceiling (an int32)
_log = logging.getLogger("uvicorn.error")  # beside uvicorn's own lines in the server's log


@dataclass(frozen=True)
class GRPCOptions:
    """Where the gRPC service listens: ``--host``, ``--grpc-port``, and TLS from PEM files."""

    port: int
    host: str = "127.0.0.1"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    shared_port: bool = False
    """Several worker processes listen on the port together (gpux/serve/workers.py)."""

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def details(message: str, hint: str | None) -> str:
    """A refusal's one line, as the HTTP side's ``{"error", "hint"}`` would read."""
    return f"{message} (hint: {hint})" if hint else message


def rpc(endpoint: str, *, public: bool = False) -> Callable[[Method], Method]:
    """A service method with the token check, errors as status codes, a metric (under
    ``endpoint``, with the HTTP status of the outcome) and an access log line."""

    def wrap(method: Method) -> Method:
        async def handler(self: Service, request: Any, context: Context) -> Any:
            started, status = time.perf_counter(), 500
            try:
                if not public and not self.authorized(context):
                    status = 401
                    await context.abort(
                        grpc.StatusCode.UNAUTHENTICATED,
                        details(
                            "missing or wrong bearer token",
                            "send the metadata 'authorization: Bearer TOKEN'",
                        ),
                    )
                try:
                    response = await method(self, request, context)
                except Exception as exc:
                    status, message, hint = error_status(exc)
                    if status >= 500 and status not in CODES:
                        _log.error("gRPC %s failed", method.__name__, exc_info=exc)
                    code = CODES.get(status, grpc.StatusCode.INTERNAL)
                    await context.abort(code, details(message, hint))
                status = 200
                return response
            finally:
                self.record(method.__name__, request, context, endpoint, status, started)

        handler.__name__ = method.__name__
        return handler

    return wrap


class Service(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, core: Inference, token: str | None) -> None:
        self.core, self.token = core, token

    def authorized(self, context: Context) -> bool:
        if self.token is None:
            return True
        metadata = dict(context.invocation_metadata() or ())
        given = metadata.get("authorization", "")
        return isinstance(given, str) and token_matches(given, self.token)

    def record(
        self, method: str, request: Any, context: Context, endpoint: str, status: int, start: float
    ) -> None:
        seconds = time.perf_counter() - start
        model = getattr(request, "model_name", None) or getattr(request, "name", "")
        if model:  # as on HTTP: per-model requests only; unserved names under one label
            self.core.metrics.request(model, endpoint, status, seconds)
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "client": context.peer(),
            "method": "GRPC",
            "path": f"/{SERVICE}/{method}",
            "status": status,
            "ms": round(seconds * 1e3, 3),
        }
        access_logger.info(json.dumps(entry, separators=(",", ":")))

    @rpc("grpc_health", public=True)
    async def ServerLive(self, request: Any, context: Context) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    @rpc("grpc_health", public=True)
    async def ServerReady(self, request: Any, context: Context) -> Any:
        return service_pb2.ServerReadyResponse(ready=all(m.warm for m in self.core.models))

    @rpc("grpc_health", public=True)
    async def ModelReady(self, request: Any, context: Context) -> Any:
        # As Triton: a model that is not served is not ready (no error).
        served = self.core.by_name.get(request.name)
        ready = served is not None and served.answers_to(request.version) and served.warm
        return service_pb2.ModelReadyResponse(ready=ready)

    @rpc("grpc_metadata")
    async def ServerMetadata(self, request: Any, context: Context) -> Any:
        return json_format.ParseDict(triton.server_metadata(), service_pb2.ServerMetadataResponse())

    @rpc("grpc_metadata")
    async def ModelMetadata(self, request: Any, context: Context) -> Any:
        served = self.core.find(request.name, request.version or None)
        return json_format.ParseDict(served.metadata(), service_pb2.ModelMetadataResponse())

    @rpc("grpc_metadata")
    async def ModelConfig(self, request: Any, context: Context) -> Any:
        served = self.core.find(request.name, request.version or None)
        config = json_format.ParseDict(triton.model_config(served), model_config_pb2.ModelConfig())
        return service_pb2.ModelConfigResponse(config=config)

    @rpc("grpc_metadata")
    async def ModelStatistics(self, request: Any, context: Context) -> Any:
        stats = await self.core.statistics(request.name or None, request.version or None)
        # ``instances`` (several devices) is GPUX's, beyond Triton's message: HTTP has it.
        response = service_pb2.ModelStatisticsResponse()
        return json_format.ParseDict(stats, response, ignore_unknown_fields=True)

    @rpc("grpc_metadata")
    async def RepositoryIndex(self, request: Any, context: Context) -> Any:
        models = {"models": triton.repository_index(self.core.models)}
        return json_format.ParseDict(models, service_pb2.RepositoryIndexResponse())

    @rpc("grpc_infer")
    async def ModelInfer(self, request: Any, context: Context) -> Any:
        served = self.core.find(request.model_name, request.model_version or None)
        require_tensors(served)
        raw = list(request.raw_input_contents)  # read once: each read copies the bytes
        parsed, feed = await off_loop(_decode_work(request, raw), _decode, request, raw, served)
        outputs = await self.core.run_tensors(served, feed, context.time_remaining())
        work = _encode_work(outputs, parsed)
        return await off_loop(work, _encode, served, parsed, outputs)


# Raw tensor bytes are copied (into numpy, into the answer) at memory speed, and the hop to a
# pool thread costs about as much as copying 256 KB (the thread then waits for the interpreter
# lock anyway): for ResNet-50's 602 KB images the hop was 13% of a gRPC front-end's busy time
# and 2.5-4 ms of each request's 6.7-6.9 ms in the server (the 2-core machine). As in an HTTP
# answer (protocol.encode_cost), raw numbers count at 1/BINARY_WORK_DIVISOR of their bytes;
# typed contents and strings, converted one value at a time, in full.


def _decode_work(request: Any, raw: list[bytes]) -> int:
    """Bytes of work that decoding ``request``, whose ``raw_input_contents`` are ``raw``, takes
    (for :func:`off_loop`). Typed contents count at the message's size: a request with raw
    contents may have none (decoding refuses it at once), and sizing it would cost as much as
    a copy of its raw bytes (protobuf's upb: ``ByteSize`` 30 us, each read of a 602 KB part
    20 us, against 16 us to parse the whole message)."""
    if not raw:
        return int(request.ByteSize())
    sizes = [len(part) for part in raw]
    strings = sum(
        size
        for size, tensor in zip(sizes, request.inputs, strict=False)
        if tensor.datatype.upper() == "BYTES"
    )
    return strings + (sum(sizes) - strings) // protocol.BINARY_WORK_DIVISOR


def _encode_work(outputs: dict[str, Any], request: protocol.InferRequest | None = None) -> int:
    """Bytes of work that encoding ``outputs`` takes: HTTP's estimate for an answer whose every
    output is binary, as gRPC sends them all as raw bytes."""
    request = request or protocol.InferRequest(inputs={})
    return protocol.encode_cost(dataclasses.replace(request, all_binary=True), outputs)


def _decode(request: Any, raw: list[bytes], served: Any) -> tuple[Any, dict[str, Any]]:
    from gpux.serve import protocol

    parsed = grpc_tensors.infer_request(request, raw)
    return parsed, protocol.checked_feed(parsed, served.model.inputs)


def _encode(served: Any, parsed: Any, outputs: dict[str, Any]) -> Any:
    chosen = chosen_outputs(served, parsed, outputs)
    return grpc_tensors.infer_response(served.name, served.triton_version, parsed, chosen)


def credentials(options: GRPCOptions) -> grpc.ServerCredentials | None:
    """The TLS credentials of ``options`` (None without TLS), tried on a throwaway server so
    that a file that is not a certificate, or a key that does not match it, fails here
    (``gpux serve`` checks before loading anything) rather than when the server starts."""
    if options.tls_cert is None or options.tls_key is None:
        return None
    try:
        pair = (options.tls_key.read_bytes(), options.tls_cert.read_bytes())
        made = grpc.ssl_server_credentials([pair])
        trial = grpc.server(ThreadPoolExecutor(1))
        try:
            trial.add_secure_port(f"{'[::1]' if ':' in options.host else '127.0.0.1'}:0", made)
        finally:
            trial.stop(None)
    except (RuntimeError, OSError, ValueError) as exc:
        raise UsageError(
            f"--grpc-tls-cert {options.tls_cert} and --grpc-tls-key {options.tls_key} are not a "
            f"usable certificate and private key ({exc})",
            "give the PEM files of a certificate and of its own private key",
        ) from exc
    return made


async def start(
    options: GRPCOptions, core: Inference, *, token: str | None, max_message_bytes: int
) -> grpc.aio.Server:
    """The service, listening on ``options.address`` (TLS when a certificate is given), in the
    running event loop."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", min(max_message_bytes, MAX_MESSAGE_BYTES)),
            ("grpc.max_send_message_length", -1),
            # A port another server holds is refused, not shared; this server's own workers
            # share theirs (the command checked it was free first).
            ("grpc.so_reuseport", 1 if options.shared_port else 0),
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Service(core, token), server)
    tls = credentials(options)
    try:
        if tls is not None:
            server.add_secure_port(options.address, tls)
        else:
            server.add_insecure_port(options.address)
    except RuntimeError as exc:
        raise UsageError(
            f"cannot listen for gRPC on {options.address}: {exc}", "choose another --grpc-port"
        ) from exc
    await server.start()
    return server
