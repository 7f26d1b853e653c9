"""The handler's code as one layer: a reproducible tar of the module or package folder.

Reproducible (sorted names, no times, no owners) so that the same code gives the same digest:
the build key, ``gpux push`` and the store's deduplication all see "unchanged". Bounded, because
a GPUXfile may come from anyone and a ``handler: ./`` next to a dataset must not copy it in.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from gpux.config.handler import HandlerSpec, check_requirement
from gpux.config.paths import project_file
from gpux.errors import ConfigValidationError

MAX_FILES = 500
MAX_BYTES = 32 * 1024 * 1024  # source code, small data files; models belong in `model:`
SKIPPED_DIRS = {"__pycache__", ".git", ".venv", "node_modules", ".mypy_cache", ".pytest_cache"}
ARCHIVE_TITLE = "handler.tar"


@dataclass
class HandlerCode:
    """The packed code: the layer's bytes, what it holds, and the requirements as a list."""

    data: bytes
    entry: str  # the module file or package folder at the archive's top
    files: list[dict[str, object]]  # path, size, sha256 of each file
    requirements: list[str]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def pack(root: Path, spec: HandlerSpec) -> HandlerCode:
    """Read the handler named in the project at ``root`` into a tar; raises ConfigValidationError
    naming the problem (missing, not Python, too large, a link out of the project)."""
    where = f"handler '{spec.path}'"
    path = project_file(root, spec.path, "handler", "put the handler's code inside the project")
    if path.is_file():
        if path.suffix != ".py":
            raise ConfigValidationError(
                f"{where} is not a .py file", "name a Python module or a package folder"
            )
        members, entry = [(path.name, path)], path.name
    elif path.is_dir():
        if not (path / "__init__.py").is_file():
            raise ConfigValidationError(
                f"{where} is a folder without __init__.py",
                "make it a package (add __init__.py defining preprocess/postprocess), or name "
                "the .py file",
            )
        if path == root.resolve():
            raise ConfigValidationError(
                f"{where} is the project folder itself",
                "move the handler's code into a folder of its own, e.g. ./handler/",
            )
        members, entry = _package_files(path, where), path.name
    else:
        raise ConfigValidationError(f"{where} does not exist", "check the path in the GPUXfile")
    data, files = _tar(members, where)
    return HandlerCode(data, entry, files, requirements(root, spec))


def _package_files(folder: Path, where: str) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part in SKIPPED_DIRS or part.startswith(".") for part in relative.parts):
            continue
        if path.is_symlink():
            raise ConfigValidationError(
                f"{where}: {relative} is a symbolic link",
                "copy the file into the handler's folder (links are not stored in images)",
            )
        if path.is_file() and path.suffix not in (".pyc", ".pyo"):
            found.append((f"{folder.name}/{relative.as_posix()}", path))
    return found


def _tar(members: list[tuple[str, Path]], where: str) -> tuple[bytes, list[dict[str, object]]]:
    if len(members) > MAX_FILES:
        raise ConfigValidationError(
            f"{where} holds {len(members)} files (at most {MAX_FILES})",
            "keep data and models out of the handler's folder",
        )
    total = sum(path.stat().st_size for _, path in members)
    if total > MAX_BYTES:
        raise ConfigValidationError(
            f"{where} is {total / 1e6:.1f} MB (at most {MAX_BYTES / 1e6:.0f} MB of code and data)",
            "keep models and datasets out of the handler's folder",
        )
    buffer = io.BytesIO()
    files: list[dict[str, object]] = []
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in sorted(members):
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
            files.append(
                {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            )
    return buffer.getvalue(), files


def requirements(root: Path, spec: HandlerSpec) -> list[str]:
    """The requirements as a list: inline, or read from the project's requirements file."""
    if isinstance(spec.requirements, list):
        return [check_requirement(text) for text in spec.requirements]
    path = project_file(root, spec.requirements, "handler requirements")
    if not path.is_file():
        raise ConfigValidationError(
            f"handler requirements '{spec.requirements}' does not exist",
            "check the path, or list the packages inline: requirements: [scipy>=1.10]",
        )
    found = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        text = line.split(" #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        try:
            found.append(check_requirement(text))
        except ValueError as exc:
            raise ConfigValidationError(
                f"{spec.requirements}:{number}: {exc}",
                "list package specifiers only, one per line",
            ) from None
    return found
