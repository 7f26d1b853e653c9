"""A model that is a folder of files (an onnxruntime-genai model) stored as one layer per file.

Each file is a blob like any other, so two images that share a tokenizer or the weights store
them once, and push/pull/verify treat them as they treat every layer. The layer's title is the
file's path inside the folder. Engines that read a folder by file names get one laid out under
``$GPUX_HOME/cache/folders/<manifest digest>/``: symbolic links to the verified blobs (a copy
where links are refused), made in a temporary folder and renamed into place, so a reader never
sees half a folder.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from gpux.errors import StoreError

if TYPE_CHECKING:
    from gpux.store.images import Image


LAYOUTS = "cache/folders"


def layout_name(digest: str) -> str:
    """The folder of an image's layout: ``sha256-`` and 16 hex digits of its manifest digest."""
    return digest.replace(":", "-")[:23]


def stale_layouts(root: Path, kept: set[str]) -> list[Path]:
    """Layouts under the store ``root`` whose image is gone (``kept``: the digests in use)."""
    names = {layout_name(digest) for digest in kept}
    folder = root / LAYOUTS
    if not folder.is_dir():
        return []
    return [path for path in sorted(folder.iterdir()) if path.name not in names]


def check_title(title: str) -> str:
    """A file's path inside its folder, refused when it could land outside it."""
    normal = posixpath.normpath(title)
    if (
        not title
        or normal != title
        or normal.startswith(("../", "/"))
        or normal in (".", "..")
        or "\\" in title
        or "\0" in title
    ):
        raise StoreError(
            f"folder layer '{title}' is not a plain relative path",
            "rebuild the image with 'gpux build', or pull it again from a registry you trust",
        )
    return title


def layout_folder(image: Image, media_type: str) -> Path:
    """The image's ``media_type`` layers as a folder of files named by their titles."""
    layers = [layer for layer in image.layers if layer.media_type == media_type]
    if not layers:
        raise StoreError(
            f"image '{image.name}' has no {media_type} layers",
            "rebuild the image with 'gpux build'",
        )
    blobs = {
        check_title(layer.title or ""): image.store.blobs.verified_path(layer.digest)
        for layer in layers
    }
    root = image.store.scratch / LAYOUTS
    target = root / layout_name(image.digest)
    if _intact(target, blobs):
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".folder-", dir=root))
    try:
        for title, blob in blobs.items():
            path = staging / title
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                path.symlink_to(blob)
            except OSError:  # no symbolic links here (Windows without the privilege)
                shutil.copyfile(blob, path)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(staging, target)
        except OSError:
            if not _intact(target, blobs):  # another process laid it out meanwhile, or failed
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _intact(target: Path, blobs: dict[str, Path]) -> bool:
    """Every file is there and points at its blob (or, copied, has its size)."""
    if not target.is_dir():
        return False
    for title, blob in blobs.items():
        path = target / title
        if path.is_symlink():
            if Path(os.readlink(path)) != blob:
                return False
        elif not path.is_file() or path.stat().st_size != blob.stat().st_size:
            return False
    return True
