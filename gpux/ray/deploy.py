"""Deploy GPUX images as Ray Serve applications; Ray places, scales and replaces the replicas.

Each image becomes its own application at route prefix ``/<name>`` (or ``route_prefix``), so its
URLs are ``gpux serve``'s under that prefix: ``/<name>/v2/models/<name>/infer``,
``/<name>/predict``, ``/<name>/v2/health/ready``. With ``multiplex`` the images share one
deployment at ``/`` whose replicas load the image each request names (header
``serve_multiplexed_model_id``): ``/v2/models/<name>/infer`` as ``gpux serve`` has it.

Replicas read images from the GPUX store at ``GPUX_HOME`` on their node (the deploying
environment's ``GPUX_HOME`` is passed to them): on a cluster of several machines, ``gpux pull``
the images on every node, or share the store's folder.
"""

from __future__ import annotations

import os
import re
from typing import Any

from gpux.errors import UsageError
from gpux.ray.placement import wait_until_running
from gpux.ray.spec import Deployed, DeploySpec

DEFAULT_TIMEOUT_S = 300.0


def application_name(image: str) -> str:
    """``acme/resnet:1.0`` -> ``resnet``: the repository's last part, as Ray and URLs take it."""
    repository = image.rpartition(":")[0] if ":" in image.rpartition("/")[2] else image
    return re.sub(r"[^A-Za-z0-9_.-]", "-", repository.rpartition("/")[2])


def plan(spec: DeploySpec) -> list[tuple[Deployed, Any]]:
    """The Ray applications for ``spec``, bound and ready for ``serve.run``."""
    from gpux.ray.replica import ImageReplica, multiplexed_replica

    if not spec.names:
        raise UsageError("no image to deploy", "name one or more images: gpux ray deploy NAME")
    if spec.multiplex and spec.max_models_per_replica < 1:
        raise UsageError("--max-models must be 1 or more", "keep at least one image loaded")
    actor: dict[str, Any] = {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus}
    home = os.environ.get("GPUX_HOME")
    if home:
        actor["runtime_env"] = {"env_vars": {"GPUX_HOME": home}}
    options: dict[str, Any] = {
        "ray_actor_options": actor,
        "max_ongoing_requests": spec.max_ongoing_requests,
    }
    if spec.autoscaling is not None:
        options["autoscaling_config"] = spec.autoscaling.to_ray()
    else:
        options["num_replicas"] = spec.replicas
    if spec.multiplex:
        name = spec.name or "gpux"
        replica = multiplexed_replica(spec.max_models_per_replica)
        bound = serve_deployment(replica, name, options).bind(list(spec.names), spec.settings)
        return [(Deployed(name, spec.route_prefix or "/", spec.names), bound)]
    names = [application_name(n) for n in spec.names]
    if len(set(names)) != len(names):
        raise UsageError(
            "two images with the same name cannot be deployed together",
            "deploy one tag of each model",
        )
    if (spec.name or spec.route_prefix) and len(names) > 1:
        raise UsageError(
            "--name and --route-prefix are for one application",
            "deploy several images without them, or with --multiplex",
        )
    planned = []
    for image, name in zip(spec.names, names, strict=True):
        prefix = spec.route_prefix or f"/{name}"
        app_name = spec.name or name
        deployment = serve_deployment(ImageReplica, app_name, options)
        bound = deployment.bind([image], spec.settings)
        planned.append((Deployed(app_name, prefix, (image,)), bound))
    return planned


def serve_deployment(replica: Any, name: str, options: dict[str, Any]) -> Any:
    from ray import serve

    make: Any = serve.deployment  # typed as a decorator factory; a class works as well
    return make(replica).options(name=name, **options)


def deploy(
    spec: DeploySpec,
    address: str | None = None,
    http_host: str = "127.0.0.1",
    http_port: int = 8000,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[Deployed]:
    """Deploy ``spec`` on the Ray cluster at ``address`` (default: ``RAY_ADDRESS``, else the
    local cluster ``ray start`` made) and wait until every replica runs. Checks first that
    each image is in the local store, so a typo fails here rather than in every replica.

    After ``timeout_s`` seconds with a replica not running (no node has the resources it asks
    for, they are taken, or loading takes longer), the applications this call started are
    deleted and :class:`~gpux.errors.MachineError` says which and why
    (gpux/ray/placement.py)."""
    from gpux.store import Store

    store = Store()
    for image in spec.names:
        store.get(image)  # ModelNotFound names the fix (gpux pull / gpux build)
    import ray
    from ray import serve

    planned = plan(spec)
    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS") or "auto"
        try:
            ray.init(address=target, log_to_driver=False)
        except ConnectionError as exc:
            raise UsageError(
                f"no Ray cluster at '{target}'",
                "start one with 'ray start --head', or pass --address HOST:PORT",
            ) from exc
    serve.start(http_options={"host": http_host, "port": http_port})
    targets = [
        serve.RunTarget(target=bound, name=deployed.application, route_prefix=deployed.route_prefix)
        for deployed, bound in planned
    ]
    applications = [deployed.application for deployed, _ in planned]
    # Not serve.run: it waits without end for a replica that no node can hold.
    serve.run_many(targets, wait_for_applications_running=False)
    try:
        wait_until_running(applications, spec, timeout_s)
    except BaseException:  # a bound, a failed replica or Ctrl-C: nothing half-deployed stays
        for application in applications:
            serve.delete(application)
        raise
    return [deployed for deployed, _ in planned]
