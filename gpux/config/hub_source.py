"""The spellings of a Hugging Face Hub source, in a GPUXfile and for ``gpux pull``.

``org/repo[/path/in/repo][@revision]`` after one of these prefixes:

* ``hf:`` (GPUX's own form), ``hf://`` (huggingface_hub's file-system URLs);
* ``hf.co/`` and ``huggingface.co/`` (the website's address, as Ollama accepts it), where the
  website's ``/blob/<revision>/<path>``, ``/resolve/<revision>/<path>`` and ``/tree/<revision>``
  are read too, so a link copied from the browser works.

An ``https://`` URL is never a Hub source: in a GPUXfile it is a download verified by its sha256,
and one string should not mean two things. Kept free of heavy imports: the CLI reads it to tell a
Hub repository from a registry image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from gpux.config.paths import inside_project
from gpux.errors import SourceError

PREFIXES = ("hf://", "hf:", "hf.co/", "huggingface.co/")
_WEBSITE = ("hf.co/", "huggingface.co/")
_GPUX_FORM = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:/(?P<path>[^@]+?))?(?:@(?P<rev>[\w./-]+))?$")
# The website's paths: /blob/<rev>/<file>, /resolve/<rev>/<file>, /tree/<rev>[/<folder>].
_WEBSITE_FORM = re.compile(
    r"^(?P<repo>[\w.-]+/[\w.-]+)/(?:blob|resolve|tree)/(?P<rev>[^/@]+)(?:/(?P<path>[^@]*))?$"
)
COMMIT = re.compile(r"[0-9a-f]{40}")
_NOT_MODELS = ("datasets", "spaces")


@dataclass(frozen=True)
class HubSource:
    """``hf:org/repo[/path/in/repo][@revision]``, split."""

    repo: str
    path: str | None  # None: the repository's one .onnx file (for a tokenizer, tokenizer.json)
    revision: str | None  # as written: a branch, a tag or a commit; None: the default branch

    @property
    def pinned(self) -> bool:
        """A commit never changes; a branch or a tag may move."""
        return bool(self.revision and COMMIT.fullmatch(self.revision))

    @property
    def at(self) -> str:
        return f"{self.repo}@{self.revision or 'main'}"


def is_hub_source(text: str) -> bool:
    """True when ``text`` is spelled as a Hub source (it may still be malformed)."""
    return text.startswith(PREFIXES)


def source_kind(source: str) -> str:
    """``url``, ``hf`` or ``local``: how a GPUXfile source is fetched."""
    if source.startswith(("https://", "http://")):
        return "url"
    if is_hub_source(source):
        return "hf"
    return "local"


def parse_hub_source(source: str) -> HubSource:
    """Split any accepted spelling; raises :class:`SourceError` naming the form to use."""
    prefix = next((p for p in PREFIXES if source.startswith(p)), None)
    rest = source[len(prefix) :] if prefix else ""
    match = _WEBSITE_FORM.match(rest) if prefix in _WEBSITE else None
    if match:
        hub = HubSource(match["repo"], match["path"] or None, unquote(match["rev"]))
    else:
        match = _GPUX_FORM.match(rest)
        if not match:
            raise SourceError(
                f"invalid Hugging Face source {source!r}",
                "write it as hf:org/repo/path/to/model.onnx@revision",
            )
        hub = HubSource(match["repo"], match["path"], match["rev"])
    if hub.path is not None and inside_project(hub.path) != hub.path.strip("/"):
        # huggingface_hub keeps the file at snapshots/<commit>/<path>: a path that climbs
        # ('..') would name a file of another commit, or outside its cache.
        raise SourceError(
            f"{source}: the path in the repository '{hub.path}' is not a plain relative path",
            f"write the file's path as the repository lists it: hf:{hub.repo}/path/to/file",
        )
    owner = hub.repo.split("/", 1)[0]
    if owner in _NOT_MODELS:
        raise SourceError(
            f"{source}: GPUX reads model repositories, not {owner}",
            "give a model repository: hf:org/repo",
        )
    if hub.path is None and hub.revision and re.fullmatch(r"[^/]+/.+\.\w+", hub.revision):
        # huggingface_hub's file system writes hf://org/repo@rev/file; GPUX reads a revision
        # with a '/' (refs/pr/3) there, so say which order it takes instead of a 404 later.
        branch, path = hub.revision.split("/", 1)
        raise SourceError(
            f"{source}: the revision comes last in a GPUX source; as written, the revision "
            f"would be '{hub.revision}'",
            f"write hf:{hub.repo}/{path}@{branch}",
        )
    return hub


def website_url_hint(reference: str) -> str | None:
    """For ``gpux pull https://huggingface.co/org/repo``: the spelling to use instead."""
    for scheme in ("https://", "http://"):
        for host in _WEBSITE:
            if reference.startswith(scheme + host):
                return host + reference[len(scheme + host) :].rstrip("/")
    return None
