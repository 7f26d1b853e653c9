"""Content digests (``sha256:<64 hex>``): validated before any path is built from one."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import BinaryIO

from gpux.errors import StoreError

ALGORITHM = "sha256"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
CHUNK = 1 << 20


def validate(digest: str) -> str:
    """Return ``digest`` if it is a well-formed sha256 digest; never build a path from anything else."""
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise StoreError(
            f"invalid digest {digest!r}: expected 'sha256:' followed by 64 lowercase hex digits",
            "the image manifest or index is damaged; remove the image and build or pull it again",
        )
    return digest


def hex_part(digest: str) -> str:
    return validate(digest).split(":", 1)[1]


def of_bytes(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def of_stream(stream: BinaryIO) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    return f"sha256:{hasher.hexdigest()}", size


def of_file(path: Path) -> tuple[str, int]:
    with path.open("rb") as stream:
        return of_stream(stream)


def short(digest: str, length: int = 12) -> str:
    return digest.split(":", 1)[-1][:length]
