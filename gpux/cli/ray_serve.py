"""``gpux ray deploy``: images as Ray Serve applications on a running Ray cluster (gpux/ray/)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import typer

from gpux.cli.options import BACKENDS, check_backend

if TYPE_CHECKING:
    from gpux.ray import Autoscaling


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Serve images on a Ray cluster with Ray Serve (needs gpux[ray]).",
        no_args_is_help=True,
    )
    app.add_typer(group, name="ray")

    @group.command("deploy")
    def deploy(
        names: str = typer.Argument(..., help="Images to deploy, comma-separated: NAME[,NAME..]."),
        replicas: int = typer.Option(1, "--replicas", min=1, help="Replicas per deployment."),
        num_cpus: float = typer.Option(
            1.0, "--num-cpus", min=0, help="CPUs Ray reserves per replica."
        ),
        num_gpus: float = typer.Option(
            0.0, "--num-gpus", min=0, help="GPUs Ray reserves per replica (fractions share one)."
        ),
        autoscale: str | None = typer.Option(
            None,
            "--autoscale",
            help="MIN:MAX[:TARGET] replicas, scaled by Ray on TARGET requests in flight per "
            "replica (default 8); replaces --replicas.",
        ),
        max_ongoing: int = typer.Option(
            64, "--max-ongoing", min=1, help="Requests Ray lets into one replica at once."
        ),
        multiplex: bool = typer.Option(
            False,
            "--multiplex",
            help="One deployment for all the images: each request names its image in the "
            "header serve_multiplexed_model_id; replicas load images on demand.",
        ),
        max_models: int = typer.Option(
            3, "--max-models", min=1, help="With --multiplex: images one replica keeps loaded."
        ),
        backend: str | None = typer.Option(None, "--backend", help=f"Override ({BACKENDS})."),
        max_batch_size: int | None = typer.Option(
            None, "--max-batch-size", min=1, help="GPUX's batching in each replica: most rows."
        ),
        max_batch_delay_ms: float | None = typer.Option(
            None, "--max-batch-delay-ms", min=0, help="GPUX's batching: longest wait for a batch."
        ),
        allowed_host: list[str] = typer.Option(
            [], "--allowed-host", help="Host names accepted besides loopback (repeatable, or *)."
        ),
        name: str | None = typer.Option(
            None, "--name", help="Application name (default: the image's; multiplexed: gpux)."
        ),
        route_prefix: str | None = typer.Option(
            None, "--route-prefix", help="URL prefix (default: /NAME; multiplexed: /)."
        ),
        address: str | None = typer.Option(
            None, "--address", help="Ray cluster (default: $RAY_ADDRESS, else the local one)."
        ),
        http_host: str = typer.Option("127.0.0.1", "--http-host", help="Ray's HTTP proxy address."),
        http_port: int = typer.Option(8000, "--http-port", help="Ray's HTTP proxy port."),
        timeout: float = typer.Option(
            300.0,
            "--timeout",
            min=1,
            help="Seconds to wait for every replica to run; then the applications are removed "
            "and the command fails, naming what Ray could not place.",
        ),
    ) -> None:
        """Deploy images as Ray Serve applications; Ray places, scales and replaces replicas.
        Each replica runs gpux serve's app: /v2/models/NAME/infer, /predict, and
        /gpux/replica (where its models really run). Prints the routes as JSON."""
        check_backend(backend)
        from gpux.cli.console import print_json
        from gpux.errors import UsageError
        from gpux.ray import DeploySpec, ReplicaSettings
        from gpux.ray import deploy as deploy_spec

        overrides = {"max_batch_size": max_batch_size, "max_batch_delay_ms": max_batch_delay_ms}
        spec = DeploySpec(
            names=tuple(n.strip() for n in names.split(",") if n.strip()),
            replicas=replicas,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            autoscaling=_autoscaling(autoscale),
            max_ongoing_requests=max_ongoing,
            multiplex=multiplex,
            max_models_per_replica=max_models,
            settings=ReplicaSettings(
                backend=backend,
                overrides={k: v for k, v in overrides.items() if v is not None},
                allowed_hosts=tuple(allowed_host),
            ),
            name=name,
            route_prefix=route_prefix,
        )
        if importlib.util.find_spec("ray") is None:
            raise UsageError(
                "Ray Serve is not installed", "install it with: pip install 'gpux[ray]'"
            )
        deployed = deploy_spec(spec, address, http_host, http_port, timeout)
        url = f"http://{http_host}:{http_port}"
        print_json(
            [
                {
                    "application": d.application,
                    "images": list(d.images),
                    "url": url + d.route_prefix.rstrip("/"),
                    "multiplexed": multiplex,
                }
                for d in deployed
            ]
        )


def _autoscaling(text: str | None) -> Autoscaling | None:
    """``MIN:MAX[:TARGET]`` -> Autoscaling."""
    from gpux.errors import UsageError
    from gpux.ray import Autoscaling

    if text is None:
        return None
    parts = text.split(":")
    try:
        low, high = int(parts[0]), int(parts[1])
        target = float(parts[2]) if len(parts) > 2 else 8.0
    except (ValueError, IndexError) as exc:
        raise UsageError(
            f"--autoscale '{text}' is not MIN:MAX[:TARGET]", "e.g. --autoscale 1:4:8"
        ) from exc
    if len(parts) > 3 or not 0 <= low <= high or high < 1 or target <= 0:
        raise UsageError(
            f"--autoscale '{text}' needs 0 <= MIN <= MAX, MAX >= 1 and TARGET > 0",
            "e.g. --autoscale 1:4:8",
        )
    return Autoscaling(min_replicas=low, max_replicas=high, target_ongoing_requests=target)
