"""Ray Serve integration: GPUX images as Ray Serve deployments (``gpux ray deploy``).

Ray places, scales and replaces replicas; each replica runs ``gpux serve``'s own app
(gpux/ray/replica.py), and gpux/ray/deploy.py turns a :class:`DeploySpec` into Ray applications.
Needs the ``ray`` extra: ``pip install 'gpux[ray]'``.
"""

from __future__ import annotations

from gpux.ray.deploy import Autoscaling, Deployed, DeploySpec, deploy, plan
from gpux.ray.replica import REPLICA_HEADER, REPLICA_ROUTE, ReplicaSettings

__all__ = [
    "REPLICA_HEADER",
    "REPLICA_ROUTE",
    "Autoscaling",
    "DeploySpec",
    "Deployed",
    "ReplicaSettings",
    "deploy",
    "plan",
]
