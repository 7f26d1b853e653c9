"""Waiting, within a bound, until Ray Serve runs every replica of a deployment.

``serve.run`` waits until an application runs, and a replica that no node can hold never runs: a
replica asking for a GPU on a cluster without one waits forever. So applications are started
without that wait and polled here until ``timeout_s``; then the error says what Ray could not
place, from the cluster's own resources:

- no node has what one replica needs (``--num-gpus 1`` where no node has a GPU);
- some node has it, but not free (other applications hold it, or too many ``--replicas``);
- every replica was placed but did not finish loading in time.

The caller removes the applications it started, so nothing half-deployed stays behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gpux.errors import BackendError, MachineError
from gpux.ray.spec import DeploySpec

POLL_SECONDS = 0.5
RUNNING = "RUNNING"


@dataclass(frozen=True)
class Pending:
    """An application that is not running yet: its replicas running out of those wanted."""

    application: str
    running: int
    wanted: int
    message: str  # Ray's own words on the application or deployment, if any


def replica_resources(spec: DeploySpec) -> dict[str, float]:
    """What Ray reserves for one replica, in ``ray.nodes()``'s resource names."""
    resources = {"CPU": spec.num_cpus, "GPU": spec.num_gpus}
    return {name: amount for name, amount in resources.items() if amount > 0}


def wanted_replicas(spec: DeploySpec) -> int:
    return spec.autoscaling.min_replicas if spec.autoscaling else spec.replicas


def wait_until_running(applications: list[str], spec: DeploySpec, timeout_s: float) -> None:
    """Return once every one of ``applications`` runs; raise after ``timeout_s`` seconds (the
    error names what was not placed and the fix), or at once if Ray gave up on one."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        applications_now = serve.status().applications
        pending = []
        for name in applications:
            found = applications_now.get(name)
            if found is None:
                pending.append(Pending(name, 0, wanted_replicas(spec), ""))
                continue
            status = str(getattr(found.status, "value", found.status))
            if status == "DEPLOY_FAILED":
                raise BackendError(
                    f"Ray Serve could not start application '{name}': {found.message}",
                    "its replicas failed while starting (Ray's words above); check that the image "
                    "loads on that node's store: gpux run NAME",
                )
            if status != RUNNING:
                pending.append(_pending(name, found, spec))
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise not_placed(pending, spec, timeout_s)
        time.sleep(POLL_SECONDS)


def _pending(name: str, application: Any, spec: DeploySpec) -> Pending:
    running = 0
    messages = [application.message] if application.message else []
    for deployment in application.deployments.values():
        states = {str(getattr(k, "value", k)): v for k, v in deployment.replica_states.items()}
        running += int(states.get(RUNNING, 0))
        if deployment.message:
            messages.append(deployment.message)
    return Pending(name, running, wanted_replicas(spec), " ".join(messages))


def not_placed(pending: list[Pending], spec: DeploySpec, timeout_s: float) -> MachineError:
    """The error for applications still not running after ``timeout_s``: why, read from the
    cluster's resources, and what to change."""
    import ray

    ray_api: Any = ray  # nodes() and available_resources() carry no type hints
    need = replica_resources(spec)
    names = ", ".join(
        f"'{p.application}' ({p.running} of {p.wanted} replicas running)" for p in pending
    )
    nodes: list[dict[str, float]] = [
        n.get("Resources", {}) for n in ray_api.nodes() if n.get("Alive")
    ]
    fits = [n for n in nodes if all(n.get(k, 0.0) >= v for k, v in need.items())]
    free: dict[str, float] = ray_api.available_resources()
    lead = f"after {timeout_s:g} s Ray Serve still had not placed {names}"
    if not fits:
        largest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
        return MachineError(
            f"{lead}: each replica needs {_shown(need)} and no node of the cluster has that "
            f"(the largest has {_shown(largest, need)}); the application was removed",
            "lower --num-gpus/--num-cpus, or add a node that has them "
            "(ray start --address HEAD:PORT --num-gpus N); --timeout waits longer for an "
            "autoscaling cluster",
        )
    if any(free.get(k, 0.0) < v for k, v in need.items()):
        return MachineError(
            f"{lead}: each replica needs {_shown(need)}, which some node has, but the cluster "
            f"has only {_shown(free, need)} free; the application was removed",
            "deploy fewer --replicas or smaller ones, free what other Ray applications hold "
            "(serve delete NAME), or add a node",
        )
    said = " ".join(p.message for p in pending if p.message)
    return MachineError(
        f"{lead}: its replicas were placed but did not finish loading the image in time; the "
        "application was removed" + (f". Ray said: {said}" if said else ""),
        "give large images more time with --timeout SECONDS",
    )


def _shown(resources: dict[str, float], only: dict[str, float] | None = None) -> str:
    """``{"CPU": 4.0, "GPU": 1.0}`` -> ``CPU 4, GPU 1`` (only the names in ``only``)."""
    names = list(only or resources)
    shown = [f"{name} {resources.get(name, 0.0):g}" for name in names if name in ("CPU", "GPU")]
    return ", ".join(shown) or "nothing"
