"""One file taken out of a zip (also .whl) or tar archive: a source's ``member``.

The archive comes from anyone (a URL, the Hub, a download someone sent), so extraction trusts
nothing in it:

* the member's name is a plain relative path (:func:`gpux.config.paths.check_member_name`), so
  its place in the cache, ``$GPUX_HOME/cache/extracted/<archive sha256>/<member>``, is inside
  that folder;
* a symbolic or hard link, a folder or a device is refused: only a regular file's own bytes
  come out;
* its size is capped (``GPUX_MAX_MEMBER_BYTES``): by the size the archive declares, before a byte
  is read, and again while reading, by what actually comes out; a member more than
  :data:`BOMB_RATIO` times the size of its archive is a decompression bomb, refused at once;
* it is streamed to a temporary file beside its final place, then renamed, so the cache holds
  whole members only. The write happens under the store's shared write lock: ``gpux prune``,
  which takes that lock exclusively, removes the temporary files of extractions that were
  killed (:data:`PARTIAL_GLOB`).
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from gpux import env
from gpux.config.paths import check_member_name
from gpux.errors import SourceError
from gpux.store import digest as digests

__all__ = ["PARTIAL_GLOB", "extract_member", "folder_members"]

PARTIAL_GLOB = "cache/extracted/*/.extract-*.partial"
"""Temporary files of extractions under ``$GPUX_HOME``; those left when nobody holds the store's
write lock belong to extractions that died."""

BOMB_RATIO = 100
"""A member larger than this many times its whole archive is refused (Apache POI's zip bomb
rule): ONNX weights are noise to a compressor (a zipped model is 90% of its size), while 1.5 GiB
of zeros deflate to 1.5 MB."""
BOMB_GRACE_BYTES = 16 << 20
"""Below this size a member is never called a bomb: text (a tokenizer.json, labels) compresses
well, and a small file costs little to extract whatever its ratio."""

_LIST_IT = "list the archive (unzip -l / tar tf) and fix 'member'"


def extract_member(archive: Path, archive_sha256: str, member: str, what: str) -> Path:
    """The file ``member`` of ``archive``, cached by the archive's hash; ``what`` names the
    source in errors (``model``, ``preprocess 'text' tokenizer``)."""
    try:
        check_member_name(member)
    except ValueError as exc:
        raise SourceError(f"{what}: {exc}", _LIST_IT) from exc
    folder = env.home() / "cache" / "extracted" / archive_sha256
    target = folder / member
    if target.is_file():
        return target
    limit = env.max_member_bytes()
    from gpux.store import Store

    store = Store()
    with store.writing(), _open_member(archive, member, what, limit) as stream:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=folder, prefix=".extract-", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as out:
                _copy(stream, out, member, what, limit)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    return target


@contextmanager
def _open_member(archive: Path, member: str, what: str, limit: int) -> Iterator[IO[bytes]]:
    """A stream of the member's bytes, once its entry says it is a regular file within
    ``limit``; every way the archive can be unreadable becomes a :class:`SourceError`."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                info = _zip_entry(bundle, member, what)
                _check_size(info.file_size, archive, member, what, limit)
                with bundle.open(info) as stream:
                    yield stream
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as bundle:
                entry = _tar_entry(bundle, member, what)
                _check_size(entry.size, archive, member, what, limit)
                contents = bundle.extractfile(entry)
                assert contents is not None  # a regular file always has a stream
                with contents:
                    yield contents
        else:
            raise SourceError(
                f"{what}: '{archive.name}' is not a zip or tar archive, so it has no '{member}'",
                "remove 'member' when the source is the file itself",
            )
    except (zipfile.BadZipFile, zlib.error, tarfile.TarError, EOFError) as exc:
        raise SourceError(
            f"{what}: cannot read '{member}' from '{archive.name}': {exc}",
            "the archive is damaged; fetch it again, or check its sha256",
        ) from exc


def _zip_entry(bundle: zipfile.ZipFile, member: str, what: str) -> zipfile.ZipInfo:
    try:
        info = bundle.getinfo(member)
    except KeyError:
        raise _missing(member, what) from None
    # The Unix mode, when a Unix zip wrote the entry; its type bits may be unset (Python's
    # zipfile writes permissions only), which is a regular file.
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise _a_link(member, what, "a symbolic link")
    if info.is_dir() or kind not in (0, stat.S_IFREG):
        raise _not_a_file(member, what)
    return info


def _tar_entry(bundle: tarfile.TarFile, member: str, what: str) -> tarfile.TarInfo:
    try:
        entry = bundle.getmember(member)
    except KeyError:
        raise _missing(member, what) from None
    if entry.issym():
        raise _a_link(member, what, f"a symbolic link to '{entry.linkname}'")
    if entry.islnk():
        raise _a_link(member, what, f"a hard link to '{entry.linkname}'")
    if not entry.isfile():
        raise _not_a_file(member, what)
    return entry


def _copy(stream: IO[bytes], out: IO[bytes], member: str, what: str, limit: int) -> None:
    """Copy in chunks, stopping one byte past ``limit``: a zip may declare a smaller size than
    its data inflates to."""
    done = 0
    while chunk := stream.read(digests.CHUNK):
        done += len(chunk)
        if done > limit:
            raise _too_big(member, what, limit, "inflates to")
        out.write(chunk)


def _check_size(size: int, archive: Path, member: str, what: str, limit: int) -> None:
    """The size the archive declares, against ``limit`` and against the archive's own size."""
    if size > limit:
        raise _too_big(member, what, limit, f"is {size:,} bytes,")
    packed = archive.stat().st_size
    if size > BOMB_GRACE_BYTES and size > BOMB_RATIO * packed:
        raise SourceError(
            f"{what}: archive member '{member}' is {size:,} bytes, {size // max(packed, 1):,} "
            f"times the archive ({packed:,} bytes): a decompression bomb, not a model",
            "ONNX weights barely compress; if the file is really this compressible, extract "
            "it yourself and name the file as the source",
        )


def _too_big(member: str, what: str, limit: int, size: str) -> SourceError:
    return SourceError(
        f"{what}: archive member '{member}' {size} more than the {limit:,} bytes GPUX takes "
        "out of an archive",
        "an ONNX model without external data is under 2 GiB; check 'member', or raise the "
        "limit with GPUX_MAX_MEMBER_BYTES",
    )


def _missing(member: str, what: str) -> SourceError:
    return SourceError(f"{what}: the archive has no file '{member}'", _LIST_IT)


def _a_link(member: str, what: str, link: str) -> SourceError:
    return SourceError(
        f"{what}: archive member '{member}' is {link}; GPUX takes only regular files out of an "
        "archive",
        "name the file the link points to in 'member'",
    )


def _not_a_file(member: str, what: str) -> SourceError:
    return SourceError(
        f"{what}: archive member '{member}' is not a regular file (a folder or a device)",
        _LIST_IT,
    )


def folder_members(archive: Path, folder: str | None, what: str) -> dict[str, str]:
    """The regular files under ``folder/`` in ``archive`` (the whole archive when ``folder`` is
    None): {path relative to the folder: member name}. Links and devices are refused as
    :func:`extract_member` refuses them; hidden files (``.DS_Store``, ``__MACOSX``) left out."""
    prefix = "" if folder is None else folder.strip("/") + "/"
    found: dict[str, str] = {}
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                for info in bundle.infolist():
                    relative = _under(info.filename, prefix)
                    if relative is not None and not info.is_dir():
                        _zip_entry(bundle, info.filename, what)
                        found[relative] = info.filename
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as bundle:
                for entry in bundle.getmembers():
                    relative = _under(entry.name.removeprefix("./"), prefix)
                    if relative is not None and not entry.isdir():
                        _tar_entry(bundle, entry.name, what)
                        found[relative] = entry.name
        else:
            raise SourceError(
                f"{what}: '{archive.name}' is neither a folder nor a zip or tar archive",
                "name the model folder, or an archive that holds it",
            )
    except (zipfile.BadZipFile, zlib.error, tarfile.TarError, EOFError) as exc:
        raise SourceError(
            f"{what}: cannot list '{archive.name}': {exc}",
            "the archive is damaged; fetch it again, or check its sha256",
        ) from exc
    if not found:
        raise SourceError(
            f"{what}: the archive has no files under '{folder}'"
            if folder
            else f"{what}: the archive is empty",
            _LIST_IT,
        )
    return dict(sorted(found.items()))


def _under(name: str, prefix: str) -> str | None:
    """``name`` relative to the folder ``prefix``; None outside it or hidden."""
    if not name.startswith(prefix) or name == prefix:
        return None
    relative = name[len(prefix) :]
    if any(part.startswith((".", "__MACOSX")) for part in relative.split("/")):
        return None
    return relative
