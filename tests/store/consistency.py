"""Independent checks of a store's on-disk state (not through Store's own code paths)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from gpux.store import Store


def blob_path(root: Path, digest: str) -> Path:
    algorithm, _, hex_digest = digest.partition(":")
    assert algorithm == "sha256", digest
    return root / "blobs" / "sha256" / hex_digest


def read_verified(root: Path, digest: str, size: int | None = None) -> bytes:
    """The bytes of a blob, asserting it exists, hashes to its name and has the recorded size."""
    path = blob_path(root, digest)
    assert path.is_file(), f"index references missing blob {digest}"
    data = path.read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, f"blob {digest} is corrupt"
    if size is not None:
        assert len(data) == size, f"blob {digest} has {len(data)} bytes, descriptor says {size}"
    return data


def referenced(root: Path) -> set[str]:
    """Every blob digest reachable from index.json, checking each one on the way."""
    index_path = root / "index.json"
    if not index_path.exists():
        return set()
    index = json.loads(index_path.read_bytes())  # index.json is written atomically: never torn
    reachable: set[str] = set()
    for entry in index["manifests"]:
        manifest = json.loads(read_verified(root, entry["digest"], entry["size"]))
        reachable.add(entry["digest"])
        for descriptor in [manifest["config"], *manifest["layers"]]:
            read_verified(root, descriptor["digest"], descriptor["size"])
            reachable.add(descriptor["digest"])
    return reachable


def blob_files(root: Path) -> set[str]:
    folder = root / "blobs" / "sha256"
    return {f"sha256:{p.name}" for p in folder.iterdir()} if folder.is_dir() else set()


def tmp_files(root: Path) -> list[Path]:
    folder = root / "tmp"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def names(root: Path) -> list[str]:
    return sorted(name for image in Store(root).images() for name in image.names)


def assert_consistent(root: Path) -> set[str]:
    """No name leads to a missing or damaged blob; returns the referenced digests."""
    reachable = referenced(root)
    assert Store(root).check() == []
    return reachable
