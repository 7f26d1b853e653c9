"""``gpux kube``: the KServe manifests that serve an image from its modelcar.

Two resources, printed as one YAML stream for ``kubectl apply -f -``:

- a **ServingRuntime** whose container runs ``gpux serve /mnt/models`` from a runtime image (any
  image with gpux installed: ``gpux containerize`` makes one). It speaks the Open Inference
  Protocol over HTTP (``v2``) and gRPC (``grpc-v2``); readiness and liveness are the v2 health
  routes; Prometheus scrapes ``/metrics`` (KServe's ``prometheus.kserve.io/*`` annotations); it
  asks for GPUs when the image's GPUXfile wants them (``cuda``/``tensorrt``: nvidia.com/gpu,
  ``rocm``: amd.com/gpu; as many as ``runtime.gpus`` names, or ``--gpus N``), and serves with
  ``--gpus all`` when the pod has several or the GPUXfile numbers its devices.
- an **InferenceService** whose ``storageUri`` is the modelcar (``oci://REF``, pushed with
  ``gpux push NAME REF --format modelcar``), which KServe mounts at ``/mnt/models``.

Knative (KServe's Serverless mode) gives a container one port, so by default the service asks
for ``RawDeployment``, where HTTP and gRPC both get theirs; ``serverless=True`` drops gRPC.
Field names follow KServe's CRDs (tests/deploy checks every manifest against them).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from gpux.errors import UsageError
from gpux.store import Image

API_RUNTIME = "serving.kserve.io/v1alpha1"
API_SERVICE = "serving.kserve.io/v1beta1"
MOUNT = "/mnt/models"
MODEL_FORMAT = "gpux"
MODEL_FORMAT_VERSION = "1"
CONTAINER = "kserve-container"  # the name KServe gives the predictor's container
HTTP_PORT = 8080  # KServe's default for a predictor
GRPC_PORT = 9000  # KServe's runtimes (Triton, MLServer) serve gRPC here
GPU_RESOURCES = {"cuda": "nvidia.com/gpu", "tensorrt": "nvidia.com/gpu", "rocm": "amd.com/gpu"}
# Memory asked for: the model's bytes loaded, about as much again for ONNX Runtime's arenas and
# a session's copies, plus Python and the server (measured: ~300 MiB with a tiny model).
MEMORY_PER_MODEL_BYTE = 2.5
MEMORY_BASE_MIB = 512
# A DNS-1035 label: what KServe requires of an InferenceService name (it becomes a Service).
NAME = re.compile(r"[a-z]([-a-z0-9]{0,43}[a-z0-9])?")
STARTUP_SECONDS = 600  # how long a large model may take to load before liveness counts


@dataclass(frozen=True)
class Options:
    runtime_image: str
    storage_uri: str
    name: str | None = None
    namespace: str | None = None
    gpus: int | None = None  # None: as the image needs
    serverless: bool = False
    trust_code: bool = False


def manifests(image: Image, options: Options) -> list[dict[str, Any]]:
    """The ServingRuntime and the InferenceService for ``image``."""
    name = service_name(image, options.name)
    check_storage_uri(options.storage_uri)
    from gpux.store.code import code_files

    code = code_files(image)
    if code and not options.trust_code:
        raise UsageError(
            f"image '{image.name}' runs handler code ({', '.join(code[:3])}), which gpux serve "
            "runs from a modelcar only with --trust-code",
            "read it (gpux inspect --code), then add --trust-code to let the pods run it",
        )
    check_runtime_image(options.runtime_image)
    runtime_name = f"gpux-{name}"[:63].rstrip("-")
    metadata: dict[str, Any] = {"name": runtime_name}
    if options.namespace:
        metadata["namespace"] = options.namespace
    runtime = {
        "apiVersion": API_RUNTIME,
        "kind": "ServingRuntime",
        "metadata": {**metadata, "labels": {"app.kubernetes.io/managed-by": "gpux"}},
        "spec": {
            "annotations": {
                "prometheus.kserve.io/port": str(HTTP_PORT),
                "prometheus.kserve.io/path": "/metrics",
            },
            "supportedModelFormats": [
                {"name": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION, "autoSelect": True}
            ],
            "protocolVersions": ["v2"] if options.serverless else ["v2", "grpc-v2"],
            "multiModel": False,
            "containers": [_container(image, options)],
        },
    }
    annotations = {"serving.kserve.io/enable-prometheus-scraping": "true"}
    if not options.serverless:
        annotations["serving.kserve.io/deploymentMode"] = "RawDeployment"
    service = {
        "apiVersion": API_SERVICE,
        "kind": "InferenceService",
        "metadata": {
            **metadata,
            "name": name,
            "annotations": annotations,
            "labels": {"app.kubernetes.io/managed-by": "gpux"},
        },
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION},
                    "runtime": runtime_name,
                    "protocolVersion": "v2",
                    "storageUri": options.storage_uri,
                }
            }
        },
    }
    return [runtime, service]


def _container(image: Image, options: Options) -> dict[str, Any]:
    args = ["serve", MOUNT, "--host", "0.0.0.0", "--port", str(HTTP_PORT)]
    ports: list[dict[str, Any]] = [
        {
            "name": "http1" if options.serverless else "http",
            "containerPort": HTTP_PORT,
            "protocol": "TCP",
        }
    ]
    if not options.serverless:
        args += ["--grpc-port", str(GRPC_PORT)]
        ports.append({"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"})
    if options.trust_code:
        args.append("--trust-code")
    count = gpu_count(image, options.gpus)
    if count > 1 or (count and numbers_devices(image)):
        args += ["--gpus", "all"]  # an instance on each GPU the pod got, whatever their numbers
    resources = _resources(image, options.gpus)
    return {
        "name": CONTAINER,
        "image": options.runtime_image,
        "command": ["gpux"],
        "args": args,
        "ports": ports,
        "resources": resources,
        # Loading a large model takes minutes: liveness starts to count once it has started.
        "startupProbe": _probe("/v2/health/live", period=5, failures=STARTUP_SECONDS // 5),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3),
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=3),
    }


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": HTTP_PORT, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def gpu_count(image: Image, gpus: int | None) -> int:
    """``--gpus``, else what the image needs: ``wanted_gpus`` for a GPU backend, none for the
    CPU (``auto`` falls back to it)."""
    if gpus is not None:
        return gpus
    return wanted_gpus(image) if gpu_resource(image) else 0


def _resources(image: Image, gpus: int | None) -> dict[str, Any]:
    memory_mib = MEMORY_BASE_MIB + math.ceil(image.size * MEMORY_PER_MODEL_BYTE / (1 << 20))
    requests: dict[str, str] = {"cpu": "1", "memory": f"{memory_mib}Mi"}
    limits: dict[str, str] = {"memory": f"{memory_mib}Mi"}
    count = gpu_count(image, gpus)
    resource = gpu_resource(image)
    if count:
        key = resource or "nvidia.com/gpu"
        requests[key] = limits[key] = str(count)  # extended resources: request == limit
    return {"requests": requests, "limits": limits}


def runtime_sections(image: Image) -> list[dict[str, Any]]:
    """The ``runtime:`` section of the image's GPUXfile (each model's, for a chain)."""
    configs = [image.component(key).config for key in image.components] or [image.config]
    found = []
    for config in configs:
        runtime = config.get("gpuxfile", {}).get("runtime", {})
        found.append(runtime if isinstance(runtime, dict) else {})
    return found


def backends(image: Image) -> set[str]:
    """The backends the image's GPUXfile (each model's, for a chain) asks for."""
    return {str(runtime.get("backend", "auto")) for runtime in runtime_sections(image)}


def wanted_gpus(image: Image) -> int:
    """GPUs one pod of a GPU image asks for: the GPUXfile's ``runtime.gpus`` as a count or a
    list of ids, else 1. ``all`` is 1 too: a manifest cannot know the node (``--gpus N``)."""
    counts = []
    for runtime in runtime_sections(image):
        gpus = runtime.get("gpus")
        if isinstance(gpus, int) and not isinstance(gpus, bool):
            counts.append(gpus)
        elif isinstance(gpus, list):
            counts.append(len(gpus))
        else:
            counts.append(1)
    return max(counts, default=1)


def numbers_devices(image: Image) -> bool:
    """Whether the GPUXfile picks devices by number (``runtime.gpus`` or ``device``): a pod sees
    only its own GPUs, numbered from 0, so the runtime serves on ``--gpus all`` instead."""
    return any(
        r.get("gpus") is not None or r.get("device", 0) != 0 for r in runtime_sections(image)
    )


def gpu_resource(image: Image) -> str | None:
    """The Kubernetes resource of the GPU the image needs (None: it runs on a CPU; ``auto``
    falls back to the CPU, so it asks for none)."""
    needed = {GPU_RESOURCES[backend] for backend in backends(image) if backend in GPU_RESOURCES}
    return sorted(needed)[0] if needed else None


def service_name(image: Image, given: str | None) -> str:
    """``given``, checked, else the image's repository's last part made a DNS-1035 label."""
    if given is not None:
        if not NAME.fullmatch(given):
            raise UsageError(
                f"--name '{given}' is not a name KServe accepts",
                "use lower-case letters, digits and '-', starting with a letter, at most 45 "
                "characters (it becomes a Kubernetes Service)",
            )
        return given
    repository = image.name.rpartition(":")[0] or image.name
    base = re.sub(r"[^a-z0-9-]+", "-", repository.rsplit("/", 1)[-1].lower()).strip("-")
    if not base or not base[0].isalpha():
        base = f"model-{base}".rstrip("-")
    return base[:45].rstrip("-")


def check_storage_uri(uri: str) -> None:
    from gpux.distribution.transfer import parse_remote

    if not uri.startswith("oci://"):
        raise UsageError(
            f"--storage-uri '{uri}' is not an oci:// reference",
            "push a modelcar (gpux push NAME REGISTRY/REPO:TAG --format modelcar) and give "
            "--storage-uri oci://REGISTRY/REPO:TAG",
        )
    try:
        parse_remote(uri.removeprefix("oci://"))
    except UsageError as exc:
        raise UsageError(f"--storage-uri: {exc.message}", exc.hint) from exc


def check_runtime_image(reference: str) -> None:
    if not reference or any(c.isspace() for c in reference) or reference.startswith("-"):
        raise UsageError(
            f"--runtime-image '{reference}' is not an image reference",
            "give the image that has gpux installed, e.g. registry.example.com/gpux-runtime:cpu",
        )
