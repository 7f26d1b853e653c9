"""Re-hash the store: every blob of every image, or of one, against its digest (``gpux verify``).

Loading an image hashes its manifest and config every time, but trusts a stamp for its large
layers (size, mtime, ctime, inode; see :meth:`BlobStore.verified_path`). The stamp catches any
write through the filesystem; it cannot catch damage below it (a failing disk, a bit flipped in
memory on the way). This check ignores stamps and reads every byte. A damaged blob loses its
stamp, so the next load refuses it instead of running it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpux.errors import DigestMismatchError, NotFoundError, StoreError
from gpux.store import digest as digests
from gpux.store import mediatypes
from gpux.store.blobs import Progress
from gpux.store.images import Store, repair_hint


@dataclass
class BlobCheck:
    """One blob of an image: ``role`` is ``manifest``, ``config`` or ``layer <title>``."""

    digest: str
    role: str
    size: int
    problem: str | None = None  # None: present and intact


@dataclass
class ImageCheck:
    """The result for one image (one manifest digest, with every name that points at it)."""

    names: list[str]
    digest: str
    blobs: list[BlobCheck] = field(default_factory=list)
    problem: str | None = None  # the image as a whole: a malformed index entry or manifest

    @property
    def name(self) -> str:
        return self.names[0] if self.names else digests.short(self.digest)

    @property
    def size(self) -> int:
        return sum(blob.size for blob in self.blobs)

    @property
    def problems(self) -> list[str]:
        found = [self.problem] if self.problem else []
        return found + [
            f"{blob.role} blob {digests.short(blob.digest)} is {blob.problem}"
            for blob in self.blobs
            if blob.problem
        ]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def hint(self) -> str:
        return repair_hint(self.names, self.digest)


@dataclass
class Verification:
    """What ``verify`` found: one :class:`ImageCheck` per image, in name order."""

    images: list[ImageCheck]

    @property
    def damaged(self) -> list[ImageCheck]:
        return [image for image in self.images if not image.ok]

    @property
    def ok(self) -> bool:
        return not self.damaged

    def error(self) -> StoreError | None:
        """The error to raise for the damage found (None when every blob is intact): each
        damaged image with its problems, and the commands that replace it."""
        damaged = self.damaged
        if not damaged:
            return None
        lines = [
            f"{', '.join(image.names) or image.name}: {problem}"
            for image in damaged
            for problem in image.problems
        ]
        count = f"{len(damaged)} image{'s' if len(damaged) > 1 else ''}"
        message = "\n".join([f"{count} in the store damaged:", *lines])
        hint = "; ".join(image.hint for image in damaged)
        corrupt = all(
            blob.problem is None or blob.problem.startswith("corrupt")
            for image in damaged
            for blob in image.blobs
        ) and all(image.problem is None for image in damaged)
        return (DigestMismatchError if corrupt else StoreError)(message, hint)


CORRUPT = "corrupt (its content no longer matches its digest)"


def verify(
    store: Store,
    name: str | None = None,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
    on_image: Callable[[ImageCheck], None] | None = None,
) -> Verification:
    """Re-hash every blob of every image in ``store``, or of the image ``name`` (a name or a
    digest). ``on_total`` is told the bytes to hash once the manifests are read, ``progress``
    each chunk hashed, ``on_image`` each image once its blobs are checked. A blob shared by
    several images is hashed once."""
    images = _targets(store, name)
    found: dict[str, str | None] = {}  # digest -> problem (None: intact), for blobs hashed
    for image in images:
        if image.problem is None:
            _describe(store, image, found)
    if on_total is not None:
        pending = {b.digest: b.size for i in images for b in i.blobs if b.digest not in found}
        on_total(sum(pending.values()))
    for image in images:
        for blob in image.blobs:
            if blob.digest not in found:
                found[blob.digest] = _check(store, blob.digest, progress)
            blob.problem = found[blob.digest]
        if on_image is not None:
            on_image(image)
    return Verification(sorted(images, key=lambda image: (image.names, image.digest)))


def _describe(store: Store, image: ImageCheck, found: dict[str, str | None]) -> None:
    """Hash the image's manifest and list the blobs it names (or record why it cannot)."""
    manifest = _read_manifest(store, image, found)
    if manifest is None:
        return
    try:
        layers = [
            (f"layer {layer.get('annotations', {}).get(mediatypes.TITLE, '')}".strip(), layer)
            for layer in manifest["layers"]
        ]
        for role, descriptor in [("config", manifest["config"]), *layers]:
            digest = digests.validate(descriptor["digest"])
            image.blobs.append(BlobCheck(digest, role, int(descriptor["size"])))
    except (KeyError, TypeError, ValueError, AttributeError, StoreError):
        image.problem = f"manifest {digests.short(image.digest)} is malformed"


def _targets(store: Store, name: str | None) -> list[ImageCheck]:
    """The images to check: all of the index (with its malformed entries), or ``name``'s."""
    malformed = [
        ImageCheck([entry_name] if entry_name else [], "", problem=why)
        for _, entry_name, why in store.malformed_entries()
    ]
    manifests = store.manifests()
    if name is None:
        return [ImageCheck(names, digest) for digest, names in manifests.items()] + malformed
    try:
        digest = store.find(name)
    except StoreError:
        asked = [image for image in malformed if name in image.names]
        if asked:  # its index entry is malformed: that is the damage to report
            return asked
        raise
    if digest is None:
        raise NotFoundError(f"image '{name}' not found", "run 'gpux images' to list local images")
    return [ImageCheck(manifests.get(digest, []), digest)]


def _read_manifest(
    store: Store, image: ImageCheck, found: dict[str, str | None]
) -> dict[str, Any] | None:
    """The image's manifest, after hashing it; None (and the problem recorded) when damaged."""
    blob = BlobCheck(image.digest, "manifest", 0)
    image.blobs.append(blob)
    try:
        data = store.blobs.open_verified(image.digest)  # small: read and hashed at once
    except NotFoundError:
        blob.problem = found[image.digest] = "missing"
        return None
    except DigestMismatchError:
        blob.problem = found[image.digest] = CORRUPT
        return None
    found[image.digest] = None
    blob.size = len(data)
    try:
        manifest = json.loads(data)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict):
        image.problem = f"manifest {digests.short(image.digest)} is not a JSON object"
        return None
    return manifest


def _check(store: Store, digest: str, progress: Progress | None) -> str | None:
    try:
        store.blobs.check(digest, progress)
    except NotFoundError:
        return "missing"
    except DigestMismatchError:
        return CORRUPT
    return None
