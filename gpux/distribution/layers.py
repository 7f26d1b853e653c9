"""Container-image layers written by GPUX: reproducible tar files, hashed while written.

Every member is owned by root and dated the epoch, so the same content gives the same bytes and
the same digest: a registry that has a layer already is never sent it again. Layers are plain
tar (``application/vnd.oci.image.layer.v1.tar``), so a layer's digest is also its ``diff_id``;
model weights barely compress, and skipping gzip keeps a push at disk speed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gpux.store import Image, Store, mediatypes

LAYER = "application/vnd.oci.image.layer.v1.tar"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"


@dataclass(frozen=True)
class BlobFile:
    """A blob written to disk, ready to upload."""

    path: Path
    digest: str
    size: int

    def descriptor(self, media_type: str) -> dict[str, Any]:
        return {"mediaType": media_type, "digest": self.digest, "size": self.size}


def write_tar(path: Path, fill: Callable[[tarfile.TarFile], None]) -> BlobFile:
    """A tar file at ``path`` holding what ``fill`` adds, with its digest and size."""
    with path.open("wb") as raw:
        out = _Hashing(raw)
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            fill(tar)
        raw.flush()
        os.fsync(raw.fileno())
    return BlobFile(path, out.digest(), out.size)


def write_json(path: Path, value: dict[str, Any]) -> BlobFile:
    data = canonical(value)
    path.write_bytes(data)
    return BlobFile(path, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def entry(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    """A member owned by root, dated the epoch: the same input gives the same bytes."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def add_folder(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    tar.addfile(entry(name.rstrip("/") + "/", tarfile.DIRTYPE, mode))


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    tar.addfile(entry(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))


def add_file(tar: tarfile.TarFile, name: str, source: Path, mode: int = 0o644) -> None:
    with source.open("rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        tar.addfile(entry(name, tarfile.REGTYPE, mode, size), stream)


def add_image_layout(tar: tarfile.TarFile, store: Store, image: Image, folder: str) -> None:
    """``image`` as an OCI image layout under ``folder``: a one-image store that
    gpux/store/folder.py reads in place (every blob verified before it is copied)."""
    for name in (folder, f"{folder}/blobs", f"{folder}/blobs/sha256"):
        add_folder(tar, name)
    add_bytes(tar, f"{folder}/oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    add_bytes(tar, f"{folder}/index.json", _layout_index(store, image))
    digests = [image.digest, image.manifest["config"]["digest"]]
    digests += [layer.digest for layer in image.layers]
    for digest in dict.fromkeys(digests):
        blob = store.blobs.verified_path(digest)  # a damaged blob never leaves the store
        add_file(tar, f"{folder}/blobs/sha256/{digest[7:]}", blob)


def image_bytes(image: Image) -> int:
    """The bytes of the image's blobs (what its layout adds to a layer, less tar headers)."""
    return int(image.manifest["config"]["size"]) + sum(layer.size for layer in image.layers)


def _layout_index(store: Store, image: Image) -> bytes:
    """The layout's index.json: the one image under the name it has here (the model's name
    where it is served)."""
    index = {
        "schemaVersion": 2,
        "mediaType": mediatypes.INDEX,
        "manifests": [
            {
                "mediaType": mediatypes.MANIFEST,
                "digest": image.digest,
                "size": store.blobs.size(image.digest),
                "annotations": {mediatypes.REF_NAME: image.name},
            }
        ],
    }
    return json.dumps(index, indent=2).encode()


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
