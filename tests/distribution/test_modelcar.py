"""``gpux push --format modelcar`` against a real registry, read back by the tools KServe's
nodes and users have: skopeo copies and inspects it, umoci unpacks it, and its shell runs the
command KServe's modelcar container runs (in a chroot of the unpacked rootfs when we are root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure
from tests.conftest import make_project
from tests.distribution.registry_server import Registry, running_registry
from tests.serve.conftest import free_port, start_server, stop_server

pytestmark = [pytest.mark.slow]

TOOLS = ("skopeo", "umoci")


@dataclass
class Unpacked:
    gpux: BoundCLI
    registry: Registry
    remote: str  # where the modelcar went
    digest: str  # the modelcar's manifest digest
    image_digest: str  # the GPUX image's
    rootfs: Path
    model: Path  # the ONNX file that was built


def _skopeo(*args: str) -> str:
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unpacked]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: run 'make system-deps'")
    if not Path("/bin/busybox").is_file():
        pytest.skip("busybox-static is not installed: run 'make system-deps'")
    folder = tmp_path_factory.mktemp("modelcar")
    gpux = BoundCLI(folder / "home")
    model = generated_models.linear(folder / "m" / "linear.onnx")
    make_project(folder / "project", model, "name: linear\nversion: '1.0'\nmodel: ./linear.onnx\n")
    gpux.ok("build", str(folder / "project"), "-q")
    with running_registry(folder / "registry") as registry:
        remote = f"{registry.host}/team/linear:1.0-modelcar"
        pushed = gpux.json(
            "push", "linear:1.0", remote, "--format", "modelcar", "--insecure", "--json"
        )
        layout = folder / "layout"
        _skopeo("copy", "--src-tls-verify=false", f"docker://{remote}", f"oci:{layout}:car")
        bundle = folder / "bundle"
        done = subprocess.run(
            ["umoci", "unpack", "--image", f"{layout}:car", str(bundle)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        yield Unpacked(
            gpux,
            registry,
            remote,
            pushed["digest"],
            gpux.json("inspect", "linear:1.0", "--json")["digest"],
            bundle / "rootfs",
            model,
        )


def test_skopeo_sees_a_linux_image_of_one_plain_layer(unpacked: Unpacked) -> None:
    raw = json.loads(
        _skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{unpacked.remote}")
    )
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert [layer["mediaType"] for layer in raw["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar"
    ]
    shown = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{unpacked.remote}"))
    assert shown["Digest"] == unpacked.digest
    assert shown["Os"] == "linux" and shown["Architecture"] in ("amd64", "arm64")
    assert shown["Labels"]["dev.gpux.modelcar.digest"] == unpacked.image_digest


def test_models_holds_the_image_as_an_oci_layout(unpacked: Unpacked) -> None:
    models = unpacked.rootfs / "models"
    index = json.loads((models / "index.json").read_text())
    [entry] = index["manifests"]
    assert entry["digest"] == unpacked.image_digest
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "linear:1.0"
    blobs = {path.name: path for path in (models / "blobs" / "sha256").iterdir()}
    manifest = json.loads(blobs[unpacked.image_digest[7:]].read_bytes())
    [layer] = [x for x in manifest["layers"] if x["mediaType"].endswith("model.onnx.v1")]
    assert blobs[layer["digest"][7:]].read_bytes() == unpacked.model.read_bytes()


def test_its_shell_runs_what_kserve_runs(unpacked: Unpacked) -> None:
    # KServe: sh -c "ln -s /proc/$$/root/models /mnt/models && sleep infinity"
    script = "ln -s /models /linked && ls /linked/oci-layout && sleep 0 && echo ok"
    if os.geteuid() == 0:
        command = ["chroot", str(unpacked.rootfs), "/bin/sh", "-c", script]
    else:  # without chroot the paths are the host's: run the shell itself
        command = [str(unpacked.rootfs / "bin" / "sh"), "-c", "echo ok"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


def test_a_second_push_uploads_nothing(unpacked: Unpacked) -> None:
    again = unpacked.gpux.json(
        "push", "linear:1.0", unpacked.remote, "--format", "modelcar", "--insecure", "--json"
    )
    assert again["digest"] == unpacked.digest  # the same bytes: fixed owners, modes, times
    assert again["transferred"] == 0 and again["skipped"] == 2


def test_modelcar_mistakes_are_named(unpacked: Unpacked, tmp_path: Path) -> None:
    gpux, host = unpacked.gpux, unpacked.registry.host
    assert_failure(
        gpux("push", "linear:1.0", "--format", "modelcar"), 2, "needs a target", "--format modelcar"
    )
    assert_failure(gpux("push", "linear:1.0", f"{host}/a:b", "--format", "tar"), 2, "--format tar")
    assert_failure(
        gpux("push", "linear:1.0", f"{host}/a:b", "--busybox", "/bin/busybox"), 2, "--busybox"
    )
    dynamic = gpux(
        "push", "linear:1.0", f"{host}/a:b", "--format", "modelcar", "--busybox",
        os.path.realpath(sys.executable), "--insecure",
    )  # fmt: skip
    assert_failure(dynamic, 2, "dynamically linked", "busybox-static")
    assert_failure(
        gpux("pull", unpacked.remote, "--insecure"), 8, "KServe modelcar of linear:1.0", "serve"
    )
    text = tmp_path / "sh"
    text.write_text("#!/bin/sh\n")
    assert_failure(
        gpux("push", "linear:1.0", f"{host}/a:b", "--format", "modelcar", "--busybox", str(text)),
        2,
        "not a Linux executable",
    )


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(folder)): (path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
    }


def _runtime_args(gpux: BoundCLI, storage_uri: str) -> list[str]:
    """The arguments ``gpux kube``'s ServingRuntime gives ``gpux serve``, less the address
    (the pod's 0.0.0.0 and ports become loopback and free ports here)."""
    import yaml

    printed = gpux.ok(
        "kube", "linear:1.0", "--runtime-image", "example.com/gpux:cpu", "--storage-uri",
        storage_uri,
    )  # fmt: skip
    runtime, service = yaml.safe_load_all(printed.stdout)
    assert service["spec"]["predictor"]["model"]["storageUri"] == storage_uri
    [container] = runtime["spec"]["containers"]
    args = list(container["args"])
    assert args[:2] == ["serve", "/mnt/models"]
    for flag in ("--host", "--port", "--grpc-port"):
        at = args.index(flag)
        del args[at : at + 2]
    probes = [container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")]
    return [*args[2:], *probes, runtime["spec"]["annotations"]["prometheus.kserve.io/path"]]


def test_the_kube_runtime_serves_the_mounted_modelcar(unpacked: Unpacked, tmp_path: Path) -> None:
    """As KServe runs it: the folder reached through /proc/PID/root as KServe links it, another
    machine's empty GPUX_HOME, the arguments gpux kube prints; tritonclient (HTTP and gRPC) gets
    what ``gpux run`` of the built image gives, the probe and metrics paths answer, and the
    folder is untouched."""
    import numpy as np
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton

    models = unpacked.rootfs / "models"
    before = _snapshot(models)
    mounted = tmp_path / "mnt" / "models"
    mounted.parent.mkdir()
    mounted.symlink_to(f"/proc/{os.getpid()}/root{models}")  # KServe: /proc/$$/root/models
    *args, ready, live, metrics = _runtime_args(unpacked.gpux, f"oci://{unpacked.remote}")
    out = tmp_path / "run.npz"
    x = [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]]
    unpacked.gpux.ok("run", "linear:1.0", "--input", f"x={x}", "--backend", "cpu", "-o", str(out))
    expected = dict(np.load(out))
    (tmp_path / "pod-home").mkdir()  # holds the server's log
    grpc_port = free_port()
    server = start_server(
        BoundCLI(tmp_path / "pod-home"),
        str(mounted),
        *args,
        *("--backend", "cpu", "--grpc-port", str(grpc_port)),
    )
    try:
        for path in (ready, live, metrics):
            assert httpx.get(server.url + path).status_code == 200, path
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        tensor = triton.InferInput("x", [2, 4], "FP32")
        tensor.set_data_from_numpy(np.array(x, dtype=np.float32))
        answer = client.infer("linear", [tensor])
        remote = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        over_grpc = triton_grpc.InferInput("x", [2, 4], "FP32")
        over_grpc.set_data_from_numpy(np.array(x, dtype=np.float32))
        grpc_answer = remote.infer("linear", [over_grpc])
        for name, value in expected.items():
            np.testing.assert_array_equal(answer.as_numpy(name), value)
            np.testing.assert_array_equal(grpc_answer.as_numpy(name), value)
    finally:
        assert stop_server(server) == 0, server.log()
    assert _snapshot(models) == before  # read in place: nothing written to the mount
    assert (tmp_path / "pod-home" / "verified").is_dir()  # what it derived went to GPUX_HOME


def test_a_folder_that_is_no_modelcar_is_named(unpacked: Unpacked, tmp_path: Path) -> None:
    gpux = unpacked.gpux
    assert_failure(gpux("serve", str(tmp_path / "nowhere")), 4, "does not exist", "/mnt/models")
    project = make_project(tmp_path / "project", unpacked.model)
    assert_failure(gpux("serve", str(project)), 2, "holds no GPUX image", "gpux build")
    (tmp_path / "empty").mkdir()
    assert_failure(gpux("serve", str(tmp_path / "empty")), 2, "--format modelcar")
