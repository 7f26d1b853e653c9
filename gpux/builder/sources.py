"""Resolve a GPUXfile's model source to a verified local file.

* a project-relative path;
* an ``https://`` URL with a required sha256 (``http://`` only for loopback hosts, for tests and
  local mirrors), downloaded once into ``$GPUX_HOME/cache/downloads`` and re-verified on use;
* ``hf:org/repo/path/to/file.onnx[@revision]``, fetched with huggingface_hub (its cache, its
  token handling, ``HF_ENDPOINT`` for mirrors);
* any of these plus ``member``: one file inside a zip (.whl) or tar archive.

The same rules fetch tokenizers (``preprocess[].text.tokenizer``).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from gpux import env
from gpux.config.common import FileSource
from gpux.config.load import Project
from gpux.errors import NotFoundError, SourceError
from gpux.store import digest as digests

ProgressCallback = Callable[[int, int | None], None]  # (bytes done, total or None)

_HF = re.compile(r"^hf:(?P<repo>[\w.-]+/[\w.-]+)/(?P<path>[^@]+?)(?:@(?P<rev>[\w./-]+))?$")
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@dataclass
class ResolvedModel:
    path: Path
    sha256: str  # hex
    kind: str  # "local" | "url" | "hf"
    origin: str  # what the GPUXfile said
    revision: str | None = None
    archive_sha256: str | None = None  # when the file was taken out of an archive

    @property
    def pinned(self) -> str:
        """The hash of what the source names (the archive, for a member): the build key's."""
        return self.archive_sha256 or self.sha256

    def to_json(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "origin": self.origin,
            "sha256": self.sha256,
            "revision": self.revision,
        }


def source_kind(source: str) -> str:
    if source.startswith(("https://", "http://")):
        return "url"
    if source.startswith("hf:"):
        return "hf"
    return "local"


def is_pinned(project: Project) -> bool:
    """True when the sources cannot change under the same GPUXfile text (for no-op rebuilds)."""
    return all(_pinned(spec.source) for spec in file_sources(project).values())


def _pinned(source: str) -> bool:
    if source_kind(source) == "hf":
        match = _HF.match(source)
        return bool(match and match["rev"] and re.fullmatch(r"[0-9a-f]{40}", match["rev"]))
    return True


def file_sources(project: Project) -> dict[str, FileSource]:
    """Every file the build fetches, by what it is for: the model, then tokenizers."""
    found: dict[str, FileSource] = {"model": project.config.model}
    for entry in project.config.preprocess:
        if entry.text is not None:
            found[f"{entry.name}.tokenizer"] = entry.text.tokenizer
    return found


def local_path(project: Project) -> Path | None:
    model = project.config.model
    if source_kind(model.source) != "local" or model.member:
        return None
    return (project.root / model.source).resolve()


def resolve(
    project: Project,
    progress: ProgressCallback | None = None,
    local_sha256: str | None = None,
) -> ResolvedModel:
    """The model as a verified local file. ``local_sha256``: the hash of a local model that the
    caller computed a moment ago (the build key needs it first), so a large file is read once."""
    return resolve_file(project.root, project.config.model, "model", progress, local_sha256)


def resolve_file(
    root: Path,
    spec: FileSource,
    what: str,
    progress: ProgressCallback | None = None,
    local_sha256: str | None = None,
) -> ResolvedModel:
    """A file source (model, tokenizer) as a verified local file; ``what`` names it in errors."""
    source = spec.source
    expected = spec.sha256.lower() if spec.sha256 else None
    kind = source_kind(source)
    if kind == "url":
        assert expected is not None  # enforced when the GPUXfile was completed
        path = _download(source, expected, progress)
        resolved = ResolvedModel(path, expected, kind, source)
    elif kind == "hf":
        path, revision = _from_hub(source)
        resolved = ResolvedModel(path, sha256_hex(path), kind, source, revision)
    else:
        path = (root / source).resolve()
        if not path.is_file():
            raise NotFoundError(
                f"{what} file '{source}' not found (looked for {path})",
                f"fix the {what}'s source in the GPUXfile; paths are relative to the GPUXfile's folder",
            )
        resolved = ResolvedModel(path, local_sha256 or sha256_hex(path), kind, source)
    if expected and resolved.sha256 != expected:
        raise SourceError(
            f"{what} '{source}' has sha256 {resolved.sha256}, but the GPUXfile expects {expected}",
            "update its sha256 if the file changed on purpose, otherwise restore the file",
        )
    if spec.member:
        member = _extract_member(resolved.path, resolved.sha256, spec.member, what)
        resolved = ResolvedModel(
            member,
            sha256_hex(member),
            resolved.kind,
            f"{source}#{spec.member}",
            resolved.revision,
            archive_sha256=resolved.sha256,
        )
    return resolved


def _extract_member(archive: Path, archive_sha256: str, member: str, what: str) -> Path:
    """One file out of a zip (also .whl) or tar archive, cached by the archive's hash."""
    import tarfile
    import zipfile

    target = env.home() / "cache" / "extracted" / archive_sha256 / member
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                data = bundle.read(member)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as bundle:
                entry = bundle.getmember(member)
                stream = bundle.extractfile(entry) if entry.isfile() else None
                if stream is None:
                    raise KeyError(member)
                data = stream.read()
        else:
            raise SourceError(
                f"{what}: '{archive.name}' is not a zip or tar archive, so it has no '{member}'",
                "remove 'member' when the source is the file itself",
            )
    except KeyError:
        raise SourceError(
            f"{what}: the archive has no file '{member}'",
            "list the archive (unzip -l / tar tf) and fix 'member'",
        ) from None
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".extract-")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(partial, target)
    return target


def sha256_hex(path: Path) -> str:
    return digests.of_file(path)[0].split(":", 1)[1]


def _download(url: str, sha256: str, progress: ProgressCallback | None) -> Path:
    parsed = urlparse(url)
    if parsed.scheme == "http" and parsed.hostname not in _LOOPBACK:
        raise SourceError(
            f"refusing to download over plain http: {url}",
            "use an https:// URL (http is allowed only for localhost)",
        )
    cache = env.home() / "cache" / "downloads"
    target = cache / sha256
    if target.is_file() and sha256_hex(target) == sha256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    import hashlib
    import urllib.error
    import urllib.request

    fd, tmp_name = tempfile.mkstemp(dir=cache, prefix="download-", suffix=".partial")
    hasher = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "gpux"})
        with urllib.request.urlopen(request, timeout=60) as response, os.fdopen(fd, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := response.read(digests.CHUNK):
                out.write(chunk)
                hasher.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        actual = hasher.hexdigest()
        if actual != sha256:
            raise SourceError(
                f"download of {url} has sha256 {actual}, but the GPUXfile expects {sha256}",
                "the file changed on the server or the sha256 is wrong; check model.sha256",
            )
        from gpux.store.blobs import _make_readable

        _make_readable(Path(tmp_name))
        os.replace(tmp_name, target)
        return target
    except urllib.error.HTTPError as exc:
        raise SourceError(
            f"cannot download {url}: HTTP {exc.code} {exc.reason}",
            "check the URL in model.source",
        ) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SourceError(
            f"cannot download {url}: {reason}",
            "check your network connection and the URL, or download the file and use a local path",
        ) from None
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _from_hub(source: str) -> tuple[Path, str | None]:
    match = _HF.match(source)
    if not match:
        raise SourceError(
            f"invalid Hugging Face source {source!r}",
            "write it as hf:org/repo/path/to/model.onnx@revision",
        )
    try:
        from huggingface_hub import constants as hub_constants
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:  # pragma: no cover - a dependency of gpux
        raise SourceError(
            "hf: sources need huggingface_hub", "pip install huggingface_hub"
        ) from None
    try:
        path = hf_hub_download(
            repo_id=match["repo"], filename=match["path"], revision=match["rev"] or None
        )
    except RepositoryNotFoundError:
        raise SourceError(
            f"Hugging Face repository '{match['repo']}' not found (or private)",
            "check the name; for private repositories set HF_TOKEN",
        ) from None
    except RevisionNotFoundError:
        raise SourceError(
            f"revision '{match['rev']}' not found in '{match['repo']}'",
            "use a branch, tag or commit hash that exists",
        ) from None
    except LocalEntryNotFoundError:
        # A subclass of EntryNotFoundError, raised when the Hub cannot be reached (or
        # HF_HUB_OFFLINE is set) and the file is not cached: the file may well exist.
        if hub_constants.HF_HUB_OFFLINE:
            raise SourceError(
                f"cannot fetch {source}: HF_HUB_OFFLINE is set and the file is not in the "
                "Hugging Face cache",
                "unset HF_HUB_OFFLINE to download it once; later builds use the cache",
            ) from None
        raise SourceError(
            f"cannot fetch {source}: the Hugging Face Hub at {hub_constants.ENDPOINT} "
            "cannot be reached and the file is not in the local cache",
            "check your network connection and HF_ENDPOINT (for mirrors), or download the file "
            "and use a local path",
        ) from None
    except EntryNotFoundError:
        raise SourceError(
            f"file '{match['path']}' not found in '{match['repo']}'",
            "check the path inside the repository",
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise SourceError(
            f"cannot fetch {source}: {str(exc).splitlines()[0]}",
            "check your network connection, HF_ENDPOINT and HF_TOKEN",
        ) from None
    return Path(path), match["rev"]
