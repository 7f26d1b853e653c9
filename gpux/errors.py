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
    └── SourceError                9  fetching a model source (network, checksum)

Library code raises these; only the CLI turns them into exit codes and coloured text.
"""

from __future__ import annotations

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


class BackendError(GPUXError):
    exit_code = 7


class StoreError(GPUXError):
    exit_code = 8


class DigestMismatchError(StoreError):
    pass


class SourceError(GPUXError):
    exit_code = 9


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
    "ModelError",
    "NotFoundError",
    "SourceError",
    "StoreError",
    "UsageError",
    "value_kind",
]
