"""What the server says about itself and its models in Triton's terms, as JSON-ready dicts.

One source for both protocols: the HTTP routes answer these dicts as they are, and the gRPC
service turns them into its messages with protobuf's JSON mapping (Triton's HTTP answers are
that mapping of its gRPC messages, so the field names are the same).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpux import __version__
from gpux.serve import protocol

if TYPE_CHECKING:
    from gpux.serve.app import ServedModel

EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "statistics",
    "model_repository",
]


def server_metadata() -> dict[str, Any]:
    """``GET /v2`` and ``ServerMetadata``: name, version and the protocol extensions served."""
    return {"name": "gpux", "version": __version__, "extensions": EXTENSIONS}


def model_config(served: ServedModel) -> dict[str, Any]:
    """The model as a Triton ``ModelConfig``: its tensors, batching and instances.

    As in Triton, a model that is batched (``max_batch_size`` > 0) lists its tensors' dims
    without the batch dimension; dims of unknown size are -1. GPUX versions are names
    (``1.0``), not the integers of Triton's version policy, so none is given.
    """
    batched = served.batches_tensors
    backend = served.model.placement.backend

    def tensors(signatures: list[Any]) -> list[dict[str, Any]]:
        entries = []
        for signature in signatures:
            dims = [d if isinstance(d, int) else -1 for d in (signature.shape or [])]
            kind = protocol.datatype(signature.dtype)
            entries.append(
                {
                    "name": signature.name,
                    "data_type": "TYPE_STRING" if kind == "BYTES" else f"TYPE_{kind}",
                    "dims": dims[1:] if batched else dims,
                }
            )
        return entries

    config: dict[str, Any] = {
        "name": served.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [int(served.triton_version)]}},
        "max_batch_size": served.limits.max_batch_size if batched else 0,
        "input": tensors(served.model.inputs),
        "output": tensors(served.model.outputs),
        "instance_group": [
            {"count": served.threads, "kind": "KIND_CPU" if backend == "cpu" else "KIND_GPU"}
        ],
    }
    if batched:
        config["dynamic_batching"] = {
            "max_queue_delay_microseconds": round(served.limits.max_batch_delay_ms * 1000)
        }
        if served.limits.preferred_batch_sizes:
            config["dynamic_batching"]["preferred_batch_size"] = list(
                served.limits.preferred_batch_sizes
            )
    return config


def repository_index(models: list[ServedModel]) -> list[dict[str, Any]]:
    """``POST /v2/repository/index`` and ``RepositoryIndex``: every served model, all loaded
    (a server serves the images it started with; there is no model control)."""
    return [
        {"name": m.name, "version": m.triton_version, "state": "READY" if m.warm else "LOADING"}
        for m in models
    ]


def statistics(
    models: list[ServedModel], name: str | None = None, version: str | None = None
) -> dict[str, Any]:
    """``GET /v2/models[/{m}[/versions/{v}]]/stats`` and ``ModelStatistics``: every model's
    statistics, or one model's (a name that is not served is a 404, as in Triton)."""
    from gpux.errors import NotFoundError

    chosen = [m for m in models if name is None or m.name == name]
    chosen = [m for m in chosen if m.answers_to(version)]
    if name is not None and not chosen:
        raise NotFoundError(
            f"model '{name}' is not served here",
            f"served models: {', '.join(m.name for m in models)}",
        )
    return {"model_stats": [_with_instances(m) for m in chosen]}


def _with_instances(served: ServedModel) -> dict[str, Any]:
    """Triton's entry, plus ``instances`` for a model on several devices (HTTP only: gRPC's
    ``ModelStatistics`` has no field for it, and drops it): each instance's device, calls,
    rows, busy time and calls in flight, and the instances that failed to start."""
    from gpux.runtime.instances import InstancePool

    report = served.statistics.report()
    pool = getattr(served.model, "backend", None)
    if isinstance(pool, InstancePool):
        report["instances"] = pool.stats()
    return report
