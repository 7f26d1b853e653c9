"""``gpux save`` and ``gpux load``: images as OCI image-layout tarballs, like ``docker save/load``.

An archive holds exactly what the store holds, under the same names::

    blobs/sha256/<hex>   every manifest, config and layer of the saved images (each once)
    index.json           one descriptor per saved name
    oci-layout           {"imageLayoutVersion": "1.0.0"}

Each index.json descriptor carries ``org.opencontainers.image.ref.name`` = the tag (``1.0``) and
``io.containerd.image.name`` = the full GPUX name (``team/minilm:1.0``), as ``docker save`` and
``ctr export`` write them, so other OCI tools (skopeo, oras, crane) read the archive as they
read theirs. Saving is deterministic: entries sorted, mtime 0, uid/gid 0, no user names; the
same images always give the same bytes.

Loading streams the tarball once, without extracting anything to disk: every blob goes
straight into the store through :meth:`BlobStore.put_stream`, which checks it against the digest
in its member name. Members outside the layout (absolute paths, ``..``, links, devices, unknown
names, duplicates) stop the load. Once the stream has ended, every manifest is checked (a GPUX
image, every blob it lists present in the archive with its size) before the first name is
written, so a refused archive adds no image: at most unreferenced blobs, which ``gpux prune``
removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from gpux.errors import DigestMismatchError, GPUXError, NotFoundError, StoreError, UsageError
from gpux.store import Image, Store, mediatypes
from gpux.store.atomic import atomic_file
from gpux.store.reference import DEFAULT_TAG, Reference, parse

Progress = Callable[[int], None]

CONTAINERD_NAME = "io.containerd.image.name"
LAYOUT = {"imageLayoutVersion": "1.0.0"}
MAX_INDEX = 16 << 20  # index.json is read into memory: refuse anything larger
MAX_LAYOUT = 64 << 10
MAX_MANIFEST = 4 << 20  # what OCI registries accept for a manifest
MAX_CONFIG = 16 << 20

_BLOB_MEMBER = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_DIGEST_PREFIX = re.compile(r"(sha256:)?[0-9a-f]{6,64}")  # what Store.find takes for a digest
_DIRECTORIES = {".", "blobs", "blobs/sha256"}
_BROKEN = "the archive is damaged or was not written by an OCI tool; save it again"
_REFUSED = (
    "GPUX loads only plain OCI image layouts, as 'gpux save' writes them; this archive may be "
    "malicious: nothing was named or extracted"
)
_REBUILD = "rebuild the image with 'gpux build --force' (or pull it again), then save it"


# -- save --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The images to save: each name with its image, and every blob they need (each once)."""

    images: list[tuple[str, Image]]
    blobs: dict[str, int]  # digest -> size, manifests included

    @property
    def size(self) -> int:
        return sum(self.blobs.values())

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.images]


def select(store: Store, texts: Sequence[str]) -> Selection:
    """Resolve names (``name[:tag]``; a digest saves the image under every name it has)."""
    chosen: dict[str, Image] = {}
    for text in texts:
        image = store.get(text)
        prefix = "sha256:" + text.removeprefix("sha256:")
        by_digest = _DIGEST_PREFIX.fullmatch(text) and image.digest.startswith(prefix)
        # A bare name without a 'latest' is the repository's newest tag; the store puts the
        # name it resolved first, so the archive holds the image under a name it really has.
        for name in (
            image.names if by_digest else [image.names[0] if image.names else parse(text).name]
        ):
            chosen.setdefault(name, image)
    blobs: dict[str, int] = {}
    for image in chosen.values():
        blobs[image.digest] = store.blobs.size(image.digest)
        config = image.manifest["config"]
        blobs[config["digest"]] = int(config["size"])
        for layer in image.layers:
            blobs[layer.digest] = layer.size
    return Selection(sorted(chosen.items()), dict(sorted(blobs.items())))


def write_archive(
    store: Store, selection: Selection, out: IO[bytes], progress: Progress | None = None
) -> None:
    """Stream ``selection`` as a deterministic OCI image-layout tarball into ``out``."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            tar.addfile(_entry(directory, 0, tarfile.DIRTYPE))
        for digest, size in selection.blobs.items():
            try:
                blob = store.blobs.path(digest).open("rb")
            except FileNotFoundError:
                raise NotFoundError(f"blob {digest} is missing from the store", _REBUILD) from None
            with blob:
                actual = os.fstat(blob.fileno()).st_size
                if actual != size:
                    raise StoreError(
                        f"blob {digest} in the store has {actual} bytes, its manifest says {size}",
                        _REBUILD,
                    )
                reader = _HashingReader(blob, progress)
                tar.addfile(_entry(f"blobs/sha256/{digest[7:]}", size), reader)
                if reader.digest != digest:  # the archive stops here, visibly truncated
                    raise DigestMismatchError(
                        f"blob {digest} in the store is corrupt (its content no longer matches "
                        "its digest)",
                        _REBUILD,
                    )
        for name, data in (("index.json", _index(selection)), ("oci-layout", _json(LAYOUT))):
            tar.addfile(_entry(name, len(data)), io.BytesIO(data))


def save_file(
    store: Store, selection: Selection, path: Path, progress: Progress | None = None
) -> None:
    """Write the archive to ``path`` atomically: a temp file beside it, renamed when complete."""
    started = False
    try:
        with atomic_file(path, needed=selection.size) as out:
            started = True
            write_archive(store, selection, out, progress)
    except FileNotFoundError:
        if started:
            raise
        raise NotFoundError(
            f"cannot write '{path}': folder '{path.parent}' does not exist",
            "create the folder, or give another path with -o",
        ) from None
    except OSError as exc:
        if started:
            raise
        raise GPUXError(
            f"cannot write '{path}': {exc.strerror}", "give another path with -o"
        ) from None


def _index(selection: Selection) -> bytes:
    manifests = []
    for name, image in selection.images:
        reference = parse(name)
        manifests.append(
            {
                "mediaType": mediatypes.MANIFEST,
                "digest": image.digest,
                "size": selection.blobs[image.digest],
                "annotations": {
                    mediatypes.REF_NAME: reference.tag,
                    CONTAINERD_NAME: reference.name,
                },
            }
        )
    return _json({"schemaVersion": 2, "mediaType": mediatypes.INDEX, "manifests": manifests})


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"


def _entry(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _HashingReader:
    """``read`` that hashes what passes through (the store's copy is checked as it is saved)."""

    def __init__(self, stream: BinaryIO, progress: Progress | None) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self._hash.update(chunk)
        if self._progress and chunk:
            self._progress(len(chunk))
        return chunk

    @property
    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


# -- load --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    name: str
    digest: str
    size: int
    replaced: str | None = None  # the digest the name pointed at before, when it differs


@dataclass
class _Contents:
    """What the stream held: blobs (now in the store), index.json and oci-layout."""

    blobs: dict[str, int] = field(default_factory=dict)
    new: int = 0  # blobs the store did not hold before (unreferenced if the load fails)
    index: bytes | None = None
    layout: bytes | None = None


def load(
    store: Store,
    stream: IO[bytes],
    name: str | None = None,
    progress: Progress | None = None,
) -> list[Loaded]:
    """Read an OCI image-layout tarball (plain or gzip/bzip2/xz) into the store; name its images.

    ``name`` (``NAME[:TAG]``) names the archive's one image; without a tag, the archive's tags
    are kept. Without it, names come from ``io.containerd.image.name``, or from
    ``org.opencontainers.image.ref.name`` when that holds a full name.
    """
    override = parse(name) if name is not None else None
    with store.writing():  # blobs stay safe from a concurrent prune until they are named
        contents = _Contents()
        try:
            _receive(store, stream, contents, progress)
            entries = _index_entries(contents)
            unique = dict.fromkeys(digest for _, digest in entries)
            manifests = {digest: _check_image(store, contents, digest) for digest in unique}
            names = _names(entries, override, name)
        except GPUXError as exc:
            if contents.new:
                exc.hint = (
                    f"{exc.hint}; 'gpux prune' removes the {contents.new} blob(s) it left "
                    "unreferenced in the store"
                )
            raise
        loaded = []
        for image_name, digest in names:
            before = store.find(image_name)
            # Every blob was hashed against its name on the way in: no second hash.
            image = store.adopt(
                image_name,
                manifests[digest],
                expected=digest,
                just_written=frozenset(contents.blobs),
            )
            replaced = before if before not in (None, digest) else None
            loaded.append(Loaded(image_name, digest, image.size, replaced))
    return loaded


def _receive(
    store: Store, stream: IO[bytes], contents: _Contents, progress: Progress | None
) -> None:
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                path = _member_path(member, seen)
                if member.isdir():
                    continue
                data = tar.extractfile(member)
                assert data is not None  # a regular file, checked by _member_path
                if blob := _BLOB_MEMBER.fullmatch(path):
                    digest = f"sha256:{blob[1]}"
                    contents.new += not store.blobs.exists(digest)
                    _put_blob(store, data, digest, path, progress)
                    contents.blobs[digest] = member.size
                elif path == "index.json":
                    contents.index = _small(data, member, MAX_INDEX)
                else:
                    contents.layout = _small(data, member, MAX_LAYOUT)
    except (tarfile.TarError, EOFError) as exc:
        where = f" after {len(seen)} member(s)" if seen else ""
        raise StoreError(f"not a readable tar archive{where}: {exc}", _BROKEN) from None
    if not seen:
        raise StoreError("the archive is empty", _BROKEN)


def _member_path(member: tarfile.TarInfo, seen: set[str]) -> str:
    """The member's path inside the layout, or a StoreError naming it and why it is refused."""
    raw = member.name
    path = raw.removeprefix("./") if raw not in (".", "./") else "."
    problem = None
    if raw.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", raw):
        problem = "an absolute path"
    elif ".." in re.split(r"[/\\]", raw):
        problem = "a path with '..' (it points outside the archive)"
    elif member.issym():
        problem = f"a symbolic link (to '{member.linkname}')"
    elif member.islnk():
        problem = f"a hard link (to '{member.linkname}')"
    elif member.ischr() or member.isblk():
        problem = "a device file"
    elif member.isfifo():
        problem = "a named pipe"
    elif member.isdir():
        if path not in _DIRECTORIES:
            problem = "a folder outside the OCI image layout"
    elif not member.isreg():
        problem = f"an unsupported tar entry (type {member.type!r})"
    elif not (_BLOB_MEMBER.fullmatch(path) or path in ("index.json", "oci-layout")):
        problem = "not part of an OCI image layout (oci-layout, index.json, blobs/sha256/<64 hex>)"
    elif path in seen:
        problem = "a duplicate (the archive holds it twice)"
    if problem:
        raise StoreError(f"archive member '{raw}' is refused: {problem}", _REFUSED)
    seen.add(path)
    return path


def _put_blob(
    store: Store, data: IO[bytes], digest: str, path: str, progress: Progress | None
) -> None:
    try:
        store.blobs.put_stream(data, expected=digest, progress=progress)
    except DigestMismatchError:
        raise DigestMismatchError(
            f"archive member '{path}' does not match its digest (its content is not that blob)",
            "the archive is corrupt or was tampered with; nothing was loaded, save it again",
        ) from None
    except OSError as exc:
        raise StoreError(
            f"cannot write to the image store at {store.root}: {exc.strerror}",
            "free some space, or set GPUX_HOME to a writable folder",
        ) from None


def _small(data: IO[bytes], member: tarfile.TarInfo, limit: int) -> bytes:
    if member.size > limit:
        raise StoreError(
            f"archive member '{member.name}' is refused: {member.size} bytes, more than "
            f"the {_amount(limit)} allowed for it",
            _REFUSED,
        )
    return data.read()


def _amount(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


def _index_entries(contents: _Contents) -> list[tuple[dict[str, Any], str]]:
    """(annotations, manifest digest) for each descriptor of index.json."""
    if contents.index is None or contents.layout is None:
        missing = "index.json" if contents.index is None else "oci-layout"
        raise StoreError(f"the archive has no {missing}: not a complete OCI image layout", _BROKEN)
    try:
        version = json.loads(contents.layout).get("imageLayoutVersion")
    except (ValueError, AttributeError):
        version = None
    if not isinstance(version, str) or not version.startswith("1."):
        raise StoreError(f"the archive's oci-layout is not version 1.x ({version!r})", _BROKEN)
    try:
        index = json.loads(contents.index)
        descriptors = index["manifests"]
        entries = []
        for descriptor in descriptors:
            digest = descriptor["digest"]
            if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                raise ValueError(f"invalid digest {digest!r}")
            if descriptor.get("mediaType") == mediatypes.INDEX:
                raise StoreError(
                    f"index.json points at an image index ({digest}): several platforms, "
                    "not a GPUX image",
                    "GPUX loads archives of GPUX images, as written by 'gpux save'",
                )
            size = int(descriptor["size"])
            if digest in contents.blobs and contents.blobs[digest] != size:
                raise ValueError(
                    f"manifest {digest} has {contents.blobs[digest]} bytes, not {size}"
                )
            annotations = descriptor.get("annotations") or {}
            if not isinstance(annotations, dict):
                raise ValueError("annotations are not a mapping")
            entries.append((annotations, digest))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreError(f"the archive's index.json is malformed ({exc})", _BROKEN) from None
    if not entries:
        raise StoreError("the archive holds no image (index.json lists no manifest)", _BROKEN)
    return entries


def _check_image(store: Store, contents: _Contents, digest: str) -> bytes:
    """The manifest's bytes, once it is a GPUX image whose blobs all came with the archive."""
    size = contents.blobs.get(digest)
    if size is None:
        raise StoreError(f"index.json names manifest {digest}, which the archive lacks", _BROKEN)
    if size > MAX_MANIFEST:
        raise StoreError(f"manifest {digest} is {size} bytes: not an image manifest", _REFUSED)
    data = store.blobs.open_verified(digest)
    try:
        manifest = json.loads(data)
        config = manifest["config"]
        blobs = [config, *manifest.get("layers", [])]
        wanted = [(str(blob["digest"]), int(blob["size"])) for blob in blobs]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreError(
            f"manifest {digest} in the archive is malformed ({exc})", _BROKEN
        ) from None
    if manifest.get("mediaType", mediatypes.MANIFEST) != mediatypes.MANIFEST:
        raise StoreError(
            f"{digest} is a {manifest.get('mediaType')}, not an image manifest", _BROKEN
        )
    if config.get("mediaType") != mediatypes.CONFIG:
        raise StoreError(
            f"manifest {digest} is not a GPUX image (config type {config.get('mediaType')!r})",
            "GPUX loads images made by gpux build; container images are not models",
        )
    for blob_digest, blob_size in wanted:
        if blob_digest not in contents.blobs:
            raise StoreError(
                f"manifest {digest} needs blob {blob_digest}, which the archive lacks", _BROKEN
            )
        if contents.blobs[blob_digest] != blob_size:
            raise StoreError(
                f"blob {blob_digest} has {contents.blobs[blob_digest]} bytes in the archive, "
                f"its manifest says {blob_size}",
                _BROKEN,
            )
    if wanted[0][1] > MAX_CONFIG:
        raise StoreError(f"config {wanted[0][0]} is {wanted[0][1]} bytes: too large", _REFUSED)
    try:
        if not isinstance(json.loads(store.blobs.open_verified(wanted[0][0])), dict):
            raise ValueError("not a mapping")
    except ValueError as exc:
        raise StoreError(f"config {wanted[0][0]} is not a JSON document ({exc})", _BROKEN) from None
    return data


def _names(
    entries: list[tuple[dict[str, Any], str]], override: Reference | None, text: str | None
) -> list[tuple[str, str]]:
    """(name, manifest digest) for each image to name, in order, without duplicates."""
    named: dict[str, str] = {}
    if override is not None:
        digests = sorted({digest for _, digest in entries})
        if len(digests) > 1:
            raise UsageError(
                f"--name names one image, but the archive holds {len(digests)}",
                "load it without --name, then rename with 'gpux tag'",
            )
        explicit_tag = ":" in str(text).rsplit("/", 1)[-1].split("@")[0]
        for annotations, digest in entries:
            tag = override.tag if explicit_tag else _tag_of(annotations)
            named.setdefault(f"{override.repository}:{tag}", digest)
        return list(named.items())
    for annotations, digest in entries:
        reference = _reference_of(annotations, digest)
        if named.setdefault(reference.name, digest) != digest:
            raise StoreError(f"index.json names two different images '{reference.name}'", _BROKEN)
    return list(named.items())


def _reference_of(annotations: dict[str, Any], digest: str) -> Reference:
    full = annotations.get(CONTAINERD_NAME)
    ref_name = annotations.get(mediatypes.REF_NAME)
    if not isinstance(full, str) and isinstance(ref_name, str) and re.search(r"[:/]", ref_name):
        full = ref_name  # a full name, as GPUX's own store and skopeo write it
    if not isinstance(full, str):
        what = f"only by the tag '{ref_name}'" if isinstance(ref_name, str) else "by no name"
        raise UsageError(
            f"the archive names image {digest[7:19]} {what}",
            "give it a name: gpux load -i FILE --name NAME (the archive's tag is kept)",
        )
    try:
        return parse(full)
    except UsageError as exc:
        raise StoreError(
            f"the archive names image {digest[7:19]} '{full}', not a valid image name "
            f"({exc.message.split(': ', 1)[-1]})",
            "give it another name: gpux load -i FILE --name NAME",
        ) from None


def _tag_of(annotations: dict[str, Any]) -> str:
    full = annotations.get(CONTAINERD_NAME)
    ref_name = annotations.get(mediatypes.REF_NAME)
    if not isinstance(full, str) and isinstance(ref_name, str):
        full = ref_name if re.search(r"[:/]", ref_name) else f"image:{ref_name}"
    with contextlib.suppress(UsageError):
        if isinstance(full, str):
            return parse(full).tag
    return DEFAULT_TAG
