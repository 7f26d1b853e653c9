"""Resolve a GPUXfile's model source to a verified local file.

* a project-relative path;
* an ``https://`` URL with a required sha256 (``http://`` only for loopback hosts, for tests and
  local mirrors), downloaded once into ``$GPUX_HOME/cache/downloads`` and re-verified on use;
* ``hf:org/repo[/path/to/file.onnx][@revision]`` (also ``hf://``, ``hf.co/``, ``huggingface.co/``:
  :mod:`gpux.config.hub_source`), fetched with huggingface_hub (its cache, its token handling,
  ``HF_ENDPOINT`` for mirrors); without a path, the repository's one .onnx file. A branch or tag
  is resolved to a commit, recorded in the image; only a commit is pinned;
* any of these plus ``member``: one regular file inside a zip (.whl) or tar archive, streamed
  into the cache with its name and size checked (:mod:`gpux.builder.archive_member`).

The same rules fetch tokenizers (``preprocess[].text.tokenizer``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from gpux import env
from gpux.builder.archive_member import extract_member
from gpux.config.common import FileSource
from gpux.config.hub_source import COMMIT, HubSource, parse_hub_source
from gpux.config.hub_source import source_kind as source_kind  # the build asks this module
from gpux.config.load import Project
from gpux.config.paths import project_file
from gpux.errors import NotFoundError, SourceError
from gpux.store import digest as digests

ProgressCallback = Callable[[int, int | None], None]  # (bytes done, total or None)

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@dataclass
class ResolvedModel:
    path: Path
    sha256: str  # hex
    kind: str  # "local" | "url" | "hf"
    origin: str  # what the GPUXfile said
    revision: str | None = None  # for hf: the commit the file was taken from
    archive_sha256: str | None = None  # when the file was taken out of an archive
    warnings: list[str] = field(default_factory=list)  # for the build output, not the image

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


def is_pinned(project: Project) -> bool:
    """True when the sources cannot change under the same GPUXfile text (for no-op rebuilds)."""
    return all(_pinned(spec.source) for spec in file_sources(project).values())


def _pinned(source: str) -> bool:
    if source_kind(source) == "hf":
        try:
            return parse_hub_source(source).pinned
        except SourceError:
            return False  # resolving it says what is wrong
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
        path, commit, warnings = _from_hub(source, what)
        resolved = ResolvedModel(path, sha256_hex(path), kind, source, commit, warnings=warnings)
    else:
        path = project_file(root, source, what)
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
        member = extract_member(resolved.path, resolved.sha256, spec.member, what)
        resolved = ResolvedModel(
            member,
            sha256_hex(member),
            resolved.kind,
            f"{source}#{spec.member}",
            resolved.revision,
            archive_sha256=resolved.sha256,
            warnings=resolved.warnings,
        )
    return resolved


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
        from gpux.store.blobs import make_readable

        make_readable(Path(tmp_name))
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


# --- Hugging Face Hub -------------------------------------------------------------------------
# huggingface_hub does the transfers, the cache ($HF_HOME/hub), the token (HF_TOKEN or
# `hf auth login`) and the endpoint (HF_ENDPOINT, for mirrors). GPUX adds: the revision resolved to
# a commit (recorded in the image), the repository's one .onnx when no path is given, a fallback
# to the cache when the Hub cannot be reached, and one message with a hint per failure.


@dataclass
class HubListing:
    """The files of one commit of a repository."""

    commit: str
    files: dict[str, int | None]  # path in the repository -> size in bytes, when known
    cached: bool  # the Hub could not be reached: read from the local cache (files fetched before)


def _from_hub(source: str, what: str) -> tuple[Path, str, list[str]]:
    """The file an ``hf:`` source names, from huggingface_hub's cache (downloaded when missing or
    when a branch moved), the commit it comes from, and warnings for the build output."""
    hub = parse_hub_source(source)
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of gpux
        raise SourceError(
            "hf: sources need huggingface_hub", "pip install huggingface_hub"
        ) from None
    if hub.path and hub.revision and COMMIT.fullmatch(hub.revision):
        cached = try_to_load_from_cache(hub.repo, hub.path, revision=hub.revision)
        if isinstance(cached, str):  # a commit never changes: no need to ask the Hub
            return Path(cached), hub.revision, []
    with hub_errors(source, hub):
        listing = hub_listing(hub, source)
        filename = hub.path or default_file(hub, listing, what, source)
        if not listing.cached and filename not in listing.files:
            raise missing_file(hub, listing, filename)
        path = Path(
            hf_hub_download(
                hub.repo,
                filename,
                revision=listing.commit if listing.cached else hub.revision,
                local_files_only=listing.cached,
            )
        )
    commit = snapshot_commit(path, filename) or listing.commit
    warnings = []
    if listing.cached and not hub.pinned and not hub_offline():
        warnings.append(
            f"the Hugging Face Hub at {hub_endpoint()} cannot be reached: {source} is the copy "
            f"cached from commit {commit[:12]}, which may be out of date"
        )
    return path, commit, warnings


def hub_folder(source: str, what: str) -> tuple[Path, dict[str, Path], str, list[str]]:
    """The files under the folder an ``hf:org/repo[/folder][@revision]`` source names (the whole
    repository without a folder), from huggingface_hub's cache, downloaded when missing: (the
    folder in the cache's snapshot, {path in the folder: file}, the commit, warnings)."""
    hub = parse_hub_source(source)
    from huggingface_hub import hf_hub_download

    prefix = f"{hub.path.strip('/')}/" if hub.path else ""
    with hub_errors(source, hub):
        listing = hub_listing(hub, source)
        names = [
            name
            for name in sorted(listing.files)
            if name.startswith(prefix)
            and not any(part.startswith(".") for part in name[len(prefix) :].split("/"))
        ]
        if not names:
            raise SourceError(
                f"{what}: '{hub.at}' has no files under '{hub.path or '/'}'",
                f"check the folder's path in the repository ({hub_endpoint()}/{hub.repo})",
            )
        files = {
            name[len(prefix) :]: Path(
                hf_hub_download(
                    hub.repo,
                    name,
                    revision=listing.commit if listing.cached else hub.revision,
                    local_files_only=listing.cached,
                )
            )
            for name in names
        }
    first = next(iter(files.values()))
    folder = first.parents[len(PurePosixPath(names[0]).parts) - 1]
    if prefix:
        folder = folder / prefix.rstrip("/")
    warnings = []
    if listing.cached and not hub.pinned and not hub_offline():
        warnings.append(
            f"the Hugging Face Hub at {hub_endpoint()} cannot be reached: {source} is the copy "
            f"cached from commit {listing.commit[:12]}, which may be out of date"
        )
    return folder, files, listing.commit, warnings


def hub_listing(hub: HubSource, source: str) -> HubListing:
    """The commit ``hub.revision`` names and its files: from the Hub, or, when the Hub cannot
    be reached (or HF_HUB_OFFLINE is set), from the local cache. Call inside ``hub_errors``."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if hub_offline():
        return _cached_listing(hub, source)
    try:
        info = HfApi().model_info(hub.repo, revision=hub.revision, files_metadata=True)
    except HfHubHTTPError as exc:
        if exc.response is None or exc.response.status_code < 500:
            raise  # the Hub answered: not found, no access...
        return _cached_listing(hub, source)  # the Hub is down
    except _unreachable_errors():
        return _cached_listing(hub, source)
    if not info.sha:
        raise SourceError(
            f"cannot fetch {source}: {hub_endpoint()} answered without a commit hash",
            "check that HF_ENDPOINT points to a Hugging Face Hub (or a mirror of one)",
        )
    files = {sibling.rfilename: sibling.size for sibling in info.siblings or []}
    return HubListing(info.sha, files, cached=False)


def _cached_listing(hub: HubSource, source: str) -> HubListing:
    """What the cache holds of ``hub.revision`` (its documented layout: refs/<branch> holds a
    commit, snapshots/<commit>/ the files fetched from it)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    folder = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=hub.repo, repo_type="model")
    commit = hub.revision if hub.pinned else None
    ref = folder / "refs" / (hub.revision or "main")
    if commit is None and ref.is_file():
        commit = ref.read_text().strip()
    snapshot = folder / "snapshots" / commit if commit else None
    if commit is None or snapshot is None or not snapshot.is_dir():
        raise _unreachable(source, "the file" if hub.path else "the repository")
    files: dict[str, int | None] = {
        entry.relative_to(snapshot).as_posix(): None
        for entry in snapshot.rglob("*")
        if entry.is_file()
    }
    return HubListing(commit, files, cached=True)


def default_file(hub: HubSource, listing: HubListing, what: str, source: str) -> str:
    """The file a source without a path means: the repository's one .onnx for the model."""
    if what != "model":
        return "tokenizer.json"
    found = sorted(name for name in listing.files if name.endswith(".onnx"))
    if len(found) == 1:
        return found[0]
    revision = hub.revision or "main"
    where = "the cached copy of " if listing.cached else ""
    if not found:
        raise SourceError(
            f"{source}: {where}'{hub.repo}' at {revision} holds no .onnx file",
            "name the model file: hf:org/repo/path/to/model.onnx@revision",
        )
    raise SourceError(
        f"{source}: {where}'{hub.repo}' at {revision} holds {len(found)} .onnx files "
        f"({', '.join(found)}); GPUX cannot tell which one is the model",
        f"name one in the source, like hf:{hub.repo}/{found[0]}@{revision}",
    )


def missing_file(hub: HubSource, listing: HubListing, filename: str) -> SourceError:
    suffix = PurePosixPath(filename).suffix
    similar = sorted(name for name in listing.files if suffix and name.endswith(suffix))
    revision = hub.revision or "main"
    hint = "check the path inside the repository"
    if similar:
        shown = ", ".join(similar[:10]) + (", ..." if len(similar) > 10 else "")
        hint = f"the {suffix} files there: {shown}"
    return SourceError(
        f"file '{filename}' not found in '{hub.repo}' at {revision} (commit {listing.commit[:12]})",
        hint,
    )


def snapshot_commit(path: Path, filename: str) -> str | None:
    """The commit of a file in the cache: its path is snapshots/<commit>/<filename>."""
    snapshot = path
    for _ in PurePosixPath(filename).parts:
        snapshot = snapshot.parent
    return snapshot.name if COMMIT.fullmatch(snapshot.name) else None


@contextlib.contextmanager
def hub_errors(source: str, hub: HubSource) -> Iterator[None]:
    """huggingface_hub's failures as GPUX errors: one message and a hint each, no token."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError:
        raise SourceError(
            f"cannot fetch {source}: '{hub.repo}' is gated",
            f"accept its conditions on {hub_endpoint()}/{hub.repo}, then set HF_TOKEN to a token "
            "of that account",
        ) from None
    except RepositoryNotFoundError:
        if get_token() is None:
            raise SourceError(
                f"Hugging Face repository '{hub.repo}' not found, or it is private and "
                "HF_TOKEN is not set",
                "check the name; for a private repository set HF_TOKEN to a token that can read it",
            ) from None
        raise SourceError(
            f"Hugging Face repository '{hub.repo}' not found, or the token in HF_TOKEN cannot "
            "read it",
            "check the name, and the token's access to the repository",
        ) from None
    except RevisionNotFoundError:
        raise SourceError(
            f"revision '{hub.revision}' not found in '{hub.repo}'",
            "use a branch, tag or commit hash that exists",
        ) from None
    except LocalEntryNotFoundError:
        # The Hub cannot be reached (or HF_HUB_OFFLINE is set) and the file is not cached: the
        # file may well exist.
        raise _unreachable(source, "the file" if hub.path else "the repository") from None
    except EntryNotFoundError:
        raise SourceError(
            f"file '{hub.path}' not found in '{hub.repo}'", "check the path inside the repository"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 401 and get_token() is not None:
            raise SourceError(
                f"cannot fetch {source}: the Hugging Face Hub at {hub_endpoint()} rejected the "
                "token in HF_TOKEN",
                f"set HF_TOKEN to a valid token (see {hub_endpoint()}/settings/tokens)",
            ) from None
        raise SourceError(
            f"cannot fetch {source}: {str(exc).splitlines()[0]}",
            "check your network connection, HF_ENDPOINT and HF_TOKEN",
        ) from None
    except _unreachable_errors():
        raise _unreachable(source, "the file" if hub.path else "the repository") from None


def _unreachable(source: str, thing: str) -> SourceError:
    if hub_offline():
        return SourceError(
            f"cannot fetch {source}: HF_HUB_OFFLINE is set and {thing} is not in the "
            "Hugging Face cache",
            "unset HF_HUB_OFFLINE to download it once; later builds use the cache",
        )
    return SourceError(
        f"cannot fetch {source}: the Hugging Face Hub at {hub_endpoint()} cannot be reached "
        f"and {thing} is not in the local cache",
        "check your network connection and HF_ENDPOINT (for mirrors), or download the file "
        "and use a local path",
    )


def _unreachable_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub lets through when the Hub cannot be reached: its HTTP client's
    transport errors (httpx2 today, requests in older releases) and timeouts. Offline mode is a
    ConnectionError."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "ConnectionError"),
        ("requests", "Timeout"),
    ):
        error = getattr(sys.modules.get(module), name, None)
        if isinstance(error, type) and issubclass(error, BaseException):
            found.append(error)
    return tuple(found)


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)
