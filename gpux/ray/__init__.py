"""Ray Serve integration: GPUX images as Ray Serve deployments (``gpux ray deploy``).

Ray places, scales and replaces replicas; each replica runs ``gpux serve``'s own app
(gpux/ray/replica.py), and gpux/ray/deploy.py turns a :class:`DeploySpec` into Ray applications.
Needs the ``ray`` extra: ``pip install 'gpux[ray]'``; this package imports Ray only where it
deploys (gpux/ray/replica.py), so settings are checked without it.
"""

from __future__ import annotations

from gpux.ray.deploy import deploy, plan
from gpux.ray.spec import Autoscaling, Deployed, DeploySpec, ReplicaSettings

__all__ = [
    "Autoscaling",
    "DeploySpec",
    "Deployed",
    "ReplicaSettings",
    "deploy",
    "plan",
]
