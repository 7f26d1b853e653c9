"""``gpux containerize`` refuses a base it cannot run on before it builds anything, and a
``--runtime cuda`` image carries what a GPU container needs. Fast: tiny bases of a few files,
pushed to a real registry with GPUX's own client; the refusals come before any layer is written
(tests/distribution/test_containerize.py builds and runs whole images on a Debian base)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure
from tests.conftest import make_project
from tests.distribution.registry_server import Registry, running_registry

HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"
OTHER = f"{sys.version_info[0]}.{sys.version_info[1] + 7}"

# (name, kind, link target or None): a tar layer's entries, folders first
Entry = tuple[str, bytes, str | None]


def layer(entries: list[Entry], compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, target in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.DIRTYPE:
                info.mode = 0o755
            elif target is not None:
                info.linkname = target
            else:
                data = b"#!/bin/false\n"
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
                continue
            tar.addfile(info)
    data = buffer.getvalue()
    return gzip.compress(data, mtime=0) if compressed else data


def push_base(
    registry: Registry,
    tag: str,
    layers: list[bytes],
    environment: list[str] | None = None,
    compressed: bool = False,
) -> str:
    """A base image of ``layers`` at ``REGISTRY/test/base:tag``, pushed with GPUX's client."""
    from gpux.distribution.registry import Registry as Client

    client = Client(registry.host, allow_http=True)
    folder = Path(registry.storage).parent / "blobs-to-push"
    folder.mkdir(exist_ok=True)

    def put(data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = folder / digest[7:]
        path.write_bytes(data)
        client.upload_blob("test/base", digest, path, lambda n: None)
        return {"digest": digest, "size": len(data)}

    def plain(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(gzip.decompress(data) if compressed else data).hexdigest()

    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin", *(environment or [])]},
        "rootfs": {"type": "layers", "diff_ids": [plain(d) for d in layers]},
    }
    media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compressed else "")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **put(json.dumps(config).encode()),
        },
        "layers": [{"mediaType": media, **put(d)} for d in layers],
    }
    client.put_manifest("test/base", tag, json.dumps(manifest).encode(), manifest["mediaType"])
    client.close()
    return f"{registry.host}/test/base:{tag}"


FOLDERS: list[Entry] = [("usr", tarfile.DIRTYPE, None), ("usr/bin", tarfile.DIRTYPE, None)]


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BoundCLI, Registry]]:
    folder = tmp_path_factory.mktemp("containerize-base")
    gpux = BoundCLI(folder / "home")
    model = generated_models.linear(folder / "m" / "linear.onnx")
    make_project(folder / "project", model, "name: linear\nversion: '1.0'\nmodel: ./linear.onnx\n")
    gpux.ok("build", str(folder / "project"), "-q")
    with running_registry(folder / "registry") as registry:
        yield gpux, registry


def containerize(gpux: BoundCLI, registry: Registry, base: str, *flags: str) -> object:
    target = f"{registry.host}/team/never:1"
    return gpux("containerize", "linear:1.0", "-t", target, "--base", base, "--allow-http", *flags)


def refused_before_pushing(registry: Registry) -> None:
    """Nothing of the refused image reached the target repository."""
    assert not (Path(registry.storage) / "docker/registry/v2/repositories/team/never").exists()


def test_a_base_with_another_python_is_refused_naming_both_versions(
    setting: tuple[BoundCLI, Registry],
) -> None:
    gpux, registry = setting
    other = push_base(
        registry,
        "other-python",
        [layer([*FOLDERS, ("usr/bin/python3", tarfile.SYMTYPE, f"python{OTHER}"),
                (f"usr/bin/python{OTHER}", tarfile.REGTYPE, None)])],
    )  # fmt: skip
    assert_failure(
        containerize(gpux, registry, other),
        2,
        f"has Python {OTHER} at /usr/bin/python3",
        f"built for Python {HERE}",
        f"choose a base with Python {HERE}",
    )
    refused_before_pushing(registry)
    # The official python images say it in their config, for their /usr/local/bin/python3:
    # believed for that path (the layer has no Python at all), not for another.
    said = push_base(registry, "said", [layer(FOLDERS)], [f"PYTHON_VERSION={OTHER}.2"])
    local = "/usr/local/bin/python3"
    assert_failure(
        containerize(gpux, registry, said, "--python", local), 2, f"has Python {OTHER} at {local}"
    )
    assert_failure(containerize(gpux, registry, said), 2, "has no Python at /usr/bin/python3")


def test_a_base_without_python_at_the_path_is_refused(
    setting: tuple[BoundCLI, Registry],
) -> None:
    gpux, registry = setting
    bare = push_base(registry, "bare", [layer([*FOLDERS, ("etc", tarfile.DIRTYPE, None)])])
    assert_failure(
        containerize(gpux, registry, bare),
        2,
        "has no Python at /usr/bin/python3",
        "--python",
    )
    # A later layer's whiteout removes the interpreter an earlier one had.
    python = [*FOLDERS, ("usr/bin/python3", tarfile.SYMTYPE, f"python{HERE}"),
              (f"usr/bin/python{HERE}", tarfile.REGTYPE, None)]  # fmt: skip
    removed = push_base(
        registry,
        "whiteout",
        [layer(python), layer([("usr/bin/.wh.python3", tarfile.REGTYPE, None)])],
    )
    assert_failure(containerize(gpux, registry, removed), 2, "has no Python at /usr/bin/python3")
    refused_before_pushing(registry)


def test_the_python_is_found_through_merged_usr_and_its_library_folder(
    setting: tuple[BoundCLI, Registry],
) -> None:
    """/bin -> usr/bin, and a regular file python3 whose version is its usr/lib/pythonX.Y, in a
    gzip layer: found, so the base of another minor version is refused by that version."""
    gpux, registry = setting
    entries = [*FOLDERS, ("bin", tarfile.SYMTYPE, "usr/bin"),
               ("usr/bin/python3", tarfile.REGTYPE, None), ("usr/lib", tarfile.DIRTYPE, None),
               (f"usr/lib/python{OTHER}", tarfile.DIRTYPE, None)]  # fmt: skip
    base = push_base(registry, "merged", [layer(entries, compressed=True)], compressed=True)
    assert_failure(
        containerize(gpux, registry, base, "--python", "/bin/python3"),
        2,
        f"has Python {OTHER} at /bin/python3",
    )


def test_a_cuda_image_config_asks_the_container_runtime_for_gpus(
    setting: tuple[BoundCLI, Registry],
) -> None:
    """The config ``--runtime cuda`` writes (onnxruntime-gpu is not installed here, so the
    config is made in-process): the NVIDIA Container Toolkit's variables, replacing the base's
    own, and the runtime recorded as a label; a CPU image has neither."""
    from gpux.distribution.container import Base, _config, runtime_distributions
    from gpux.distribution.transfer import parse_remote
    from gpux.store import Store

    gpux, registry = setting
    image = Store(gpux.home).get("linear:1.0")
    base_config = {
        "config": {"Env": ["PATH=/usr/bin", "NVIDIA_VISIBLE_DEVICES=void", "LANG=C.UTF-8"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]},
    }
    base = Base(parse_remote(f"{registry.host}/test/cuda:12"), base_config, [], "")
    distributions = runtime_distributions("cpu")
    cuda = _config(base, image, ["sha256:" + "1" * 64], "/usr/bin/python3", distributions, "cuda")
    environment = cuda["config"]["Env"]
    assert "NVIDIA_VISIBLE_DEVICES=all" in environment
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in environment
    assert "NVIDIA_VISIBLE_DEVICES=void" not in environment and "LANG=C.UTF-8" in environment
    assert cuda["config"]["Labels"]["dev.gpux.runtime"] == "cuda"
    cpu = _config(base, image, ["sha256:" + "1" * 64], "/usr/bin/python3", distributions, "cpu")
    assert not any(e.startswith("NVIDIA_DRIVER") for e in cpu["config"]["Env"])
    assert cpu["config"]["Labels"]["dev.gpux.runtime"] == "cpu"


def test_cuda_needs_every_package_of_gpux_cuda_here(setting: tuple[BoundCLI, Registry]) -> None:
    gpux, registry = setting
    base = push_base(registry, "for-cuda", [layer(FOLDERS)])
    assert_failure(
        containerize(gpux, registry, base, "--runtime", "cuda"), 2, "onnxruntime-gpu", "gpux[cuda]"
    )
