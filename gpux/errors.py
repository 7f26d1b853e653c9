"""Every error GPUX raises on purpose derives from :class:`GPUXError`.

Each carries a one-line ``message`` (what went wrong, naming the object), a ``hint`` (how to fix it)
and the process ``exit_code`` the CLI returns, documented in docs/cli.md::

    GPUXError                      1  unexpected failure inside GPUX
    ├── UsageError                 2  a malformed argument (image name, --input syntax)
    ├── ConfigError                3  the GPUXfile
    │   ├── ConfigParseError          YAML syntax
    │   ├── ConfigSchemaError         unknown key, wrong type, value out of range
    │   └── ConfigValidationError     well-formed but inconsistent (missing file, no sha256)
    ├── NotFoundError              4  an image, project or file that does not exist
    ├── ModelError                 5  the ONNX model: invalid, or not matching the GPUXfile
    ├── InputError                 6  an inference input: unknown name, wrong dtype or shape
    ├── BackendError               7  the execution backend failed to start or to run
    ├── StoreError                 8  the local image store
    │   └── DigestMismatchError       a blob whose content does not match its digest
    ├── SourceError                9  fetching a model source (network, checksum)
    ├── MachineError              10  the machine refused: a full disk or quota, a read-only
    │                                 filesystem, a permission (not a bug in GPUX)
    └── HandlerError              11  the image's handler code: it raised, returned something
        └── RequirementError          unusable, or needs a package that is not installed

    UntrustedCodeError (a UsageError, 2): code from an image not built here, without --trust-code

Library code raises these; only the CLI turns them into exit codes and coloured text.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any


class GPUXError(Exception):
    """Root of the GPUX error hierarchy."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(GPUXError):
    exit_code = 2


class ConfigError(GPUXError):
    exit_code = 3


class ConfigParseError(ConfigError):
    pass


class ConfigSchemaError(ConfigError):
    pass


class ConfigValidationError(ConfigError):
    pass


class NotFoundError(GPUXError):
    exit_code = 4


class ModelError(GPUXError):
    exit_code = 5


class InputError(GPUXError):
    exit_code = 6


class MixedSizesError(InputError):
    """Images of one batch that become tensors of different sizes; ``targets`` holds the
    (height, width) each image becomes, so that a caller can split the batch by size."""

    def __init__(self, message: str, hint: str, targets: list[tuple[int, int]]) -> None:
        super().__init__(message, hint)
        self.targets = targets


class BackendError(GPUXError):
    exit_code = 7


class StoreError(GPUXError):
    exit_code = 8


class DigestMismatchError(StoreError):
    pass


class SourceError(GPUXError):
    exit_code = 9


class HandlerError(GPUXError):
    """The image's handler code (``handler:`` in the GPUXfile) failed: the message names its
    file and line. An error of the code's author, not of GPUX."""

    exit_code = 11


class RequirementError(HandlerError):
    """A package the handler declares in ``requirements:`` is missing or of another version."""


class UntrustedCodeError(UsageError):
    """An image holds code and was not built on this machine: running it needs consent."""


class MachineError(GPUXError):
    """The machine refused a write: the disk or the quota is full, the filesystem is read-only,
    or the user may not write there. Nothing is wrong with GPUX or the image; the fix is on the
    machine (free space, another folder, permissions)."""

    exit_code = 10

    @classmethod
    def from_os_error(
        cls,
        exc: OSError,
        path: str | os.PathLike[str] | None = None,
        needed: int | None = None,
        what: str | None = None,
    ) -> MachineError | None:
        """The error for ``exc`` raised while writing ``path`` (``what`` it is, e.g. "the image
        store"; ``needed``: the bytes the write wanted), or None when ``exc`` is not the machine
        refusing (then it stays what it is)."""
        where = path if path is not None else exc.filename
        target = f" {where}" if where is not None else ""
        if what is not None:
            target = f" {what}{' at' + target if target else ''}"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            full = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
            amounts = []
            if needed is not None:
                amounts.append(f"needs {_size(needed)}")
            free = _free_space(where)
            if free is not None:
                amounts.append(f"{_size(free)} free")
            detail = f" ({', '.join(amounts)})" if amounts else ""
            return cls(
                f"{full} writing{target}{detail}",
                "free space on that disk ('gpux prune' deletes unreferenced blobs of the store), "
                "or write elsewhere (GPUX_HOME for the store, -o for an archive)",
            )
        if exc.errno == errno.EROFS:
            return cls(
                f"cannot write{target}: the filesystem is read-only",
                "remount it read-write, or set GPUX_HOME to a writable folder "
                "(images can still be listed and run from a read-only store)",
            )
        if exc.errno in (errno.EACCES, errno.EPERM):
            return cls(
                f"permission denied writing{target}",
                "give yourself access to it (chown, chmod), or use a folder you own "
                "(GPUX_HOME for the store)",
            )
        return None


def _free_space(path: str | os.PathLike[str] | None) -> int | None:
    """Free bytes on the filesystem holding ``path`` (its nearest existing folder)."""
    if path is None:
        return None
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover - the loop returns at GB


def value_kind(value: Any) -> str:
    """What a parsed JSON/YAML value is, in the user's words ("a list", "a mapping"), for messages."""
    return {
        list: "a list",
        dict: "a mapping",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), type(value).__name__)


__all__ = [
    "BackendError",
    "ConfigError",
    "ConfigParseError",
    "ConfigSchemaError",
    "ConfigValidationError",
    "DigestMismatchError",
    "GPUXError",
    "InputError",
    "MachineError",
    "ModelError",
    "NotFoundError",
    "SourceError",
    "StoreError",
    "UsageError",
    "value_kind",
]
