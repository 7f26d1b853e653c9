"""``gpux push --format modelcar``: a GPUX image as a KServe modelcar.

A modelcar is an ordinary OCI container image that KServe runs beside the serving container
(``storageUri: oci://REF``): it starts it as ``sh -c "ln -s /proc/$$/root/models /mnt/models &&
sleep infinity"``, so the image needs the model under ``/models`` and a shell with ``ln`` and
``sleep``. Ours has one plain (uncompressed) filesystem layer:

    bin/busybox            a static busybox (Debian's busybox-static), the only program
    bin/sh, ln, sleep...   links to it
    models/                the GPUX image as an OCI image layout, exactly as the store keeps it:
      oci-layout, index.json, blobs/sha256/<hex>

``/models`` is therefore a one-image store that ``gpux serve /mnt/models`` reads in place
(gpux/store/folder.py): digests still verify every blob, and nothing is converted. The layer is
written with fixed owners, modes and times, so the same image and busybox give the same modelcar
digest, and a second push uploads nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gpux.distribution.registry import Registry
from gpux.distribution.transfer import MODELCAR_OF, Progress, Report, parse_remote
from gpux.errors import StoreError, UsageError
from gpux.store import Image, Store, mediatypes
from gpux.store.blobs import refused_writes

LAYER = "application/vnd.oci.image.layer.v1.tar"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
MODELS = "models"
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static; the plain busybox package links glibc
# The programs KServe's modelcar and modelcar-init containers run, and a few to look around
# with `kubectl exec`: each a link to busybox, which picks its applet from the name it is run by.
APPLETS = ("sh", "ln", "sleep", "echo", "true", "ls", "cat")
SOURCE_IMAGE = MODELCAR_OF
SOURCE_DIGEST = "dev.gpux.modelcar.digest"
# ELF e_machine -> OCI architecture: the modelcar runs on the nodes its busybox runs on.
ARCHITECTURES = {0x3E: "amd64", 0xB7: "arm64", 0x15: "ppc64le", 0x16: "s390x", 0xF3: "riscv64"}


@dataclass(frozen=True)
class Shell:
    path: Path
    architecture: str


def find_shell(path: Path | None = None) -> Shell:
    """The static busybox to put in the image (``path``, else /bin/busybox), checked to be one:
    a dynamically linked binary would not start in an image without a C library."""
    chosen = path or BUSYBOX
    hint = (
        "install Debian's busybox-static (apt-get install busybox-static) or pass "
        "--busybox PATH to a statically linked busybox"
    )
    try:
        with chosen.open("rb") as stream:
            header = stream.read(64)
            architecture, interpreted = _elf_facts(stream, header)
    except OSError as exc:
        raise UsageError(
            f"a modelcar needs a static busybox for its shell, and {chosen} cannot be read "
            f"({exc.strerror})",
            hint,
        ) from exc
    if architecture is None:
        raise UsageError(f"{chosen} is not a Linux executable (ELF) GPUX knows", hint)
    if interpreted:
        raise UsageError(
            f"{chosen} is dynamically linked; a modelcar holds no C library for it", hint
        )
    return Shell(chosen, architecture)


def _elf_facts(stream: IO[bytes], header: bytes) -> tuple[str | None, bool]:
    """(architecture, whether it names a program interpreter, i.e. is dynamically linked)."""
    if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
        return None, False  # only 64-bit little-endian: the architectures above
    machine = int.from_bytes(header[18:20], "little")
    table = int.from_bytes(header[32:40], "little")
    entry_size = int.from_bytes(header[54:56], "little")
    count = int.from_bytes(header[56:58], "little")
    if entry_size < 4 or count > 4096:
        return None, False
    stream.seek(table)
    entries = stream.read(entry_size * count)
    interpreted = any(
        int.from_bytes(entries[i : i + 4], "little") == 3  # PT_INTERP
        for i in range(0, len(entries) - 3, entry_size)
    )
    return ARCHITECTURES.get(machine), interpreted


def push_modelcar(
    store: Store,
    name: str,
    target: str,
    *,
    busybox: Path | None = None,
    insecure: bool = False,
    allow_http: bool = False,
    on_total: Callable[[int], None] | None = None,
    progress: Progress | None = None,
) -> Report:
    """Write the modelcar of image ``name`` and push it to ``target`` (only missing blobs)."""
    image = store.get(name)
    remote = parse_remote(target)
    if remote.digest:
        raise UsageError(
            f"'{target}' names a digest; a pushed image gets its digest from its content",
            "push to a tag: REGISTRY/REPOSITORY:TAG",
        )
    shell = find_shell(busybox)
    registry = Registry(remote.host, insecure=insecure, allow_http=allow_http)
    try:
        with _written(store, image, shell) as (layer, config, manifest):
            report = Report(str(remote), "sha256:" + hashlib.sha256(manifest).hexdigest())
            blobs = [config, layer]
            missing = [b for b in blobs if not registry.has_blob(remote.repository, b.digest)]
            if on_total:
                on_total(sum(b.size for b in missing))
            for blob in missing:
                registry.upload_blob(
                    remote.repository, blob.digest, blob.path, progress or (lambda n: None)
                )
            report.transferred = len(missing)
            report.transferred_bytes = sum(b.size for b in missing)
            report.skipped = len(blobs) - len(missing)
            pushed = registry.put_manifest(
                remote.repository, remote.tag, manifest, mediatypes.MANIFEST
            )
            if pushed and pushed != report.digest:
                raise StoreError(
                    f"the registry stored the modelcar's manifest as {pushed}, not {report.digest}",
                    "the registry rewrote the manifest; push to another registry",
                )
    finally:
        registry.close()
    return report


@dataclass(frozen=True)
class _Blob:
    path: Path
    digest: str
    size: int


@contextmanager
def _written(store: Store, image: Image, shell: Shell) -> Iterator[tuple[_Blob, _Blob, bytes]]:
    """The layer and config as files in the store's tmp folder (removed afterwards), and the
    manifest's bytes."""
    sizes = [int(image.manifest["config"]["size"])] + [layer.size for layer in image.layers]
    needed = sum(sizes) + shell.path.stat().st_size + (1 << 20)
    with refused_writes(store.root, needed):
        store.blobs.tmp.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="modelcar-", dir=store.blobs.tmp))
    try:
        with refused_writes(store.root, needed):
            layer = _write_layer(store, image, shell, folder / "layer.tar")
            config_bytes = _canonical(_image_config(image, shell, layer.digest))
            (folder / "config.json").write_bytes(config_bytes)
        config = _Blob(
            folder / "config.json",
            "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
            len(config_bytes),
        )
        manifest = {
            "schemaVersion": 2,
            "mediaType": mediatypes.MANIFEST,
            "config": {"mediaType": IMAGE_CONFIG, "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": LAYER, "digest": layer.digest, "size": layer.size}],
            "annotations": _annotations(image),
        }
        yield layer, config, _canonical(manifest)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _annotations(image: Image) -> dict[str, str]:
    annotations = {SOURCE_IMAGE: image.name, SOURCE_DIGEST: image.digest}
    if image.created:
        annotations[mediatypes.CREATED] = image.created
    return annotations


def _image_config(image: Image, shell: Shell, layer_digest: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "architecture": shell.architecture,
        "os": "linux",
        "config": {"Cmd": ["sh"], "WorkingDir": "/", "Labels": _annotations(image)},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},  # uncompressed: the same
        "history": [{"created_by": "gpux push --format modelcar"}],
    }
    if image.created:
        config["created"] = image.created
        config["history"][0]["created"] = image.created
    return config


def _write_layer(store: Store, image: Image, shell: Shell, path: Path) -> _Blob:
    with path.open("wb") as raw:
        out = _Hashing(raw)
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            tar.addfile(_entry("bin/", tarfile.DIRTYPE, 0o755))
            with shell.path.open("rb") as binary:
                size = os.fstat(binary.fileno()).st_size
                tar.addfile(_entry("bin/busybox", tarfile.REGTYPE, 0o755, size), binary)
            for applet in APPLETS:
                tar.addfile(_entry(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"))
            for folder in (MODELS, f"{MODELS}/blobs", f"{MODELS}/blobs/sha256"):
                tar.addfile(_entry(f"{folder}/", tarfile.DIRTYPE, 0o755))
            _add_bytes(tar, f"{MODELS}/oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
            _add_bytes(tar, f"{MODELS}/index.json", _layout_index(image))
            digests = [image.digest, image.manifest["config"]["digest"]]
            digests += [layer.digest for layer in image.layers]
            for digest in dict.fromkeys(digests):
                blob = store.blobs.verified_path(digest)  # a damaged blob never leaves the store
                with blob.open("rb") as stream:
                    size = os.fstat(stream.fileno()).st_size
                    entry = _entry(f"{MODELS}/blobs/sha256/{digest[7:]}", tarfile.REGTYPE, 0o644)
                    entry.size = size
                    tar.addfile(entry, stream)
        raw.flush()
        os.fsync(raw.fileno())
    return _Blob(path, out.digest(), out.size)


def _layout_index(image: Image) -> bytes:
    """The layout's index.json: the one image under the name it has here (the model's name
    where it is served)."""
    manifest_size = image.store.blobs.size(image.digest)
    index = {
        "schemaVersion": 2,
        "mediaType": mediatypes.INDEX,
        "manifests": [
            {
                "mediaType": mediatypes.MANIFEST,
                "digest": image.digest,
                "size": manifest_size,
                "annotations": {mediatypes.REF_NAME: image.name},
            }
        ],
    }
    return json.dumps(index, indent=2).encode()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_entry(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))


def _entry(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    """A member owned by root, dated the epoch: the same input gives the same bytes."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def _canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes to ``out``."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self._out.write(view)
        self.size += len(view)
        return len(view)

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
