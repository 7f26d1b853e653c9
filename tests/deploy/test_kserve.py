"""``gpux kube``: its manifests validate against KServe's own CRD schemas (no cluster, no kubectl:
tests/deploy/kserve_schema.py), a typo anywhere fails that check, and what they ask of the pod
(command, ports, probes, GPUs) is what ``gpux serve`` and the image need. That the runtime's
command serves a modelcar, and that its probe and metrics paths answer, is tested on a real
modelcar in tests/distribution/test_modelcar.py."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpux.deploy.kserve import Options, manifests
from gpux.store import Store
from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure
from tests.conftest import make_project
from tests.deploy.kserve_schema import problems

STORAGE = "oci://registry.example.com/team/linear:1.0-modelcar"
RUNTIME = "registry.example.com/gpux-runtime:cpu"


@pytest.fixture(scope="module")
def gpux(tmp_path_factory: pytest.TempPathFactory) -> BoundCLI:
    folder = tmp_path_factory.mktemp("kube")
    cli = BoundCLI(folder / "home")
    model = generated_models.linear(folder / "m" / "linear.onnx")
    make_project(folder / "p", model)
    cli.ok("build", str(folder / "p"), "-t", "team/linear:1.0", "-q")
    return cli


def printed(gpux: BoundCLI, *flags: str) -> list[dict[str, Any]]:
    result = gpux.ok(
        "kube", "team/linear:1.0", "--runtime-image", RUNTIME, "--storage-uri", STORAGE, *flags
    )
    return list(yaml.safe_load_all(result.stdout))


def by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {document["kind"]: document for document in documents}


@pytest.mark.parametrize(
    "flags",
    [(), ("--serverless",), ("-n", "models", "--name", "lin-v1", "--gpus", "2", "--trust-code")],
)
def test_printed_manifests_validate_against_kserves_crds(
    gpux: BoundCLI, flags: tuple[str, ...]
) -> None:
    documents = printed(gpux, *flags)
    assert sorted(d["kind"] for d in documents) == ["InferenceService", "ServingRuntime"]
    for document in documents:
        assert problems(document) == [], document["kind"]


def test_the_runtime_serves_the_mounted_modelcar_over_v2_http_and_grpc(gpux: BoundCLI) -> None:
    kinds = by_kind(printed(gpux))
    runtime, service = kinds["ServingRuntime"], kinds["InferenceService"]
    spec = runtime["spec"]
    [container] = spec["containers"]
    assert [*container["command"], *container["args"][:2]] == ["gpux", "serve", "/mnt/models"]
    assert container["image"] == RUNTIME
    args = container["args"]
    http, grpc = int(args[args.index("--port") + 1]), int(args[args.index("--grpc-port") + 1])
    assert [p["containerPort"] for p in container["ports"]] == [http, grpc]
    assert spec["protocolVersions"] == ["v2", "grpc-v2"]
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/v2/health/ready",
        "port": http,
        "scheme": "HTTP",
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert spec["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    assert spec["annotations"]["prometheus.kserve.io/port"] == str(http)
    assert "nvidia.com/gpu" not in container["resources"]["limits"]  # a CPU image
    model = service["spec"]["predictor"]["model"]
    assert model["storageUri"] == STORAGE and model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in [f["name"] for f in spec["supportedModelFormats"]]
    assert service["metadata"]["name"] == "linear"  # the repository's last part


def test_serverless_has_one_port_and_no_grpc(gpux: BoundCLI) -> None:
    kinds = by_kind(printed(gpux, "--serverless"))
    [container] = kinds["ServingRuntime"]["spec"]["containers"]
    assert [p["name"] for p in container["ports"]] == ["http1"]  # Knative's name for HTTP/1
    assert "--grpc-port" not in container["args"]
    assert "serving.kserve.io/deploymentMode" not in kinds["InferenceService"]["metadata"].get(
        "annotations", {}
    )


def test_an_image_that_wants_a_gpu_asks_for_one(gpux: BoundCLI) -> None:
    image = Store(gpux.home).get("team/linear:1.0")
    config = copy.deepcopy(image.config)
    config["gpuxfile"]["runtime"] = {"backend": "cuda"}
    on_gpu = dataclasses.replace(image, config=config)
    options = Options(RUNTIME.replace("cpu", "cuda"), STORAGE)
    runtime, service = manifests(on_gpu, options)
    resources = runtime["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
    assert problems(runtime) == [] and problems(service) == []
    none = manifests(on_gpu, dataclasses.replace(options, gpus=0))[0]
    assert "nvidia.com/gpu" not in none["spec"]["containers"][0]["resources"]["limits"]
    config["gpuxfile"]["runtime"] = {"backend": "rocm"}
    amd = manifests(dataclasses.replace(image, config=config), options)[0]
    assert amd["spec"]["containers"][0]["resources"]["limits"]["amd.com/gpu"] == "1"


def test_a_gpuxfile_that_names_several_gpus_gets_them_in_the_pod(gpux: BoundCLI) -> None:
    """A GPUXfile with ``backend: cuda`` and ``gpus: [0, 2]`` (set on the built image's config:
    a CUDA image cannot be built on a machine without CUDA): the pod asks for 2 GPUs and serves
    on ``--gpus all`` (inside it they are 0 and 1, so the GPUXfile's ids would name a GPU it
    lacks); ``--gpus 4`` overrides the count; ``device: 1`` alone still serves on ``--gpus all``;
    a CPU image given ``--gpus 1`` gets one GPU and no ``--gpus`` argument. All validate."""
    image = Store(gpux.home).get("team/linear:1.0")
    options = Options(RUNTIME.replace("cpu", "cuda"), STORAGE)

    def container(runtime: dict[str, Any] | None, gpus: int | None = None) -> dict[str, Any]:
        config = copy.deepcopy(image.config)
        if runtime is not None:
            config["gpuxfile"]["runtime"] = runtime
        documents = manifests(
            dataclasses.replace(image, config=config), dataclasses.replace(options, gpus=gpus)
        )
        for document in documents:
            assert problems(document) == [], document["kind"]
        return dict(by_kind(documents)["ServingRuntime"]["spec"]["containers"][0])

    two = container({"backend": "cuda", "gpus": [0, 2]})
    assert two["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert two["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert two["args"][-2:] == ["--gpus", "all"]
    assert container({"backend": "cuda", "gpus": 3})["resources"]["limits"]["nvidia.com/gpu"] == "3"
    four = container({"backend": "cuda", "gpus": [0, 2]}, gpus=4)
    assert four["resources"]["limits"]["nvidia.com/gpu"] == "4"
    second = container({"backend": "cuda", "device": 1})
    assert second["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert second["args"][-2:] == ["--gpus", "all"]
    one = container({"backend": "cuda"})
    assert one["resources"]["limits"]["nvidia.com/gpu"] == "1" and "--gpus" not in one["args"]
    cpu = container(None, gpus=1)
    assert cpu["resources"]["limits"]["nvidia.com/gpu"] == "1" and "--gpus" not in cpu["args"]
    assert "nvidia.com/gpu" not in container({"backend": "cpu", "gpus": 2})["resources"]["limits"]


def _typo(document: dict[str, Any], path: list[str | int], wrong: str) -> dict[str, Any]:
    """``document`` with the key at ``path`` renamed to ``wrong``."""
    changed = copy.deepcopy(document)
    parent = changed
    for step in path[:-1]:
        parent = parent[step]
    parent[wrong] = parent.pop(str(path[-1]))
    return changed


@pytest.mark.parametrize(
    ("kind", "path", "wrong"),
    [
        ("ServingRuntime", ["spec", "protocolVersions"], "protocolVersion"),
        ("ServingRuntime", ["spec", "containers", 0, "readinessProbe"], "readinesProbe"),
        ("ServingRuntime", ["spec", "containers", 0, "readinessProbe", "httpGet"], "httpget"),
        ("ServingRuntime", ["metadata", "name"], "nmae"),
        ("InferenceService", ["spec", "predictor", "model", "storageUri"], "storageURI"),
        ("InferenceService", ["spec", "predictor"], "predicter"),
    ],
)
def test_a_manifest_with_a_typo_fails_the_check(
    gpux: BoundCLI, kind: str, path: list[str | int], wrong: str
) -> None:
    document = by_kind(printed(gpux))[kind]
    assert problems(document) == []
    found = problems(_typo(document, path, wrong))
    assert found and any(wrong in problem for problem in found), found


def test_a_wrong_type_fails_the_check(gpux: BoundCLI) -> None:
    runtime = by_kind(printed(gpux))["ServingRuntime"]
    runtime["spec"]["protocolVersions"] = "v2"  # a string where KServe wants a list
    assert any("protocolVersions" in p for p in problems(runtime))
    runtime["spec"]["protocolVersions"] = ["v2"]
    runtime["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    assert any("containerPort" in p for p in problems(runtime))


def test_kube_mistakes_are_named(gpux: BoundCLI, tmp_path: Path) -> None:
    name = "team/linear:1.0"
    assert_failure(gpux("kube", name, "--storage-uri", STORAGE), 2, "--runtime-image")
    assert_failure(gpux("kube", name), 2, "--runtime-image and --storage-uri", "--format modelcar")
    assert_failure(
        gpux("kube", name, "--runtime-image", RUNTIME, "--storage-uri", "s3://bucket/model"),
        2,
        "not an oci:// reference",
        "--format modelcar",
    )
    assert_failure(
        gpux("kube", name, "--runtime-image", RUNTIME, "--storage-uri", "oci://linear:1.0"),
        2,
        "names no registry",
    )
    assert_failure(
        gpux("kube", name, "--runtime-image", RUNTIME, "--storage-uri", STORAGE, "--name", "Lin_1"),
        2,
        "--name 'Lin_1'",
        "lower-case",
    )
    assert_failure(
        gpux("kube", "missing:1.0", "--runtime-image", RUNTIME, "--storage-uri", STORAGE),
        4,
        "missing:1.0",
    )
