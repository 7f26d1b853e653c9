"""The local image store: an OCI image layout under ``$GPUX_HOME``.

    $GPUX_HOME/
      oci-layout           {"imageLayoutVersion": "1.0.0"}
      index.json           one entry per name:tag -> manifest digest
      blobs/sha256/<hex>   manifests, configs and layers
      tmp/                 partial writes (removed by prune)
      locks/               advisory locks
      verified/<hex>       size, mtime and inode of blobs already hashed (see BlobStore)
      cache/               downloads by sha256; TensorRT engines per model, GPU and version

Write order makes every crash safe: layer blobs, then the config blob, then the manifest blob,
then index.json (atomic rename). An image is visible only once its manifest is in the index, and
everything the manifest names is already on disk. A crash leaves at worst unreferenced blobs,
which ``prune`` removes.

Damage made by hand or by the disk is survived, not trusted: a malformed index entry is skipped
by every read and dropped (with a warning) by ``rm`` and ``prune``; an image whose manifest or
config is damaged is listed by :meth:`Store.survey` as :class:`DamagedImage`, with its fix.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpux import env
from gpux.errors import (
    DigestMismatchError,
    GPUXError,
    MachineError,
    NotFoundError,
    StoreError,
    value_kind,
)
from gpux.store import digest as digests
from gpux.store import mediatypes
from gpux.store.atomic import atomic_file
from gpux.store.blobs import BlobStore, Progress
from gpux.store.lock import file_lock
from gpux.store.reference import Reference, parse

Warn = Callable[[str], None]
"""Where the store reports what it repaired (the CLI prints ``warning:`` lines)."""


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    size: int
    title: str | None = None


@dataclass
class LayerSource:
    """A layer to write: a file on disk, bytes in memory, or a blob already in the store."""

    media_type: str
    title: str
    path: Path | None = None
    data: bytes | None = None
    digest: str | None = None


@dataclass
class Image:
    """A stored image: its names, manifest and config (already verified)."""

    store: Store
    digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    names: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.names[0] if self.names else digests.short(self.digest)

    @property
    def layers(self) -> list[Layer]:
        return [
            Layer(
                media_type=entry["mediaType"],
                digest=entry["digest"],
                size=int(entry["size"]),
                title=entry.get("annotations", {}).get(mediatypes.TITLE),
            )
            for entry in self.manifest.get("layers", [])
        ]

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers) + int(self.manifest["config"]["size"])

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.manifest.get("annotations", {}))

    @property
    def created(self) -> str | None:
        return self.annotations.get(mediatypes.CREATED)

    @property
    def components(self) -> list[str]:
        """The keys of the models of a chain image (empty for an image of one model)."""
        return list(self._component_configs())

    def _component_configs(self) -> dict[str, dict[str, Any]]:
        configs = self.config.get("components", {})
        if not isinstance(configs, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) for k, v in configs.items()
        ):  # a pulled or hand-made image: outside input
            raise StoreError(
                f"image '{self.name}' lists its models in a form GPUX does not know",
                repair_hint(self.names, self.digest),
            )
        return configs

    def component(self, key: str) -> Image:
        """One model of a chain image, as an image of its own: its config, and its layers
        (stored under ``KEY/`` in the chain's manifest) under their own titles."""
        configs = self._component_configs()
        if key not in configs:
            raise StoreError(
                f"image '{self.name}' has no model '{key}'",
                f"its models are: {', '.join(configs) or 'none (it is not a chain)'}",
            )
        prefix = f"{key}/"
        layers = []
        for entry in self.manifest.get("layers", []):
            title = entry.get("annotations", {}).get(mediatypes.TITLE, "")
            if title.startswith(prefix):
                annotations = {**entry["annotations"], mediatypes.TITLE: title[len(prefix) :]}
                layers.append({**entry, "annotations": annotations})
        manifest = {**self.manifest, "layers": layers}
        return Image(self.store, self.digest, manifest, configs[key], [f"{self.name}/{key}"])

    def layer(self, media_type: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.media_type == media_type), None)

    def layer_path(self, media_type: str, title: str | None = None) -> Path:
        """Path of a layer's blob (the one with ``title``, when given), verified against its digest."""
        layer = (
            self.layer(media_type)
            if title is None
            else next(
                (x for x in self.layers if x.media_type == media_type and x.title == title), None
            )
        )
        if layer is None:
            raise StoreError(
                f"image '{self.name}' has no {media_type} layer",
                "rebuild the image with 'gpux build'",
            )
        return self.store.blobs.verified_path(layer.digest)


@dataclass(frozen=True)
class DamagedImage:
    """A name in the index whose image cannot be read: ``problem`` says why, ``hint`` the fix."""

    names: list[str]
    digest: str
    problem: str

    @property
    def hint(self) -> str:
        return repair_hint(self.names, self.digest)


def repair_hint(names: list[str], digest: str) -> str:
    """How to replace a damaged image: remove it, then pull it (a name with a registry host)
    or build it again. A rebuild or pull alone also repairs: a good copy replaces a bad blob."""
    if not names:
        return f"gpux rm {digests.short(digest)}, then build or pull the image again"
    fixes = []
    for name in names:
        first, _, rest = name.partition("/")
        pulled = bool(rest) and ("." in first or ":" in first or first == "localhost")
        again = f"gpux pull {name}" if pulled else f"gpux build -t {name} PROJECT"
        fixes.append(f"gpux rm {name} && {again}")
    return "; ".join(fixes)


class Store:
    """Images by name, over content-addressed blobs."""

    def __init__(self, root: Path | None = None, scratch: Path | None = None) -> None:
        """``scratch``: where what is derived from the images goes (stamps of verified blobs,
        TensorRT engines, unpacked handler code, folder layouts); default ``root``. A model
        folder mounted read-only (gpux/store/folder.py) keeps it under ``$GPUX_HOME``."""
        self.root = Path(root) if root is not None else env.home()
        self.scratch = Path(scratch) if scratch is not None else self.root
        self.blobs = BlobStore(self.root, self.scratch / "verified")
        self._index_path = self.root / "index.json"
        self._locks = self.root / "locks"

    # -- locking -------------------------------------------------------------------------------

    def writing(self) -> contextlib.AbstractContextManager[None]:
        """Held (shared) while new blobs are written, so no garbage collection runs meanwhile."""
        self._ensure_layout()
        return file_lock(self._locks / "gc.lock", shared=True)

    def _collecting(self) -> contextlib.AbstractContextManager[None]:
        self._ensure_layout()
        return file_lock(self._locks / "gc.lock", shared=False)

    def _index_lock(self) -> contextlib.AbstractContextManager[None]:
        return file_lock(self._locks / "index.lock")

    def _ensure_layout(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            layout = self.root / "oci-layout"
            if not layout.exists():
                _atomic_write(layout, json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        except OSError as exc:
            refused = MachineError.from_os_error(exc, self.root, what="the image store")
            if refused is not None:
                raise refused from exc
            raise StoreError(
                f"cannot write to the image store at {self.root}: {exc.strerror}",
                "set GPUX_HOME to a writable folder",
            ) from exc

    # -- index ---------------------------------------------------------------------------------

    def _read_index(self) -> dict[str, Any]:
        try:
            raw = self._index_path.read_bytes()
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": mediatypes.INDEX, "manifests": []}
        try:
            index = json.loads(raw)
            if not isinstance(index.get("manifests"), list):
                raise ValueError("no manifests list")
            return dict(index)
        except (ValueError, AttributeError) as exc:
            raise StoreError(
                f"the store index {self._index_path} is damaged ({exc})",
                f"restore it from a backup, or move {self.root} aside and rebuild your images",
            ) from None

    def _write_index(self, index: dict[str, Any]) -> None:
        _atomic_write(self._index_path, json.dumps(index, indent=2).encode())

    def _entries(self) -> list[dict[str, Any]]:
        """The well-formed entries of the index (malformed ones: :meth:`malformed_entries`)."""
        return [e for e in self._read_index()["manifests"] if _entry_problem(e) is None]

    def manifests(self) -> dict[str, list[str]]:
        """Every manifest digest the index names, with its names (in index order)."""
        found: dict[str, list[str]] = {}
        for entry in self._entries():
            names = found.setdefault(str(entry["digest"]), [])
            if name := self._entry_name(entry):
                names.append(name)
        return found

    def malformed_entries(self) -> list[tuple[int, str | None, str]]:
        """``(position, name, why)`` of every index entry no command can use (``name``: the
        name it still carries, if any)."""
        return [
            (position, self._entry_name(entry), why)
            for position, entry in enumerate(self._read_index()["manifests"], start=1)
            if (why := _entry_problem(entry)) is not None
        ]

    @staticmethod
    def _entry_name(entry: Any) -> str | None:
        annotations = entry.get("annotations") if isinstance(entry, dict) else None
        name = annotations.get(mediatypes.REF_NAME) if isinstance(annotations, dict) else None
        return name if isinstance(name, str) else None

    def _set_ref(self, name: str, descriptor: dict[str, Any] | None) -> None:
        with self._index_lock():
            index = self._read_index()
            manifests = [e for e in index["manifests"] if self._entry_name(e) != name]
            if descriptor is not None:
                manifests.append(
                    {**descriptor, "annotations": {mediatypes.REF_NAME: name}},
                )
            index["manifests"] = sorted(manifests, key=lambda e: self._entry_name(e) or "")
            self._write_index(index)

    # -- write ---------------------------------------------------------------------------------

    def write_image(
        self,
        reference: Reference,
        config: dict[str, Any],
        layers: list[LayerSource],
        annotations: dict[str, str] | None = None,
        progress: Progress | None = None,
    ) -> Image:
        """Store layers, config and manifest, then point ``reference`` at the manifest."""
        with self.writing():
            descriptors = []
            for source in layers:
                if source.path is not None:
                    layer_digest = self.blobs.put_file(source.path, progress=progress)
                elif source.data is not None:
                    layer_digest = self.blobs.put_bytes(source.data)
                elif source.digest is not None:
                    self.blobs.verified_path(source.digest)  # present and intact, or raises
                    layer_digest = source.digest
                else:  # pragma: no cover - programming error
                    raise ValueError("LayerSource needs a path or data")
                descriptors.append(
                    {
                        "mediaType": source.media_type,
                        "digest": layer_digest,
                        "size": self.blobs.size(layer_digest),
                        "annotations": {mediatypes.TITLE: source.title},
                    }
                )
            config_bytes = _canonical_json(config)
            config_digest = self.blobs.put_bytes(config_bytes)
            manifest = {
                "schemaVersion": 2,
                "mediaType": mediatypes.MANIFEST,
                "artifactType": mediatypes.ARTIFACT,
                "config": {
                    "mediaType": mediatypes.CONFIG,
                    "digest": config_digest,
                    "size": len(config_bytes),
                },
                "layers": descriptors,
                "annotations": {
                    mediatypes.CREATED: datetime.now(UTC).isoformat(timespec="seconds"),
                    **(annotations or {}),
                },
            }
            manifest_bytes = _canonical_json(manifest)
            manifest_digest = self.blobs.put_bytes(manifest_bytes)
            from gpux.store.code import mark_built

            mark_built(self, manifest_digest)  # before the name: a reader never sees it unmarked
            self._set_ref(
                reference.name,
                {
                    "mediaType": mediatypes.MANIFEST,
                    "digest": manifest_digest,
                    "size": len(manifest_bytes),
                },
            )
        return self.get(reference.name)

    def adopt(
        self,
        name: str,
        manifest_bytes: bytes,
        expected: str | None = None,
        just_written: frozenset[str] = frozenset(),
    ) -> Image:
        """Point ``name`` at a manifest whose blobs are already in the store (a pull, a load).

        The manifest is stored as given (its digest must stay the one the registry or the
        archive named: ``expected``), and only after every blob it lists is present and
        intact; the index is written last, so an interrupted transfer leaves no image.
        ``just_written``: blobs the caller has just stored through ``put_stream`` with their
        expected digest (hashed on the way in), which need no second hash.
        """
        import hashlib

        digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        if expected is not None and digest != expected:
            raise DigestMismatchError(
                f"manifest content does not match its digest: expected {expected}, got {digest}",
                "the source is corrupt or was changed in transit; fetch it again",
            )
        try:
            manifest = json.loads(manifest_bytes)
            blobs = [manifest["config"], *manifest.get("layers", [])]
            wanted = [(str(b["digest"]), int(b["size"])) for b in blobs]
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"not an image manifest ({type(exc).__name__}: {exc})",
                "the source does not hold a GPUX image",
            ) from None
        with self.writing():
            for blob_digest, size in wanted:
                if not self.blobs.exists(blob_digest) or self.blobs.size(blob_digest) != size:
                    raise StoreError(
                        f"blob {blob_digest} of manifest {digest} is missing or has the wrong size",
                        "transfer the image again",
                    )
                if blob_digest not in just_written:
                    self.blobs.verified_path(blob_digest)  # re-hashed unless stamped intact
            stored = self.blobs.put_bytes(manifest_bytes)
            self._set_ref(
                name,
                {"mediaType": mediatypes.MANIFEST, "digest": stored, "size": len(manifest_bytes)},
            )
        return self.get(name)

    # -- read ----------------------------------------------------------------------------------

    def find(self, text: str) -> str | None:
        """The manifest digest for a name, ``name@sha256:...``, or a unique digest prefix."""
        entries = self._entries()
        if _DIGEST_PREFIX.fullmatch(text):
            prefix = text.removeprefix("sha256:")
            matches = {
                str(e["digest"])
                for e in entries
                if str(e.get("digest", "")).startswith(f"sha256:{prefix}")
            }
            if len(matches) == 1:
                return matches.pop()
            if len(matches) > 1:
                raise StoreError(
                    f"digest prefix '{text}' matches {len(matches)} images",
                    "type more characters of the digest, or use the image name",
                )
        reference = parse(text)
        for entry in entries:
            if self._entry_name(entry) == reference.name:
                if reference.digest and entry["digest"] != reference.digest:
                    return None
                return str(entry["digest"])
        for position, name, why in self.malformed_entries():
            if name == reference.name:
                raise StoreError(
                    f"the store index entry of '{reference.name}' (entry {position}) is "
                    f"malformed: {why}",
                    f"'gpux rm {reference.name}' drops it; then build or pull the image again",
                )
        return None

    def get(self, text: str) -> Image:
        """Load an image by name or digest, verifying its manifest and config.

        A bare name (no tag, no digest) means ``NAME:latest``; when there is none, it means the
        newest tag of NAME, as ``gpux build`` of a GPUXfile with ``version: "1.0"`` stores
        ``NAME:1.0`` and users then type ``gpux run NAME``. Writes (``rm``, ``tag``, ``push``
        targets) never guess: they take the name as written."""
        manifest_digest = self.find(text)
        asked_name = None if _DIGEST_PREFIX.fullmatch(text) else parse(text).name
        if manifest_digest is None and _is_bare(text):
            asked_name = self.newest_tag(parse(text).repository)
            manifest_digest = self.find(asked_name) if asked_name else None
        if manifest_digest is None:
            tags = (
                self.tags_of(parse(text).repository) if not _DIGEST_PREFIX.fullmatch(text) else []
            )
            raise NotFoundError(
                f"image '{text}' not found"
                + (f" (its tags here: {', '.join(tags)})" if tags else ""),
                f"run 'gpux images' to list local images, or build it: gpux build -t {text} PATH",
            )
        image = self._load(manifest_digest)
        if asked_name is not None:
            asked = asked_name
            if asked in image.names:  # report the name the user used, not the first one
                image.names = [asked, *(n for n in image.names if n != asked)]
        return image

    def tags_of(self, repository: str) -> list[str]:
        """Every ``repository:tag`` name in the index for one repository."""
        return sorted(
            name
            for entry in self._entries()
            if (name := self._entry_name(entry)) and name.rpartition(":")[0] == repository
        )

    def newest_tag(self, repository: str) -> str | None:
        """The name of ``repository``'s most recently created image (ties: the last name)."""
        dated = []
        for name in self.tags_of(repository):
            try:
                created = self.get(name).created or ""
            except GPUXError:  # a damaged image is never the one a bare name picks
                continue
            dated.append((created, name))
        return max(dated)[1] if dated else None

    def _load(self, manifest_digest: str, entries: list[dict[str, Any]] | None = None) -> Image:
        manifest = _json_blob(self.blobs.open_verified(manifest_digest), manifest_digest)
        try:
            config_digest = digests.validate(manifest["config"]["digest"])
            for descriptor in [manifest["config"], *manifest["layers"]]:
                digests.validate(descriptor["digest"])
                int(descriptor["size"])
                if not isinstance(descriptor.get("annotations", {}), dict):
                    raise TypeError("annotations is not an object")
        except (KeyError, TypeError, ValueError):
            raise StoreError(
                f"manifest {digests.short(manifest_digest)} is malformed",
                "remove the image with 'gpux rm' and build or pull it again",
            ) from None
        config = _json_blob(self.blobs.open_verified(config_digest), config_digest)
        names = [
            name
            for e in (self._entries() if entries is None else entries)
            if e.get("digest") == manifest_digest and (name := self._entry_name(e))
        ]
        return Image(self, manifest_digest, manifest, config, names)

    def images(self) -> list[Image]:
        """Every named image that can be read (:meth:`survey` also lists the damaged ones)."""
        return self.survey()[0]

    def survey(self) -> tuple[list[Image], list[DamagedImage]]:
        """Every image in the index: those that can be read, and those that are damaged (a
        manifest or config missing, corrupt or malformed; a layer missing or of the wrong size;
        a malformed index entry that still carries a name). Layers are not re-hashed here:
        ``gpux verify`` does that."""
        images: dict[str, Image] = {}
        damaged: dict[str, DamagedImage] = {}
        index = self._read_index()  # read the index once, not once per image
        entries = [e for e in index["manifests"] if _entry_problem(e) is None]
        for entry in entries:
            digest = str(entry["digest"])
            if digest in images or digest in damaged:
                continue
            try:
                image = self._load(digest, entries)
                for layer in image.layers:
                    if not self.blobs.exists(layer.digest):
                        raise NotFoundError(f"layer blob {layer.digest} is missing")
                    if self.blobs.size(layer.digest) != layer.size:
                        raise DigestMismatchError(
                            f"layer blob {digests.short(layer.digest)} has "
                            f"{self.blobs.size(layer.digest)} bytes, its manifest says {layer.size}"
                        )
                images[digest] = image
            except (StoreError, NotFoundError) as exc:
                names = [n for e in entries if e["digest"] == digest and (n := self._entry_name(e))]
                damaged[digest] = DamagedImage(names, digest, exc.message)
        for position, name, why in self.malformed_entries():
            if name:
                problem = f"its index entry (entry {position}) is malformed: {why}"
                damaged[f"entry {position}"] = DamagedImage([name], "", problem)
        return (
            sorted(images.values(), key=lambda image: image.names),
            sorted(damaged.values(), key=lambda image: image.names),
        )

    def build_key(self, name: str) -> str | None:
        """The build key recorded on an image, without reading any layer (cheap no-op rebuilds)."""
        digest = self.find(name)
        return None if digest is None else self._build_key_of(digest)

    def _build_key_of(self, digest: str) -> str | None:
        """The build key of a manifest whose blobs are all present, else None."""
        if not self.blobs.exists(digest):
            return None
        try:
            manifest = json.loads(self.blobs.path(digest).read_bytes())
            blobs = [manifest["config"], *manifest["layers"]]
            if not all(self.blobs.exists(b["digest"]) for b in blobs):
                return None
            key = manifest.get("annotations", {}).get(mediatypes.BUILD_KEY)
            return str(key) if isinstance(key, str) else None
        except (ValueError, KeyError, TypeError, StoreError):
            return None

    def find_by_build_key(self, key: str) -> str | None:
        """A name of any complete image built with this build key (to reuse it under a new tag)."""
        for entry in self._entries():
            name = self._entry_name(entry)
            digest = entry.get("digest")
            if name and isinstance(digest, str) and self._build_key_of(digest) == key:
                return name
        return None

    # -- names ---------------------------------------------------------------------------------

    def tag(self, source: str, target: str) -> Image:
        image = self.get(source)
        reference = parse(target)
        self._set_ref(
            reference.name,
            {
                "mediaType": mediatypes.MANIFEST,
                "digest": image.digest,
                "size": self.blobs.size(image.digest),
            },
        )
        return self.get(reference.name)

    def remove(self, text: str, warn: Warn | None = None) -> list[str]:
        """Remove names (a digest removes every name of that image); free unreferenced blobs.

        A name whose index entry is malformed is removed too; like ``prune``, this drops every
        other malformed entry of the index, with a warning (``warn``) for each."""
        by_digest = _DIGEST_PREFIX.fullmatch(text) is not None
        try:
            digest = self.find(text)
        except StoreError:
            if by_digest:
                raise
            digest = None  # a malformed entry under this name: removing it is the fix
        named = not by_digest and any(
            name == parse(text).name for _, name, _ in self.malformed_entries()
        )
        if digest is None and not named:
            tags = [] if by_digest else self.tags_of(parse(text).repository)
            raise NotFoundError(
                f"image '{text}' not found"
                + (f" (its tags here: {', '.join(tags)})" if tags else ""),
                "name the tag to remove (gpux rm NAME:TAG); 'gpux images' lists them"
                if tags
                else "run 'gpux images' to list images",
            )
        with self._collecting():
            names = [
                n for e in self._entries() if e["digest"] == digest and (n := self._entry_name(e))
            ]
            removed = names if by_digest else [parse(text).name]
            for name in removed:
                self._set_ref(name, None)
            self._collect_garbage(dry_run=False, warn=warn)
        return removed

    # -- garbage ------------------------------------------------------------------------------

    def referenced(self) -> set[str]:
        """Every blob reachable from the index."""
        keep: set[str] = set()
        for entry in self._entries():
            digest = str(entry["digest"])
            if not self.blobs.exists(digest):
                continue
            keep.add(digest)
            try:
                manifest = json.loads(self.blobs.path(digest).read_bytes())
                keep.add(manifest["config"]["digest"])
                keep.update(layer["digest"] for layer in manifest["layers"])
            except (ValueError, KeyError, TypeError):
                continue
        return keep

    def prune(self, dry_run: bool = False, warn: Warn | None = None) -> tuple[int, int]:
        """Delete unreferenced blobs and abandoned partial writes; drop malformed index entries
        (each with a warning through ``warn``). Returns (files, bytes)."""
        with self._collecting():
            return self._collect_garbage(dry_run, warn)

    def _drop_malformed(self, dry_run: bool, warn: Warn | None) -> None:
        """Remove the index entries no command can use, saying which (so one can be restored)."""
        with self._index_lock():
            index = self._read_index()
            kept = []
            for position, entry in enumerate(index["manifests"], start=1):
                why = _entry_problem(entry)
                if why is None:
                    kept.append(entry)
                    continue
                shown = json.dumps(entry)
                shown = shown if len(shown) <= 200 else shown[:200] + "..."
                verb = "would drop" if dry_run else "dropped"
                _warn(
                    warn, f"{verb} malformed entry {position} of the store index ({why}): {shown}"
                )
            if len(kept) != len(index["manifests"]) and not dry_run:
                index["manifests"] = kept
                self._write_index(index)

    def _collect_garbage(self, dry_run: bool, warn: Warn | None = None) -> tuple[int, int]:
        self._drop_malformed(dry_run, warn)
        keep = self.referenced()
        count = freed = 0
        for digest in list(self.blobs):
            if digest not in keep:
                count += 1
                freed += self.blobs.size(digest) if dry_run else self.blobs.delete(digest)
        # Partial writes are only abandoned when nobody holds the write lock: we hold it
        # exclusively here, so every file in tmp/ belongs to a process that died.
        if self.blobs.tmp.is_dir():
            for partial in self.blobs.tmp.iterdir():
                count += 1
                freed += partial.stat().st_size
                if not dry_run:
                    partial.unlink(missing_ok=True)
        # So does an extraction of an archive member (gpux.builder.archive_member), which
        # writes under the shared lock too.
        for partial in self.root.glob("cache/extracted/*/.extract-*.partial"):
            count += 1
            freed += partial.stat().st_size
            if not dry_run:
                partial.unlink(missing_ok=True)
        # Folder layouts (gpux.store.folders) of images that are gone: links to deleted blobs.
        from gpux.store.folders import stale_layouts

        for layout in stale_layouts(self.root, keep):
            count += 1
            if not dry_run:
                shutil.rmtree(layout, ignore_errors=True)
        # An index write killed before its rename leaves its temp file beside index.json. Index
        # writes happen under the index lock: with it held, every such file is abandoned.
        with self._index_lock():
            for partial in self.root.glob(f".{self._index_path.name}-*.tmp"):
                count += 1
                freed += partial.stat().st_size
                if not dry_run:
                    partial.unlink(missing_ok=True)
        return count, freed

    def check(self) -> list[str]:
        """Problems found, as ``name: problem`` (empty when healthy). Every blob is re-hashed,
        whatever its stamp says (see :mod:`gpux.store.verify`)."""
        from gpux.store.verify import verify

        return [
            f"{name}: {problem}"
            for image in verify(self).images
            for name in image.names or ["?"]
            for problem in image.problems
        ]


_DIGEST_PREFIX = re.compile(r"(sha256:)?[0-9a-f]{6,64}")


def _entry_problem(entry: Any) -> str | None:
    """Why an index entry cannot be used (None: it can): each entry must be an object with a
    valid digest, and a name (when it has one) that is a string."""
    if not isinstance(entry, dict):
        return f"{value_kind(entry)}, not an object"
    digest = entry.get("digest")
    if not isinstance(digest, str) or not digests.DIGEST.fullmatch(digest):
        return f"invalid digest {digest!r}"
    annotations = entry.get("annotations", {})
    if not isinstance(annotations, dict):
        return "its annotations are not an object"
    if not isinstance(annotations.get(mediatypes.REF_NAME, ""), str):
        return "its name is not a string"
    return None


def _warn(warn: Warn | None, message: str) -> None:
    if warn is not None:
        warn(message)
    else:
        warnings.warn(message, stacklevel=4)


def _canonical_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _json_blob(data: bytes, digest: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
        if isinstance(value, dict):
            return value
    except ValueError:
        pass
    raise StoreError(
        f"blob {digests.short(digest)} is not a JSON document",
        "remove the image with 'gpux rm' and build or pull it again",
    )


def _atomic_write(path: Path, data: bytes) -> None:
    with atomic_file(path) as out:
        out.write(data)


def _is_bare(text: str) -> bool:
    """A name with neither a tag nor a digest (``minilm``, ``localhost:5000/team/minilm``)."""
    return (
        "@" not in text
        and ":" not in text.rpartition("/")[2]
        and not _DIGEST_PREFIX.fullmatch(text)
    )
