"""An image's handler code on disk, and whether this machine built it.

The code layer is a tar (gpux/builder/handler_code.py). It is unpacked once per digest under
``$GPUX_HOME/cache/handlers/`` and imported from there. A pulled or loaded image is outside
input, so unpacking accepts only regular files under the handler's own name, bounded in count
and size, and a folder appears only complete (unpacked beside it, then renamed).

Images written by ``write_image`` (a build on this machine) are recorded under
``$GPUX_HOME/built/``; a pull or load adopts a manifest and is not. Running code from an image
that is not recorded needs the user's consent (``--trust-code``).
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from gpux.errors import StoreError
from gpux.store import mediatypes

if TYPE_CHECKING:
    from gpux.store.images import Image, Store

MAX_FILES = 500
MAX_BYTES = 32 * 1024 * 1024  # as gpux/builder/handler_code.py packs them


def mark_built(store: Store, manifest_digest: str) -> None:
    folder = store.root / "built"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / manifest_digest.removeprefix("sha256:")).touch()


def built_here(image: Image) -> bool:
    """Whether ``gpux build`` on this machine wrote this exact manifest."""
    return (image.store.root / "built" / image.digest.removeprefix("sha256:")).is_file()


def handler_entry(image: Image) -> str | None:
    """The module file or package folder of the image's handler, or None without one."""
    if image.layer(mediatypes.HANDLER) is None:
        return None
    entry = image.config.get("handler", {}).get("entry") if isinstance(image.config, dict) else None
    if not isinstance(entry, str) or not _safe_top(entry):
        raise StoreError(
            f"image '{image.name}' holds handler code but does not say what to import",
            "rebuild the image with 'gpux build', or pull it again",
        )
    return entry


def code_files(image: Image) -> list[str]:
    """The files of the image's handler code (of every model, for a chain: ``KEY/path``)."""
    if image.components:
        return [
            f"{key}/{path}" for key in image.components for path in code_files(image.component(key))
        ]
    if handler_entry(image) is None:
        return []
    files = image.config.get("handler", {}).get("files", [])
    listed = (
        [str(f.get("path")) for f in files if isinstance(f, dict)]
        if isinstance(files, list)
        else []
    )
    return listed or [str(handler_entry(image))]


def sources(image: Image) -> list[tuple[str, str]]:
    """Each file of the image's handler code with its text (``gpux inspect --code``), read from
    the layer without unpacking it; a file that is not UTF-8 text shows as a placeholder."""
    entry = handler_entry(image)
    if entry is None:
        return []
    archive = image.layer_path(mediatypes.HANDLER)
    found: list[tuple[str, str]] = []
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for member in tar.getmembers()[:MAX_FILES]:
                stream = tar.extractfile(member) if member.isfile() else None
                if stream is None or member.size > MAX_BYTES:
                    continue
                data = stream.read()
                try:
                    found.append((member.name, data.decode("utf-8")))
                except UnicodeDecodeError:
                    found.append((member.name, f"<{len(data)} bytes of binary data>"))
    except (tarfile.TarError, OSError) as exc:
        raise StoreError(
            f"image '{image.name}': its handler code cannot be read ({exc})",
            "the image was not made by 'gpux build'; pull it again or rebuild it",
        ) from exc
    return found


def unpacked(image: Image) -> Path:
    """The folder holding the image's handler code (``<folder>/<entry>``), unpacked on first use."""
    layer = image.layer(mediatypes.HANDLER)
    entry = handler_entry(image)
    assert layer is not None and entry is not None
    folder = image.store.scratch / "cache" / "handlers" / layer.digest.removeprefix("sha256:")[:32]
    if (folder / entry).exists():
        return folder
    archive = image.layer_path(mediatypes.HANDLER)  # verified against its digest
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=folder.parent))
    try:
        unpack(archive, staging, entry, image.name)
        try:
            staging.rename(folder)
        except OSError:  # another process unpacked it first: theirs is as good
            if not (folder / entry).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def unpack(archive: Path, destination: Path, entry: str, name: str) -> None:
    """Extract the handler tar into ``destination``: regular files under ``entry`` only."""

    def refuse(problem: str) -> StoreError:
        return StoreError(
            f"image '{name}': its handler code {problem}",
            "the image was not made by 'gpux build'; do not run it, or rebuild it from source",
        )

    try:
        with tarfile.open(archive, mode="r:") as tar:
            members = tar.getmembers()
            if len(members) > MAX_FILES:
                raise refuse(f"holds {len(members)} files (at most {MAX_FILES})")
            if sum(m.size for m in members) > MAX_BYTES:
                raise refuse(f"is over {MAX_BYTES // 2**20} MiB")
            for member in members:
                path = PurePosixPath(member.name)
                if not member.isfile() or not _inside(path, entry):
                    raise refuse(f"has an entry GPUX does not accept: {member.name!r}")
            tar.extractall(destination, members=members, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise refuse(f"cannot be unpacked ({type(exc).__name__}: {exc})") from exc


def _safe_top(entry: str) -> bool:
    path = PurePosixPath(entry)
    return len(path.parts) == 1 and entry not in (".", "..") and "\\" not in entry


def _inside(path: PurePosixPath, entry: str) -> bool:
    parts = path.parts
    return (
        bool(parts)
        and parts[0] == entry
        and not path.is_absolute()
        and ".." not in parts
        and "\\" not in str(path)
    )
