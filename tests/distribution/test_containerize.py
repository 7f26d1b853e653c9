"""``gpux containerize`` against a real registry, on a base made from this machine's Debian
packages (tests/distribution/debian_base.py): podman pulls the image from the registry and runs
it on the host's network, serving on 127.0.0.1, and tritonclient gets what ``gpux run`` gives;
skopeo inspects the image and umoci unpacks it; a changed model re-pushes only the model layer
and the config. podman runs as root here with the flags the issue names (runc: crun refuses
this machine's hybrid cgroups), in a storage of its own under the test's folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure
from tests.conftest import make_project
from tests.distribution.debian_base import write_layout
from tests.distribution.registry_server import Registry, running_registry
from tests.serve.conftest import free_port

pytestmark = [pytest.mark.slow]

TOOLS = ("podman", "skopeo", "umoci")
RUNC = "/usr/sbin/runc"
X = [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]]


@dataclass
class Built:
    gpux: BoundCLI
    registry: Registry
    folder: Path
    base: str
    remote: str
    first: dict[str, object]  # the first push's --json report
    model: Path


def _run(*command: str, timeout: float = 300) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing or not Path(RUNC).is_file() or os.geteuid() != 0:
        pytest.skip(f"needs root and {', '.join(TOOLS)} and runc: run 'make system-deps'")
    folder = tmp_path_factory.mktemp("containerize")
    gpux = BoundCLI(folder / "home")
    model = generated_models.linear(folder / "m" / "linear.onnx")
    make_project(folder / "project", model, "name: linear\nversion: '1.0'\nmodel: ./linear.onnx\n")
    gpux.ok("build", str(folder / "project"), "-q")
    with running_registry(folder / "registry") as registry:
        layout = write_layout(folder / "base-layout")
        base = f"{registry.host}/test/debian-python:3.11"
        _run(
            "skopeo",
            "copy",
            "-q",
            "--dest-tls-verify=false",
            f"oci:{layout}:base",
            f"docker://{base}",
        )
        remote = f"{registry.host}/team/linear-server:1.0"
        first = gpux.json("containerize", "linear:1.0", "-t", remote, "--base", base, "--json")
        yield Built(gpux, registry, folder, base, remote, first, model)


def _podman(built: Built, *args: str, timeout: float = 300) -> str:
    storage = built.folder / "podman"
    return _run(
        "podman",
        *("--root", str(storage / "root"), "--runroot", str(storage / "run")),
        *("--cgroup-manager=cgroupfs", "--runtime", RUNC),
        *args,
        timeout=timeout,
    )


def _expected(built: Built, name: str = "linear:1.0") -> dict[str, np.ndarray]:
    out = built.folder / f"{name.replace(':', '-')}.npz"
    built.gpux.ok("run", name, "--input", f"x={X}", "--backend", "cpu", "-o", str(out))
    return dict(np.load(out))


def test_podman_runs_it_from_the_registry(built: Built) -> None:
    import tritonclient.http as triton

    _podman(built, "pull", "-q", "--tls-verify=false", built.remote)
    port = free_port()
    container = _podman(
        built,
        *("run", "-d", "--network=host"),
        *("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"),
        built.remote,
        *("serve", "/models", "--host", "127.0.0.1", "--port", str(port)),
    ).strip()
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, _podman(built, "logs", container)
            time.sleep(0.3)
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = triton.InferInput("x", [2, 4], "FP32")
        tensor.set_data_from_numpy(np.array(X, dtype=np.float32))
        answer = client.infer("linear", [tensor])
        for name, value in _expected(built).items():
            np.testing.assert_array_equal(answer.as_numpy(name), value)
    finally:
        _podman(built, "rm", "-f", "-t", "2", container)


def test_skopeo_inspects_it_and_umoci_unpacks_it(built: Built) -> None:
    raw = json.loads(
        _run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{built.remote}")
    )
    assert len(raw["layers"]) == 3  # base, runtime, model
    config = json.loads(
        _run("skopeo", "inspect", "--config", "--tls-verify=false", f"docker://{built.remote}")
    )["config"]
    assert config["Entrypoint"] == ["/opt/gpux/bin/gpux"]
    assert config["Cmd"][:2] == ["serve", "/models"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert "/v2/health/ready" in " ".join(config["Healthcheck"]["Test"])
    layout = built.folder / "unpack-layout"
    _run(
        "skopeo",
        "copy",
        "-q",
        "--src-tls-verify=false",
        f"docker://{built.remote}",
        f"oci:{layout}:it",
    )
    bundle = built.folder / "bundle"
    _run("umoci", "unpack", "--image", f"{layout}:it", str(bundle))
    rootfs = bundle / "rootfs"
    index = json.loads((rootfs / "models" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "linear:1.0"
    assert (rootfs / "opt/gpux/site-packages/gpux/cli/main.py").is_file()
    assert (rootfs / "opt/gpux/site-packages/onnxruntime").is_dir()
    assert os.access(rootfs / "opt/gpux/bin/gpux", os.X_OK)


def test_a_changed_model_repushes_only_the_model_layer(built: Built) -> None:
    import onnx
    from onnx import numpy_helper

    again = built.gpux.json(
        "containerize", "linear:1.0", "-t", built.remote, "--base", built.base, "--json"
    )
    assert again["digest"] == built.first["digest"] and again["transferred"] == 0

    model = onnx.load(str(built.model))
    [bias] = [t for t in model.graph.initializer if t.name == "b"]
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 1, "b"))
    changed = built.folder / "project2" / "linear.onnx"
    changed.parent.mkdir()
    onnx.save(model, str(changed))
    make_project(changed.parent, changed, "name: linear\nversion: '2.0'\nmodel: ./linear.onnx\n")
    built.gpux.ok("build", str(changed.parent), "-q")
    second = built.gpux.json(
        "containerize", "linear:2.0", "-t", built.remote.replace(":1.0", ":2.0"), "--base",
        built.base, "--json",
    )  # fmt: skip
    raw = json.loads(
        _run(
            "skopeo", "inspect", "--raw", "--tls-verify=false",
            f"docker://{built.remote.replace(':1.0', ':2.0')}",
        )
    )  # fmt: skip
    model_layer = raw["layers"][-1]
    assert second["uploaded"] == [raw["config"]["digest"], model_layer["digest"]]
    assert second["transferred_bytes"] == raw["config"]["size"] + model_layer["size"]
    assert second["transferred_bytes"] < int(str(built.first["transferred_bytes"])) / 50


def test_containerize_mistakes_are_named(built: Built) -> None:
    gpux, target = built.gpux, built.remote.replace(":1.0", ":bad")
    assert_failure(
        gpux("containerize", "linear:1.0", "-t", target, "--base", built.base, "--runtime", "cuda"),
        2,
        "onnxruntime-gpu",
        "gpux[cuda]",
    )
    assert_failure(
        gpux("containerize", "linear:1.0", "-t", target, "--base", built.base, "--runtime", "rocm"),
        2,
        "--runtime rocm",
    )
    gpux.ok("push", "linear:1.0", f"{built.registry.host}/team/linear:1.0")
    assert_failure(
        gpux(
            "containerize",
            "linear:1.0",
            "-t",
            target,
            "--base",
            f"{built.registry.host}/team/linear:1.0",
        ),
        2,
        "is a GPUX image",
    )
    assert_failure(
        gpux(
            "containerize", "linear:1.0", "-t", target, "--base", built.base, "--python", "python3"
        ),
        2,
        "absolute path",
    )
