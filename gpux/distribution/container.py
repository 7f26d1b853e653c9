"""``gpux containerize``: a GPUX image as a standard OCI container image, without a Docker daemon.

The image is the user's base image (``--base REF``, pulled through the registry client) plus
two layers, ordered for reuse:

    base layers            as the base's registry has them (a Python 3 at ``--python``)
    runtime layer          /opt/gpux/site-packages: gpux and the packages it needs at run time,
                           copied from this environment (its ONNX Runtime build: CPU or CUDA),
                           and /opt/gpux/bin/gpux
    model layer            /models: the GPUX image as an OCI image layout (gpux/store/folder.py)

Its entrypoint is ``gpux`` and its command ``serve /models --host 0.0.0.0 --port 8080``: the
port is exposed and a health check asks ``/v2/health/ready``. Layers are reproducible tars
(gpux/distribution/layers.py), so after a model change only the model layer and the config are
new: a push skips the rest. The same image is a KServe runtime image (``gpux serve /mnt/models``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from gpux.distribution.base_python import base_python, check_base_python
from gpux.distribution.layers import (
    IMAGE_CONFIG,
    LAYER,
    BlobFile,
    add_bytes,
    add_file,
    add_folder,
    add_image_layout,
    canonical,
    image_bytes,
    write_json,
    write_tar,
)
from gpux.distribution.registry import Registry
from gpux.distribution.transfer import (
    Progress,
    Remote,
    Report,
    parse_remote,
    put_manifest_checked,
    tag_target,
)
from gpux.errors import SourceError, UsageError
from gpux.store import Image, Store, mediatypes
from gpux.store.blobs import refused_writes

PREFIX = "opt/gpux"
SITE = f"{PREFIX}/site-packages"
MODELS = "models"
PORT = 8080
CONFIG_LIMIT = 4 << 20  # an image config is a few KiB; refused past this
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
# A base's layers keep their bytes; Docker's media types become their OCI equivalents.
LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    LAYER: LAYER,
}
# The ONNX Runtime distribution each --runtime needs in this environment.
RUNTIMES = {"cpu": "onnxruntime", "cuda": "onnxruntime-gpu"}
# What the NVIDIA Container Toolkit reads to give a container the GPUs and the driver's CUDA
# libraries (CUDA base images set the same); a CPU image sets none.
CUDA_ENVIRONMENT = {
    "NVIDIA_VISIBLE_DEVICES": "all",
    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
}
RUNTIME_LABEL = "dev.gpux.runtime"
SOURCE_IMAGE = "dev.gpux.container.image"
SOURCE_DIGEST = "dev.gpux.container.digest"
HEALTH_SECONDS = {"Interval": 10, "Timeout": 3, "StartPeriod": 120}
NANOSECONDS = 1_000_000_000


@dataclass(frozen=True)
class Base:
    remote: Remote
    config: dict[str, Any]
    layers: list[dict[str, Any]]  # descriptors, OCI media types
    config_digest: str = ""


def containerize(
    store: Store,
    name: str,
    target: str,
    *,
    base: str,
    runtime: str = "cpu",
    python: str = "/usr/bin/python3",
    insecure: bool = False,
    allow_http: bool = False,
    on_total: Callable[[int], None] | None = None,
    progress: Progress | None = None,
) -> Report:
    """Write the container image of ``name`` on ``base`` and push it to ``target``."""
    image = store.get(name)
    remote = tag_target(target, "-t REGISTRY/REPOSITORY:TAG")
    if not PurePosixPath(python).is_absolute():
        raise UsageError(f"--python {python} is not an absolute path", "e.g. /usr/bin/python3")
    distributions = runtime_distributions(runtime)
    base_remote = parse_remote(base)
    registry = Registry(remote.host, insecure=insecure, allow_http=allow_http)
    source = (
        registry
        if base_remote.host == remote.host
        else Registry(base_remote.host, insecure=insecure, allow_http=allow_http)
    )
    try:
        found = fetch_base(source, base_remote)
        version = base_python(
            source,
            found.remote.repository,
            found.config,
            found.config_digest,
            found.layers,
            python,
            store.scratch / "cache" / "base-python",
        )
        check_base_python(version, sys.version_info[:2], python, str(base_remote))
        files = list(_runtime_files(distributions))
        remembered = _remembered_runtime(store, files, python)
        if remembered is not None and not registry.has_blob(remote.repository, remembered.digest):
            remembered = None  # the registry lacks it: write it again to upload it
        with _written(store, image, found, files, distributions, python, remembered, runtime) as (
            layers,
            config,
            manifest,
        ):
            digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
            report = Report(str(remote), digest)
            blobs = [*found.layers, config.descriptor(IMAGE_CONFIG)]
            blobs += [layer.descriptor(LAYER) for layer in layers]
            on_disk = {b.digest: b for b in [*layers, config]}
            missing = [b for b in blobs if not registry.has_blob(remote.repository, b["digest"])]
            if on_total:
                on_total(sum(int(b["size"]) for b in missing))
            for blob in missing:
                written = on_disk.get(blob["digest"])
                if written is not None:
                    _upload(registry, remote, written.path, written.digest, progress)
                else:
                    _copy_base_layer(source, found.remote, registry, remote, blob, store, progress)
            report.transferred = len(missing)
            report.transferred_bytes = sum(int(b["size"]) for b in missing)
            report.skipped = len(blobs) - len(missing)
            report.blobs = [str(b["digest"]) for b in missing]
            put_manifest_checked(
                registry,
                remote,
                manifest,
                digest,
                "the image's manifest",
                "the registry rewrote the manifest; push to another registry",
            )
    finally:
        registry.close()
        if source is not registry:
            source.close()
    return report


def _upload(
    registry: Registry, remote: Remote, path: Path, digest: str, progress: Progress | None
) -> None:
    registry.upload_blob(remote.repository, digest, path, progress or (lambda n: None))


def _copy_base_layer(
    source: Registry,
    base: Remote,
    registry: Registry,
    remote: Remote,
    blob: dict[str, Any],
    store: Store,
    progress: Progress | None,
) -> None:
    """A base layer the target lacks: downloaded (hashed on the way) to a temporary file in the
    store, uploaded, removed."""
    size = int(blob["size"])
    with refused_writes(store.root, size):
        store.blobs.tmp.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(dir=store.blobs.tmp, prefix="base-")
    path = Path(name)
    try:
        hasher = hashlib.sha256()
        with open(descriptor, "wb") as handle, refused_writes(store.root, size):
            for chunk in source.blob_chunks(base.repository, blob["digest"], size):
                hasher.update(chunk)
                handle.write(chunk)
        if "sha256:" + hasher.hexdigest() != blob["digest"]:
            raise SourceError(
                f"base layer {blob['digest'][:19]} from {base} does not match its digest",
                "the registry is misbehaving or was tampered with; nothing was pushed",
            )
        _upload(registry, remote, path, blob["digest"], progress)
    finally:
        path.unlink(missing_ok=True)


def fetch_base(registry: Registry, remote: Remote, architecture: str = "amd64") -> Base:
    """The base image's config and layers (the ``linux/architecture`` one of an index)."""
    data, _ = registry.get_manifest(remote.repository, remote.digest or remote.tag)
    manifest = _object(data, f"the manifest of {remote}")
    if manifest.get("mediaType") in (mediatypes.INDEX, DOCKER_LIST) or "manifests" in manifest:
        chosen = [
            m
            for m in manifest.get("manifests", [])
            if isinstance(m, dict)
            and m.get("platform", {}).get("os") == "linux"
            and m.get("platform", {}).get("architecture") == architecture
        ]
        if not chosen:
            raise UsageError(
                f"base image {remote} has no linux/{architecture} image",
                "choose a base built for this architecture",
            )
        data, _ = registry.get_manifest(remote.repository, str(chosen[0]["digest"]))
        manifest = _object(data, f"the linux/{architecture} manifest of {remote}")
    config_descriptor = manifest.get("config")
    layers = manifest.get("layers")
    if not isinstance(config_descriptor, dict) or not isinstance(layers, list):
        raise UsageError(f"{remote} is not a container image", "--base takes a container image")
    if config_descriptor.get("mediaType") == mediatypes.CONFIG:
        raise UsageError(
            f"{remote} is a GPUX image, not a container image", "--base takes a container image"
        )
    size = int(config_descriptor.get("size", 0))
    if not 0 < size <= CONFIG_LIMIT:
        raise SourceError(f"{remote}: its config's size {size} is out of bounds", "check --base")
    config_bytes = b"".join(
        registry.blob_chunks(remote.repository, str(config_descriptor["digest"]), size)
    )
    if "sha256:" + hashlib.sha256(config_bytes).hexdigest() != config_descriptor["digest"]:
        raise SourceError(f"{remote}: its config does not match its digest", "check --base")
    config = _object(config_bytes, f"the config of {remote}")
    converted = []
    for layer in layers:
        media = LAYER_TYPES.get(str(layer.get("mediaType")) if isinstance(layer, dict) else "")
        if media is None or not isinstance(layer.get("digest"), str):
            raise UsageError(
                f"base image {remote} has a layer GPUX cannot carry over: {str(layer)[:200]}",
                "choose a base whose layers are tar, tar+gzip or tar+zstd",
            )
        converted.append(
            {"mediaType": media, "digest": layer["digest"], "size": int(layer["size"])}
        )
    diff_ids = _section(config, "rootfs").get("diff_ids")
    if not isinstance(diff_ids, list) or len(diff_ids) != len(converted):
        raise SourceError(
            f"base image {remote}: its config lists {len(diff_ids or [])} layer(s) and its "
            f"manifest {len(converted)}",
            "the base image is malformed; choose another --base",
        )
    return Base(remote, config, converted, str(config_descriptor["digest"]))


def _section(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def _object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise SourceError(f"{what} is not JSON", "check the reference") from exc
    if not isinstance(value, dict):
        raise SourceError(f"{what} is not a JSON object", "check the reference")
    return value


def runtime_distributions(runtime: str) -> list[importlib.metadata.Distribution]:
    """gpux's run-time requirements (with the ``runtime`` extra), as installed here."""
    if runtime not in RUNTIMES:
        raise UsageError(
            f"--runtime {runtime} is not one GPUX knows", f"use one of {', '.join(RUNTIMES)}"
        )
    wanted = RUNTIMES[runtime]
    try:
        importlib.metadata.distribution(wanted)
    except importlib.metadata.PackageNotFoundError as exc:
        raise UsageError(
            f"--runtime {runtime} needs {wanted} in the environment gpux runs from, which has "
            "another ONNX Runtime build",
            f"run gpux containerize from an environment with gpux[{runtime}] installed",
        ) from exc
    from packaging.requirements import Requirement

    found: dict[str, importlib.metadata.Distribution] = {}

    def walk(name: str, extras: tuple[str, ...]) -> None:
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in found:
            return
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return  # an optional requirement this platform does not install
        found[key] = distribution
        for text in distribution.requires or []:
            requirement = Requirement(text)
            environments = [{"extra": e} for e in extras] or [{"extra": ""}]
            if requirement.marker and not any(requirement.marker.evaluate(e) for e in environments):
                continue
            walk(requirement.name, tuple(requirement.extras))

    walk("gpux", (runtime,))
    _check_extra_installed(runtime, found)
    return [found[key] for key in sorted(found)]


def _check_extra_installed(runtime: str, found: dict[str, importlib.metadata.Distribution]) -> None:
    """Every package gpux[runtime] names is here (gpux[cuda]: onnxruntime-gpu with the CUDA and
    cuDNN wheels, onnxruntime-genai-cuda): a runtime layer without one fails only on the GPU."""
    from packaging.requirements import Requirement

    missing = []
    for text in importlib.metadata.distribution("gpux").requires or []:
        requirement = Requirement(text)
        if not requirement.marker or not requirement.marker.evaluate({"extra": runtime}):
            continue
        if requirement.marker.evaluate({"extra": ""}):
            continue  # a base requirement, not the extra's
        if re.sub(r"[-_.]+", "-", requirement.name).lower() not in found:
            missing.append(str(requirement))
    if missing:
        raise UsageError(
            f"--runtime {runtime} needs {', '.join(missing)} in the environment gpux runs from",
            f"run gpux containerize from an environment with gpux[{runtime}] installed",
        )


def _runtime_files(
    distributions: list[importlib.metadata.Distribution],
) -> Iterator[tuple[str, Path]]:
    """(path in site-packages, file here) for every installed file, sorted, without bytecode."""
    import gpux

    package = Path(gpux.__file__).parent
    files: dict[str, Path] = {}
    for distribution in distributions:
        name = re.sub(r"[-_.]+", "-", distribution.metadata["Name"]).lower()
        if name == "gpux":
            continue  # an editable install's files are the source tree: below
        for listed in distribution.files or []:
            relative = PurePosixPath(str(listed))
            if ".." in relative.parts or relative.is_absolute() or "__pycache__" in relative.parts:
                continue  # scripts in bin/, bytecode: not needed to import
            path = Path(str(distribution.locate_file(listed)))
            if path.is_file():
                files[str(relative)] = path
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files[f"gpux/{path.relative_to(package).as_posix()}"] = path
    yield from sorted(files.items())


def _entry_script(python: str) -> bytes:
    return (
        f"#!{python}\nimport sys\n\nfrom gpux.cli.main import main\n\nsys.exit(main())\n"
    ).encode()


def _runtime_key(files: list[tuple[str, Path]], python: str) -> str:
    """What the runtime layer is made of: every file's path, size and times (git's index
    trusts the same), and the interpreter its script names."""
    described = [python]
    for relative, path in files:
        status = path.stat()
        described.append(f"{relative} {status.st_size} {status.st_mtime_ns} {status.st_ctime_ns}")
    return hashlib.sha256("\n".join(described).encode()).hexdigest()


def _memory(store: Store, files: list[tuple[str, Path]], python: str) -> Path:
    return store.scratch / "cache" / "runtime-layers" / f"{_runtime_key(files, python)}.json"


def _remembered_runtime(
    store: Store, files: list[tuple[str, Path]], python: str
) -> BlobFile | None:
    """The digest and size of a runtime layer written before from the same files: the layer is
    then not written again (hundreds of MB) when the registry has it already."""
    try:
        known = json.loads(_memory(store, files, python).read_text())
        return BlobFile(Path(), str(known["digest"]), int(known["size"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remember_runtime(
    store: Store, files: list[tuple[str, Path]], python: str, layer: BlobFile
) -> None:
    path = _memory(store, files, python)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"digest": layer.digest, "size": layer.size}))
    except OSError:
        pass  # a read-only GPUX_HOME: the layer is written every time


@contextmanager
def _written(
    store: Store,
    image: Image,
    base: Base,
    files: list[tuple[str, Path]],
    distributions: list[importlib.metadata.Distribution],
    python: str,
    remembered: BlobFile | None,
    runtime_name: str = "cpu",
) -> Iterator[tuple[list[BlobFile], BlobFile, bytes]]:
    """The runtime (unless ``remembered``) and model layers and the config in a temporary
    folder of the store, and the manifest's bytes."""
    needed = image_bytes(image) + (4 << 20)
    if remembered is None:
        needed += sum(path.stat().st_size for _, path in files)
    with refused_writes(store.root, needed):
        store.blobs.tmp.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="container-", dir=store.blobs.tmp))
    try:
        with refused_writes(store.root, needed):

            def runtime_layer(tar: tarfile.TarFile) -> None:
                for name in ("opt", PREFIX, f"{PREFIX}/bin", SITE):
                    add_folder(tar, name)
                add_bytes(tar, f"{PREFIX}/bin/gpux", _entry_script(python), 0o755)
                made = {SITE}
                for relative, path in files:
                    parent = PurePosixPath(SITE, relative).parent
                    for folder_name in reversed([parent, *parent.parents]):
                        if str(folder_name) not in made and str(folder_name).startswith(SITE):
                            add_folder(tar, str(folder_name))
                            made.add(str(folder_name))
                    executable = path.stat().st_mode & 0o111
                    add_file(tar, f"{SITE}/{relative}", path, 0o755 if executable else 0o644)
                add_folder(tar, "tmp", 0o1777)

            if remembered is None:
                runtime = write_tar(folder / "runtime.tar", runtime_layer)
                _remember_runtime(store, files, python, runtime)
            else:
                runtime = remembered
            model = write_tar(
                folder / "model.tar", lambda tar: add_image_layout(tar, store, image, MODELS)
            )
            config = write_json(
                folder / "config.json",
                _config(
                    base, image, [runtime.digest, model.digest], python, distributions, runtime_name
                ),
            )
        manifest = {
            "schemaVersion": 2,
            "mediaType": mediatypes.MANIFEST,
            "config": config.descriptor(IMAGE_CONFIG),
            "layers": [*base.layers, runtime.descriptor(LAYER), model.descriptor(LAYER)],
            "annotations": _annotations(image),
        }
        yield [runtime, model], config, canonical(manifest)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _annotations(image: Image) -> dict[str, str]:
    annotations = {SOURCE_IMAGE: image.name, SOURCE_DIGEST: image.digest}
    if image.created:
        annotations[mediatypes.CREATED] = image.created
    return annotations


def _config(
    base: Base,
    image: Image,
    diff_ids: list[str],
    python: str,
    distributions: list[importlib.metadata.Distribution],
    runtime: str = "cpu",
) -> dict[str, Any]:
    inherited = _section(base.config, "config")
    device_environment = CUDA_ENVIRONMENT if runtime == "cuda" else {}
    environment = [
        e
        for e in inherited.get("Env") or []
        if isinstance(e, str)
        and not e.startswith("PATH=")
        and e.partition("=")[0] not in device_environment  # the base's value would come twice
    ]
    path = next(
        (e[5:] for e in inherited.get("Env") or [] if isinstance(e, str) and e.startswith("PATH=")),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    )
    environment += [
        f"PATH=/{PREFIX}/bin:{path}",
        f"PYTHONPATH=/{SITE}",
        "PYTHONNOUSERSITE=1",
        "GPUX_HOME=/tmp/gpux",  # writable for any user; what a load derives goes there
        "GPUX_NO_PROGRESS=1",
        *(f"{key}={value}" for key, value in device_environment.items()),
    ]
    versions = {d.metadata["Name"]: d.version for d in distributions}
    ready = f"http://127.0.0.1:{PORT}/v2/health/ready"
    rootfs = _section(base.config, "rootfs")
    history = [h for h in base.config.get("history") or [] if isinstance(h, dict)]
    ours = {
        "created_by": "gpux containerize",
        **({"created": image.created} if image.created else {}),
    }
    config: dict[str, Any] = {
        "architecture": base.config.get("architecture", "amd64"),
        "os": base.config.get("os", "linux"),
        "config": {
            "Env": environment,
            "Entrypoint": [f"/{PREFIX}/bin/gpux"],
            "Cmd": ["serve", f"/{MODELS}", "--host", "0.0.0.0", "--port", str(PORT)],
            "ExposedPorts": {f"{PORT}/tcp": {}},
            "WorkingDir": "/",
            "Labels": {
                **_annotations(image),
                RUNTIME_LABEL: runtime,
                "dev.gpux.runtime.python": python,
                "dev.gpux.runtime.onnxruntime": next(
                    (v for k, v in versions.items() if k in RUNTIMES.values()), ""
                ),
                "dev.gpux.runtime.python-version": f"{sys.version_info[0]}.{sys.version_info[1]}",
            },
            # Docker's and podman's health check (OCI image configs carry no such field; tools
            # that know it read it): the server is ready once its models are loaded and warm.
            "Healthcheck": {
                "Test": [
                    "CMD",
                    python,
                    "-c",
                    f"import urllib.request; urllib.request.urlopen('{ready}', timeout=2)",
                ],
                **{k: v * NANOSECONDS for k, v in HEALTH_SECONDS.items()},
                "Retries": 3,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [*rootfs.get("diff_ids", []), *diff_ids]},
        "history": [*history, {**ours, "comment": "runtime"}, {**ours, "comment": "model"}],
    }
    if image.created:
        config["created"] = image.created
    return config
