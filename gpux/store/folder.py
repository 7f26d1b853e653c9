"""A model folder: images read in place from an OCI image layout that is not the store.

KServe mounts a modelcar's ``/models`` at ``/mnt/models`` in the serving container, read-only.
``gpux push --format modelcar`` (gpux/distribution/modelcar.py) writes there the image as the
store keeps it (``oci-layout``, ``index.json``, ``blobs/sha256/``), so ``gpux serve /mnt/models``
opens that folder as a store of its own: every blob is still checked against its digest, and
nothing is copied. What a load derives (stamps of verified blobs, TensorRT engines, unpacked
handler code) goes under ``$GPUX_HOME``, never into the folder. An image read from a folder was
not built on this machine: its handler code needs ``--trust-code``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from gpux import env
from gpux.errors import NotFoundError, StoreError, UsageError
from gpux.store.images import Image, Store

MOUNTED = "/mnt/models"  # where KServe mounts a model (a modelcar's /models among them)


def is_folder(text: str) -> bool:
    """Whether ``text`` names a model folder rather than an image: a path written as one
    (``/``, ``./``, ``../``, ``~``), or an existing folder that holds an image layout."""
    if text in (".", "..") or text.startswith(("/", "./", "../", "~")):
        return True
    path = Path(text)
    return path.is_dir() and (path / "oci-layout").is_file()


def open_folder(text: str) -> list[Image]:
    """The images a model folder names (one for a modelcar), checked as ``Store.get`` checks."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise NotFoundError(
            f"model folder {path} does not exist"
            if not path.exists()
            else f"{path} is a file, not a model folder",
            "give the folder a modelcar mounts (KServe: /mnt/models), or an image name",
        )
    if not (path / "oci-layout").is_file() or not (path / "index.json").is_file():
        project = (path / "GPUXfile").is_file()
        raise UsageError(
            f"{path} holds no GPUX image (no oci-layout and index.json)",
            f"build it first: gpux build {path}, then serve the image"
            if project
            else "give the folder of a modelcar made by 'gpux push --format modelcar' "
            f"(KServe mounts it at {MOUNTED})",
        )
    store = Store(Path(absolute(text)), scratch=env.home())
    names = [name for names in store.manifests().values() for name in names]
    if not names:
        raise StoreError(
            f"model folder {path} names no image in its index.json",
            "push the image again with 'gpux push NAME REF --format modelcar'",
        )
    return [store.get(name) for name in names]


def images(texts: Iterable[str], store: Store | None = None) -> list[Image]:
    """Images by name from ``store`` (default: ``$GPUX_HOME``'s), and those of model folders."""
    found: list[Image] = []
    for text in texts:
        if is_folder(text):
            found.extend(open_folder(text))
        else:
            found.append((store or Store()).get(text))
    return found


def absolute(text: str) -> str:
    """A model folder as an absolute path (a detached server runs elsewhere); names as given.

    Symbolic links stay unresolved: KServe's /mnt/models links to ``/proc/PID/root/models``,
    the modelcar's own root, which resolving would turn into ``/models`` of this container."""
    return os.path.abspath(os.path.expanduser(text)) if is_folder(text) else text
