"""``gpux push`` and ``gpux pull``: images between the local store and an OCI registry.

Push uploads only the blobs the registry lacks, then the manifest, byte for byte as stored, so
the image keeps its digest everywhere. Pull downloads the missing blobs in parallel, re-hashes
each one while writing it (a blob that does not match its digest never enters the store),
and names the image only after every blob is in: an interrupted pull leaves no image, and a
re-run skips the blobs it already has.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gpux.distribution.registry import Registry
from gpux.errors import StoreError, UsageError
from gpux.store import Image, Store, mediatypes
from gpux.store.reference import parse

PARALLEL = 4
MODELCAR_OF = "dev.gpux.modelcar.image"  # gpux/distribution/modelcar.py's annotation
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Remote:
    host: str
    repository: str
    tag: str
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}:{self.tag}"
        return f"{self.host}/{self.repository}@{self.digest}" if self.digest else text

    @property
    def local_name(self) -> str:
        return f"{self.host}/{self.repository}:{self.tag}"


def parse_remote(text: str) -> Remote:
    """``REGISTRY/REPO[:TAG|@sha256:...]``; the registry part is required (a host with a dot or
    a port, or ``localhost``), so an image never goes to a registry nobody named."""
    first, _, rest = text.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost"):
        raise UsageError(
            f"'{text}' names no registry",
            "write REGISTRY/REPOSITORY[:TAG], e.g. localhost:5000/minilm:1.0 or ghcr.io/team/minilm",
        )
    digest = None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise UsageError(f"'{digest}' is not a sha256 digest", "write @sha256:<64 hex digits>")
    reference = parse(rest)  # validates the repository and tag
    return Remote(first, reference.repository, reference.tag, digest)


@dataclass
class Report:
    image: str
    digest: str
    transferred: int = 0
    transferred_bytes: int = 0
    skipped: int = 0
    blobs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "digest": self.digest,
            "transferred": self.transferred,
            "transferred_bytes": self.transferred_bytes,
            "skipped": self.skipped,
        }


def _blobs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [manifest["config"], *manifest.get("layers", [])]


def _checked_blobs(manifest: dict[str, Any], remote: Remote) -> list[dict[str, Any]]:
    """The blobs a pulled manifest names, each with a digest and a whole, non-negative size
    (the download stops at that size, so it must be one)."""
    layers = manifest.get("layers", [])
    blobs = [manifest["config"], *(layers if isinstance(layers, list) else [None])]
    for blob in blobs:
        size = blob.get("size") if isinstance(blob, dict) else None
        if (
            not isinstance(blob, dict)
            or not isinstance(blob.get("digest"), str)
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
        ):
            raise StoreError(
                f"{remote}: the manifest names a blob without a valid digest and size: "
                f"{json.dumps(blob)[:200]}",
                "the registry is misbehaving, or the image was not made by gpux push",
            )
    return blobs


def push(
    store: Store,
    name: str,
    target: str | None,
    *,
    insecure: bool = False,
    allow_http: bool = False,
    on_total: Callable[[int], None] | None = None,
    progress: Progress | None = None,
) -> Report:
    image = store.get(name)
    remote = parse_remote(target or image.name)
    manifest_bytes = store.blobs.open_verified(image.digest)
    registry = Registry(remote.host, insecure=insecure, allow_http=allow_http)
    report = Report(str(remote), image.digest)
    try:
        blobs = _blobs(image.manifest)
        with ThreadPoolExecutor(PARALLEL) as pool:
            present = list(
                pool.map(lambda b: registry.has_blob(remote.repository, b["digest"]), blobs)
            )
            missing = [b for b, there in zip(blobs, present, strict=True) if not there]
            if on_total:
                on_total(sum(int(b["size"]) for b in missing))
            uploads = [
                pool.submit(
                    registry.upload_blob,
                    remote.repository,
                    b["digest"],
                    store.blobs.verified_path(b["digest"]),
                    progress or (lambda n: None),
                )
                for b in missing
            ]
            for upload in uploads:
                upload.result()
        report.transferred = len(missing)
        report.transferred_bytes = sum(int(b["size"]) for b in missing)
        report.skipped = len(blobs) - len(missing)
        put_manifest_checked(
            registry,
            remote,
            manifest_bytes,
            image.digest,
            "the manifest",
            "the registry rewrote the manifest; GPUX images must keep their digest",
        )
    finally:
        registry.close()
    return report


def pull(
    store: Store,
    text: str,
    *,
    insecure: bool = False,
    allow_http: bool = False,
    on_total: Callable[[int], None] | None = None,
    progress: Progress | None = None,
) -> tuple[Image, Report]:
    remote = parse_remote(text)
    registry = Registry(remote.host, insecure=insecure, allow_http=allow_http)
    try:
        manifest_bytes, _ = registry.get_manifest(remote.repository, remote.digest or remote.tag)
        digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        if remote.digest and digest != remote.digest:
            from gpux.errors import DigestMismatchError

            raise DigestMismatchError(
                f"the registry sent a manifest with digest {digest}, not {remote.digest}",
                "the registry is corrupt or was tampered with; nothing was stored",
            )
        manifest = _gpux_manifest(manifest_bytes, remote)
        blobs = _checked_blobs(manifest, remote)
        missing = [
            b
            for b in blobs
            if not (store.blobs.exists(b["digest"]) and store.blobs.size(b["digest"]) == b["size"])
        ]
        if on_total:
            on_total(sum(int(b["size"]) for b in missing))
        report = Report(str(remote), digest, skipped=len(blobs) - len(missing))

        added: list[str] = []

        def fetch(blob: dict[str, Any]) -> None:
            chunks = registry.blob_chunks(remote.repository, blob["digest"], blob["size"])
            store.blobs.put_chunks(
                chunks, expected=blob["digest"], progress=progress, size=int(blob["size"])
            )
            added.append(blob["digest"])

        with store.writing():
            try:
                with ThreadPoolExecutor(PARALLEL) as pool:
                    for result in [pool.submit(fetch, b) for b in missing]:
                        result.result()
            except BaseException:
                # A failed pull leaves the store as it was: the blobs it did fetch go again
                # (a pull killed outright leaves them for the re-run, or for gpux prune).
                referenced = store.referenced()
                for fetched in added:
                    if fetched not in referenced:
                        store.blobs.delete(fetched)
                raise
        report.transferred = len(missing)
        report.transferred_bytes = sum(int(b["size"]) for b in missing)
        image = store.adopt(
            remote.local_name, manifest_bytes, expected=digest, just_written=frozenset(added)
        )
    finally:
        registry.close()
    return image, report


def _gpux_manifest(data: bytes, remote: Remote) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise StoreError(f"{remote}: the manifest is not JSON", "check the reference") from exc
    if not isinstance(manifest, dict) or manifest.get("mediaType") == mediatypes.INDEX:
        raise StoreError(
            f"{remote} is an image index (several platforms), not a GPUX image",
            "pull a GPUX image pushed with gpux push",
        )
    config = manifest.get("config")
    config = config if isinstance(config, dict) else {}
    annotations = manifest.get("annotations")
    source = annotations.get(MODELCAR_OF) if isinstance(annotations, dict) else None
    if config.get("mediaType") != mediatypes.CONFIG and isinstance(source, str):
        raise StoreError(
            f"{remote} is the KServe modelcar of {source[:200]} (gpux push --format modelcar), "
            "a container image, not a GPUX image",
            "pull the GPUX image itself, or serve the modelcar's /models folder: gpux serve FOLDER",
        )
    if config.get("mediaType") != mediatypes.CONFIG:
        raise StoreError(
            f"{remote} is not a GPUX image (config type {config.get('mediaType')!r})",
            "GPUX pulls images made by gpux build and gpux push; container images are not models",
        )
    return manifest


def tag_target(target: str, example: str) -> Remote:
    """``target`` parsed as a place to push to: a tag, never a digest (``example`` shows one)."""
    remote = parse_remote(target)
    if remote.digest:
        raise UsageError(
            f"'{target}' names a digest; a pushed image gets its digest from its content",
            f"push to a tag: {example}",
        )
    return remote


def put_manifest_checked(
    registry: Registry, remote: Remote, manifest: bytes, expected: str, what: str, hint: str
) -> None:
    """Put ``manifest`` under the remote's tag; a registry that stores it under another digest
    than ``expected`` (it rewrote it) is a StoreError about ``what``."""
    pushed = registry.put_manifest(remote.repository, remote.tag, manifest, mediatypes.MANIFEST)
    if pushed and pushed != expected:
        raise StoreError(f"the registry stored {what} as {pushed}, not {expected}", hint)
