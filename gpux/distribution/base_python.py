"""Which Python a container base image runs at ``--python``, read before anything is built.

``gpux containerize`` copies this environment's packages into the runtime layer: their compiled
extensions (numpy, ONNX Runtime ...) load only in the same Python ``major.minor``. So the base
must have that Python at ``--python``; a base without it builds an image that dies at start.

The version comes from the base's config when it says (``PYTHON_VERSION=3.11.9``, which the
official ``python`` images set for the interpreter they install at ``/usr/local/bin``, so it is
believed for that path only), else from its filesystem: the layers are read as streams, in order,
later layers overriding earlier ones (OCI whiteouts remove), and the interpreter's path is
followed through its symbolic links: ``/usr/bin/python3 -> python3.11``. A regular file named
``python3`` gets its version from the one ``lib/python3.N`` folder beside it. What was found is
remembered per base config digest, so a base is read once.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from gpux.distribution.registry import Registry
from gpux.errors import UsageError

VERSIONED = re.compile(r"python(\d+)\.(\d+)$")
LIBRARY = re.compile(r"(.*)/lib/python(\d+)\.(\d+)$")
WHITEOUT = ".wh."
LINK_HOPS = 8
# Where the official python images put the interpreter their PYTHON_VERSION describes.
CONFIG_DESCRIBES = ("/usr/local/bin/python3", "/usr/local/bin/python")


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks, for ``tarfile``'s stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            try:
                self._rest = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size


def python_from_config(config: dict[str, Any]) -> tuple[int, int] | None:
    """``PYTHON_VERSION=3.11.9`` in the base config's environment -> (3, 11)."""
    section = config.get("config")
    environment = section.get("Env") if isinstance(section, dict) else None
    for variable in environment or []:
        if isinstance(variable, str) and variable.startswith("PYTHON_VERSION="):
            found = re.match(r"(\d+)\.(\d+)", variable.partition("=")[2])
            if found:
                return int(found[1]), int(found[2])
    return None


def _normal(name: str) -> str:
    """A path in the image, absolute and without ``.`` or ``..``: ``./usr/bin`` -> ``/usr/bin``."""
    return posixpath.normpath("/" + name.lstrip("/"))


def read_filesystem(
    registry: Registry, repository: str, layers: list[dict[str, Any]]
) -> tuple[dict[str, str | None], set[str]]:
    """The base's files as far as the check needs them: every path -> its link target (None: not
    a link), and the ``lib/pythonX.Y`` folders. zstd layers are skipped (tarfile cannot read
    them); a base of those only is then checked by its config alone."""
    files: dict[str, str | None] = {}
    libraries: set[str] = set()
    for layer in layers:
        if str(layer["mediaType"]).endswith("+zstd"):
            continue
        chunks = registry.blob_chunks(repository, str(layer["digest"]), int(layer["size"]))
        stream = io.BufferedReader(_ChunkReader(chunks), 1 << 20)
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                path = _normal(member.name)
                parent, _, base_name = path.rpartition("/")
                if base_name.startswith(WHITEOUT):
                    removed = f"{parent}/{base_name[len(WHITEOUT) :]}"
                    files.pop(removed, None)
                    libraries.discard(removed)
                    continue
                if member.issym():
                    files[path] = member.linkname
                elif member.islnk():  # a hard link names its target from the layer's root
                    files[path] = _normal(member.linkname)
                elif member.isdir():
                    if LIBRARY.match(path):
                        libraries.add(path)
                else:
                    files[path] = None
    return files, libraries


def python_from_filesystem(
    files: dict[str, str | None], libraries: set[str], python: str
) -> tuple[int, int] | None:
    """The version of the interpreter at ``python``, or None when the base has none there."""
    path = _normal(python)
    for _ in range(LINK_HOPS):
        if path not in files:
            # /bin/python3 on a merged /usr: /bin is itself a link to usr/bin
            parent = str(PurePosixPath(path).parent)
            target = files.get(parent)
            if target is None:
                return None
            path = _normal(str(PurePosixPath(parent).parent / target / PurePosixPath(path).name))
            continue
        versioned = VERSIONED.search(path)
        if versioned:
            return int(versioned[1]), int(versioned[2])
        target = files[path]
        if target is None:  # a regular file named python3: its lib/python3.N beside it
            prefix = str(PurePosixPath(path).parent.parent)
            found = {
                (int(m[2]), int(m[3]))
                for m in map(LIBRARY.match, libraries)
                if m and _normal(m[1]) == prefix
            }
            return found.pop() if len(found) == 1 else None
        path = _normal(str(PurePosixPath(path).parent / target))
    return None


def base_python(
    registry: Registry,
    repository: str,
    config: dict[str, Any],
    config_digest: str,
    layers: list[dict[str, Any]],
    python: str,
    memory: Path,
) -> tuple[int, int] | None:
    """The base image's Python at ``python``: from its config, else its filesystem (remembered
    in ``memory``, a folder, per config digest). None: there is none at ``python``."""
    found = python_from_config(config) if _normal(python) in CONFIG_DESCRIBES else None
    if found is not None:
        return found
    remembered = memory / f"{config_digest.replace(':', '-')}.json"
    try:
        known = json.loads(remembered.read_text())
        if known.get("python") == python:
            version = known.get("version")
            return (int(version[0]), int(version[1])) if version else None
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        pass
    files, libraries = read_filesystem(registry, repository, layers)
    found = python_from_filesystem(files, libraries, python)
    try:
        memory.mkdir(parents=True, exist_ok=True)
        remembered.write_text(json.dumps({"python": python, "version": found}))
    except OSError:
        pass  # a read-only GPUX_HOME: the base is read again next time
    return found


def check_base_python(
    found: tuple[int, int] | None, wanted: tuple[int, int], python: str, base: str
) -> None:
    """Refuse a base whose Python the runtime layer's packages cannot load in."""
    here = f"{wanted[0]}.{wanted[1]}"
    if found is None:
        raise UsageError(
            f"base image {base} has no Python at {python}",
            f"choose a base with Python {here}, or pass --python with the path of its interpreter",
        )
    if found != wanted:
        raise UsageError(
            f"base image {base} has Python {found[0]}.{found[1]} at {python}, and gpux's "
            f"packages here are built for Python {here}",
            f"choose a base with Python {here}, or run gpux containerize from a Python "
            f"{found[0]}.{found[1]} environment",
        )
