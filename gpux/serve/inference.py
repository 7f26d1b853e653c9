"""What the HTTP routes and the gRPC service share: finding a served model, running requests
through its batchers, and choosing the outputs a request asked for.

Both protocols submit to the same :class:`~gpux.serve.batching.Batcher` per model and kind, so an
HTTP request and a gRPC request that arrive together share one model call. Errors are raised as
GPUX errors (or :class:`HTTPError` where a status needs more than its kind), and
:func:`error_status` gives each the status, message and hint that both protocols report: HTTP
as a JSON body (gpux/serve/app.py), gRPC as a status code and its details
(gpux/serve/grpc_service.py).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpux.errors import GPUXError, InputError, NotFoundError, UsageError
from gpux.serve import protocol, shared_stats, triton
from gpux.serve.batching import QueueFull
from gpux.serve.engine_client import EngineGone
from gpux.serve.guards import HTTPError
from gpux.serve.metrics import Metrics

if TYPE_CHECKING:
    from gpux.serve.app import ServedModel

# The shared engine stopped (gpux/serve/engine.py): the server is going down, try another.
STATUS_OF = {InputError: 400, UsageError: 400, NotFoundError: 404, EngineGone: 503}


class Inference:
    """The served models, by name, and the way into their batchers."""

    def __init__(
        self, models: list[ServedModel], metrics: Metrics, shared: Path | None = None
    ) -> None:
        """``shared``: the folder this process shares with the other processes of its server
        (gpux/serve/workers.py), if it is one of several."""
        self.models = models
        self.by_name = {m.name: m for m in models}
        self.metrics = metrics
        self.shared = shared

    async def statistics(
        self, name: str | None = None, version: str | None = None
    ) -> dict[str, Any]:
        """Triton's statistics of every model, or of one (a 404 if it is not served), for the
        whole server: with several processes, every worker's report and the shared engine's
        (which counts the batches) added up, this process's written first so that it is
        current (gpux/serve/shared_stats.py)."""
        answer = triton.statistics(self.models, name, version)
        if self.shared is None:
            return answer
        folder = self.shared / "stats"
        await asyncio.to_thread(shared_stats.write, folder, triton.statistics(self.models))
        every = shared_stats.merge(await asyncio.to_thread(shared_stats.read_all, folder))
        wanted = {(m["name"], m["version"]) for m in answer["model_stats"]}
        return {
            "model_stats": [m for m in every["model_stats"] if (m["name"], m["version"]) in wanted]
        }

    def find(self, name: str, version: str | None = None) -> ServedModel:
        """The model served as ``name`` (and ``version``, when given), else a 404."""
        served = self.by_name.get(name)
        if served is None or not served.answers_to(version):
            shown = f"{name}/versions/{version}" if version else name
            raise NotFoundError(
                f"model '{shown}' is not served here",
                f"served models: {', '.join(f'{m.name} ({m.version})' for m in self.models)}",
            )
        return served

    async def submit(
        self, served: ServedModel, kind: str, payload: Any, deadline: float | None = None
    ) -> Any:
        """``payload`` run by the model's ``kind`` batcher (``"tensors"`` or ``"items"``).
        ``deadline``: seconds the caller still waits (a gRPC deadline), when shorter than the
        model's timeout; past it the request is dropped if it has not started."""
        timeout = (
            served.limits.timeout if deadline is None else min(deadline, served.limits.timeout)
        )
        started = time.perf_counter()
        ok = False
        try:
            result = await served.batcher(kind, self.metrics).submit(payload, timeout)
            ok = True
            return result
        except QueueFull as exc:
            raise HTTPError(
                503,
                f"model '{served.name}' has {served.limits.max_queue} requests waiting",
                "retry after a moment, or raise serving.max_queue",
                retry_after=1,
            ) from exc
        except TimeoutError as exc:
            raise HTTPError(
                504,
                f"model '{served.name}' did not answer within {served.limits.timeout:g} s",
                "retry, send smaller requests, or raise serving.timeout",
            ) from exc
        finally:  # Triton's success/fail statistics (gpux/serve/statistics.py)
            served.statistics.answered(time.perf_counter() - started, ok)

    async def run_tensors(
        self, served: ServedModel, feed: dict[str, Any], deadline: float | None = None
    ) -> dict[str, Any]:
        """An ``infer`` request's checked tensors -> the model's outputs (its rows of a batch)."""
        gauge = self.metrics.in_flight_gauge(served.name)
        gauge.inc()
        try:
            outputs: dict[str, Any] = await self.submit(served, "tensors", feed, deadline)
        finally:
            gauge.dec()
        return outputs


def require_tensors(served: ServedModel) -> None:
    """A chain of models takes what its pipeline takes, a generative model prompts: ``infer``
    cannot feed either tensors."""
    if served.generative is not None or served.speech is not None:
        from gpux.serve.generation import generative_refusal

        raise generative_refusal("tensors", speech=served.speech is not None)
    components = getattr(served.model, "components", None)
    if components:
        raise InputError(
            f"'{served.name}' is a chain of models ({', '.join(components)}): it takes "
            "what its pipeline takes, not tensors",
            f"POST its inputs to /v1/models/{served.name}/predict, or serve one model of "
            "the chain on its own for its tensors",
        )


def chosen_outputs(
    served: ServedModel, request: protocol.InferRequest, outputs: dict[str, Any]
) -> dict[str, Any]:
    """The outputs ``request`` asked for (all when it named none), in its order, with the
    classification extension applied where it asked for it."""
    if request.outputs is not None:
        unknown = [n for n in request.outputs if n not in outputs]
        if unknown:
            raise InputError(
                f"unknown output '{unknown[0]}'",
                f"the model's outputs are: {', '.join(outputs)}",
            )
        outputs = {n: outputs[n] for n in request.outputs}
    else:
        outputs = dict(outputs)
    for name, top in request.classification.items():
        outputs[name] = protocol.classify(outputs[name], top, served.model.labels)
    return outputs


def error_status(exc: Exception) -> tuple[int, str, str | None]:
    """The HTTP status, message and hint of a failed request (500 for anything unexpected)."""
    if isinstance(exc, HTTPError):
        return exc.status, exc.message, exc.hint
    if isinstance(exc, GPUXError):
        status = next((s for t, s in STATUS_OF.items() if isinstance(exc, t)), 500)
        return status, exc.message, exc.hint
    return 500, f"internal error: {type(exc).__name__}", "see the server's log; please report it"
