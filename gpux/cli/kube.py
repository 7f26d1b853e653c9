"""``gpux kube``: print KServe manifests (a ServingRuntime and an InferenceService)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("kube")
    def kube(
        name: str = typer.Argument(..., help="Local image name[:tag]."),
        runtime_image: str | None = typer.Option(
            None,
            "--runtime-image",
            help="Container image with gpux installed that serves the model "
            "(the CUDA build for an image that wants a GPU).",
        ),
        storage_uri: str | None = typer.Option(
            None,
            "--storage-uri",
            help="oci://REGISTRY/REPO:TAG of the image's modelcar "
            "(gpux push NAME REGISTRY/REPO:TAG --format modelcar).",
        ),
        service: str | None = typer.Option(
            None, "--name", help="InferenceService name (default: the image's name)."
        ),
        namespace: str | None = typer.Option(None, "-n", "--namespace", help="Namespace."),
        gpus: int | None = typer.Option(
            None,
            "--gpus",
            min=0,
            max=64,
            help="GPUs per replica (default: 1 when the GPUXfile's backend is cuda, tensorrt "
            "or rocm, else 0).",
        ),
        serverless: bool = typer.Option(
            False,
            "--serverless",
            help="KServe's Serverless mode (Knative): one port, so HTTP only. Default: "
            "RawDeployment, HTTP and gRPC.",
        ),
        trust_code: bool = typer.Option(
            False, "--trust-code", help="Let the pods run the image's handler code."
        ),
    ) -> None:
        """Print a KServe ServingRuntime and InferenceService serving NAME from its modelcar."""
        import yaml

        from gpux.cli.console import stderr
        from gpux.deploy.kserve import GRPC_PORT, HTTP_PORT, Options, manifests
        from gpux.errors import UsageError
        from gpux.store import Store

        image = Store().get(name)  # a missing image is the first mistake to name
        if runtime_image is None or storage_uri is None:
            missing = " and ".join(
                flag
                for flag, value in (
                    ("--runtime-image", runtime_image),
                    ("--storage-uri", storage_uri),
                )
                if value is None
            )
            raise UsageError(
                f"gpux kube needs {missing}",
                f"push a modelcar (gpux push {name} REGISTRY/REPO:TAG --format modelcar), then "
                f"gpux kube {name} --storage-uri oci://REGISTRY/REPO:TAG --runtime-image "
                "IMAGE_WITH_GPUX",
            )
        documents = manifests(
            image,
            Options(
                runtime_image,
                storage_uri,
                name=service,
                namespace=namespace,
                gpus=gpus,
                serverless=serverless,
                trust_code=trust_code,
            ),
        )
        typer.echo(yaml.safe_dump_all(documents, sort_keys=False), nl=False)
        served = image.name.rpartition(":")[0] or image.name
        stderr().print(
            f"apply with kubectl apply -f -; the model answers at /v2/models/{served}/infer "
            f"(HTTP port {HTTP_PORT}"
            + ("" if serverless else f", gRPC port {GRPC_PORT}")
            + "); KServe needs modelcars enabled (storageInitializer enableModelcar: true)"
        )
