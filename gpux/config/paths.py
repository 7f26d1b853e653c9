"""Where the files a GPUXfile names may be: inside the project folder, or inside their archive.

A GPUXfile can come from anyone (a repository on the Hub, a clone, an example): the files it
names are copied into the image and the image can be pushed, so a path that reaches outside the
project (``labels: ../../../etc/passwd``, an absolute path, a symbolic link to ``~/.ssh``) would
publish a file the author of the GPUXfile never had. Anything else comes in by URL with a sha256,
or from the Hub. Every project path of a GPUXfile is resolved by :func:`project_file`.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

from gpux.errors import ConfigValidationError

FETCH_IT = (
    "copy it into the project folder, or give an https:// URL with its sha256 (or an hf: source)"
)
_DRIVE = re.compile(r"^[A-Za-z]:")


def project_file(root: Path, text: str, key: str, remedy: str = FETCH_IT) -> Path:
    """The file or folder ``text`` names, relative to the project folder ``root``, with every
    symbolic link resolved. Raises :class:`ConfigValidationError` naming ``key`` when it lies
    outside the project; ``remedy`` is the hint. Existence is the caller's check."""
    if text.startswith("~"):
        raise ConfigValidationError(
            f"{key} '{text}': GPUX does not expand '~'; paths in a GPUXfile are relative to "
            "the project folder",
            remedy,
        )
    base = root.resolve()
    lexical = Path(os.path.normpath(base / text))
    resolved = (base / text).resolve()
    if resolved.is_relative_to(base) or _hub_snapshot_link(base, lexical, resolved):
        return resolved
    how = "is a symbolic link to" if lexical.is_relative_to(base) else "resolves to"
    raise ConfigValidationError(
        f"{key} '{text}' {how} {resolved}, outside the project folder {base}; a GPUXfile may "
        "only name files inside its project",
        remedy,
    )


def inside_project(text: str) -> str | None:
    """``text`` as a normalised relative path (``./a/../b.txt`` -> ``b.txt``) when it stays
    inside the project, by its letters alone; None when it climbs out, is absolute or starts
    with ``~``. For a project whose files are not on disk yet (a repository on the Hub):
    :func:`project_file` checks the files once they are."""
    path = posixpath.normpath(text.replace("\\", "/"))
    if path == ".." or path.startswith(("../", "/", "~")) or _DRIVE.match(path):
        return None
    return path


def _hub_snapshot_link(base: Path, lexical: Path, resolved: Path) -> bool:
    """huggingface_hub keeps a repository's files in ``<cache>/models--org--name/blobs/`` and
    links them from ``snapshots/<commit>/``; a project pulled from the Hub is such a snapshot.
    Those links are huggingface_hub's, not the repository's: a repository cannot hold links."""
    if not lexical.is_relative_to(base) or base.parent.name != "snapshots":
        return False
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a dependency of gpux
        return False
    repository = base.parent.parent
    if repository.parent != Path(constants.HF_HUB_CACHE).resolve():
        return False
    return resolved.is_relative_to(repository / "blobs")


def check_member_name(name: str) -> str:
    """``name`` when it is a plain relative path of a file inside an archive; otherwise a
    ValueError that says what is wrong and how to write it. Extraction writes the member into
    the cache, so a name that climbs out (``../``, ``/``, ``C:``, ``\\``) is refused before any
    file is opened."""
    problem = None
    if "\x00" in name:
        problem = "holds a NUL character"
    elif "\\" in name:
        problem = "holds a backslash (archives separate folders with '/')"
    elif name.startswith("/"):
        problem = "is an absolute path"
    elif _DRIVE.match(name):
        problem = "starts with a drive letter"
    elif ".." in name.split("/"):
        problem = "climbs out of the archive with '..'"
    elif name.endswith("/") or name.strip("/.") == "":
        problem = "names a folder, not a file"
    if problem is not None:
        raise ValueError(
            f"member {name!r} {problem}; give the path of a file inside the archive as "
            "'unzip -l' or 'tar tf' lists it, like 'package/models/model.onnx'"
        )
    return name
