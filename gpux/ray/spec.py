"""What a Ray Serve deployment of GPUX images is made of: plain, picklable settings (Ray sends
them to every replica), importable without Ray, so the command line checks them first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReplicaSettings:
    """What every replica of a deployment is given (picklable: Ray sends it to each replica).

    ``allowed_hosts`` and ``check_host`` are ``gpux serve``'s Host checks: on a loopback proxy
    the defaults refuse foreign host names, as ``gpux serve`` does."""

    backend: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    allowed_hosts: tuple[str, ...] = ()
    check_host: bool = True
    token: str | None = None


@dataclass(frozen=True)
class Autoscaling:
    """Ray Serve's autoscaling between ``min_replicas`` and ``max_replicas``, aiming at
    ``target_ongoing_requests`` requests in flight per replica."""

    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: float = 8.0

    def to_ray(self) -> dict[str, Any]:
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }


@dataclass(frozen=True)
class DeploySpec:
    """One ``gpux ray deploy``: which images, how many replicas, and what each one holds."""

    names: tuple[str, ...]
    replicas: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    autoscaling: Autoscaling | None = None
    max_ongoing_requests: int = 64
    """Requests Ray lets into one replica at once; GPUX's batcher groups those."""
    multiplex: bool = False
    max_models_per_replica: int = 3
    settings: ReplicaSettings = field(default_factory=ReplicaSettings)
    name: str | None = None
    """The application's name (multiplexed: default ``gpux``; else each image's name)."""
    route_prefix: str | None = None
    """Where Ray's proxy serves the application (one application only; default above)."""


@dataclass(frozen=True)
class Deployed:
    application: str
    route_prefix: str
    images: tuple[str, ...]
