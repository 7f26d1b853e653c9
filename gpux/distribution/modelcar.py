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
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gpux.distribution.layers import (
    IMAGE_CONFIG,
    LAYER,
    BlobFile,
    add_file,
    add_folder,
    add_image_layout,
    canonical,
    entry,
    image_bytes,
    write_json,
    write_tar,
)
from gpux.distribution.registry import Registry
from gpux.distribution.transfer import (
    MODELCAR_OF,
    Progress,
    Report,
    put_manifest_checked,
    tag_target,
)
from gpux.errors import UsageError
from gpux.store import Image, Store, mediatypes
from gpux.store.blobs import refused_writes

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
    remote = tag_target(target, "REGISTRY/REPOSITORY:TAG")
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
            put_manifest_checked(
                registry,
                remote,
                manifest,
                report.digest,
                "the modelcar's manifest",
                "the registry rewrote the manifest; push to another registry",
            )
    finally:
        registry.close()
    return report


@contextmanager
def _written(
    store: Store, image: Image, shell: Shell
) -> Iterator[tuple[BlobFile, BlobFile, bytes]]:
    """The layer and config as files in the store's tmp folder (removed afterwards), and the
    manifest's bytes."""
    needed = image_bytes(image) + shell.path.stat().st_size + (1 << 20)
    with refused_writes(store.root, needed):
        store.blobs.tmp.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="modelcar-", dir=store.blobs.tmp))
    try:
        with refused_writes(store.root, needed):

            def fill(tar: tarfile.TarFile) -> None:
                add_folder(tar, "bin")
                add_file(tar, "bin/busybox", shell.path, 0o755)
                for applet in APPLETS:
                    tar.addfile(entry(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"))
                add_image_layout(tar, store, image, MODELS)

            layer = write_tar(folder / "layer.tar", fill)
            config = write_json(folder / "config.json", _image_config(image, shell, layer.digest))
        manifest = {
            "schemaVersion": 2,
            "mediaType": mediatypes.MANIFEST,
            "config": config.descriptor(IMAGE_CONFIG),
            "layers": [layer.descriptor(LAYER)],
            "annotations": _annotations(image),
        }
        yield layer, config, canonical(manifest)
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
