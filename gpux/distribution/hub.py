"""``gpux pull hf:org/repo[@revision]``: a Hugging Face Hub repository, built into an image.

A repository that holds a GPUXfile (or gpux.yaml / gpux.yml) at its root is a GPUX project: that
file and the project files it names (model, tokenizers, label files) are downloaded, nothing else
(model repositories often hold many variants of a model), and built as they are, relative paths
and all. Otherwise the repository must hold exactly one .onnx file (or the source names one:
``hf:org/repo/path/model.onnx``), and the image is the minimal one for it: a GPUXfile with
``model: hf:org/repo/path/model.onnx@<commit>``, so the image records where the model came from.

Downloads go through huggingface_hub: its cache ($HF_HOME/hub), HF_TOKEN, HF_ENDPOINT. When the
Hub cannot be reached, a revision pulled before is built from the cache, with a warning.

Naming: ``tag`` when given; otherwise ``<name>:<tag>``. The name is the repository's name (the
part after the organisation) in lowercase, with every run of characters other than a-z and 0-9
turned into '-' (``Xenova/all-MiniLM-L6-v2`` -> ``all-minilm-l6-v2``). The tag is the revision:
``latest`` for the default branch (no revision, or ``main``), the full hash for a commit, else the
branch or tag name with the characters an image tag cannot hold turned into '-' (``v1.0`` ->
``v1.0``, ``refs/pr/3`` -> ``refs-pr-3``).
"""

from __future__ import annotations

import glob
import json
import re
import shutil
import tempfile
from pathlib import Path

from gpux.builder import sources
from gpux.builder.build import BuildOptions, BuildResult, build
from gpux.builder.progress import Reporter
from gpux.config.hub_source import HubSource, parse_hub_source
from gpux.config.load import GPUXFILE_NAMES, MAX_GPUXFILE_BYTES, parse_config, read_gpuxfile
from gpux.config.paths import inside_project
from gpux.config.schema import GPUXfile
from gpux.errors import ConfigValidationError, SourceError
from gpux.store import Store
from gpux.store.reference import parse

__all__ = ["MAX_PULL_BYTES", "default_reference", "pull"]

MAX_PULL_BYTES = 4 << 30
"""The most a pull downloads: an ONNX model without external data is under 2 GiB (protobuf's
limit), tokenizers and labels are small."""


def pull(
    source: str,
    store: Store,
    reporter: Reporter | None = None,
    tag: str | None = None,
) -> BuildResult:
    """Download ``hf:org/repo[@revision]`` (or one .onnx of it) and build it into ``store``."""
    hub = parse_hub_source(source)
    if hub.path is not None and not hub.path.endswith(".onnx"):
        raise SourceError(
            f"{source}: gpux pull takes a repository, or an .onnx file in one",
            f"pull hf:{hub.repo}@{hub.revision or 'main'}; the repository's GPUXfile names the "
            "other files",
        )
    reporter = reporter or Reporter()
    reference = parse(tag or default_reference(hub))
    workdir = Path(tempfile.mkdtemp(prefix="gpux-pull-"))
    try:
        with reporter.step("fetch from Hugging Face") as step:
            project, commit, count = _fetch(hub, source, workdir, reporter)
            step.detail = f"{hub.repo} {commit[:12]}, {count} file{'s' * (count != 1)}"
        return build(project, BuildOptions(tag=reference.name), store=store, reporter=reporter)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def default_reference(hub: HubSource) -> str:
    """``<name>:<tag>`` for a repository and revision (the rule is in the module docstring)."""
    name = re.sub(r"[^a-z0-9]+", "-", hub.repo.rsplit("/", 1)[-1].lower()).strip("-")
    tag = "latest"
    if hub.revision and hub.revision != "main":
        tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", hub.revision).lstrip(".-")[:128] or tag
    return f"{name or 'model'}:{tag}"


def _fetch(hub: HubSource, source: str, workdir: Path, reporter: Reporter) -> tuple[Path, str, int]:
    """The project folder to build, the commit it comes from, and how many files it took."""
    from huggingface_hub import hf_hub_download, snapshot_download

    with sources.hub_errors(source, hub):
        listing = sources.hub_listing(hub, source)
        if listing.cached and not sources.hub_offline():
            reporter.warn(
                f"the Hugging Face Hub at {sources.hub_endpoint()} cannot be reached: building "
                f"{hub.at} from the copy cached from commit {listing.commit[:12]}, which may be "
                "out of date"
            )
        # Pin every download to the listed commit, except that the first one names the branch
        # as written, so huggingface_hub records branch -> commit for offline use later.
        revision = listing.commit if listing.cached else hub.revision
        gpuxfiles = [name for name in GPUXFILE_NAMES if name in listing.files]
        if hub.path is None and gpuxfiles:
            if len(gpuxfiles) > 1:
                raise ConfigValidationError(
                    f"{source} holds both {' and '.join(gpuxfiles)}; GPUX cannot tell which one "
                    "to build",
                    "keep one GPUXfile in the repository",
                )
            gpuxfile = gpuxfiles[0]
            _check_size(listing, [gpuxfile], source, MAX_GPUXFILE_BYTES)
            where = f"hf:{hub.repo}/{gpuxfile}"
            downloaded = hf_hub_download(
                hub.repo, gpuxfile, revision=revision, local_files_only=listing.cached
            )
            config = parse_config(read_gpuxfile(Path(downloaded), where), where)
            wanted = [gpuxfile, *_project_files(config, hub)]
            missing = [name for name in wanted if name not in listing.files]
            if missing and not listing.cached:
                raise SourceError(
                    f"the {gpuxfile} of {hub.at} names {', '.join(missing)}, which the "
                    "repository does not hold",
                    "fix the paths in the repository's GPUXfile (they are relative to the "
                    "repository's root)",
                )
            _check_size(listing, wanted, source, MAX_PULL_BYTES)
            folder = snapshot_download(
                hub.repo,
                revision=listing.commit,
                allow_patterns=[glob.escape(name) for name in wanted],
                local_files_only=listing.cached,
            )
            return Path(folder), Path(folder).name, len(wanted)

        model = hub.path or sources.default_file(hub, listing, "model", source)
        if not listing.cached and model not in listing.files:
            raise sources.missing_file(hub, listing, model)
        _check_size(listing, [model], source, MAX_PULL_BYTES)
        path = hf_hub_download(hub.repo, model, revision=revision, local_files_only=listing.cached)
    commit = sources.snapshot_commit(Path(path), model) or listing.commit
    # A GPUXfile naming the file by commit: the build finds it in the cache, and the image
    # records where the model came from.
    project = workdir / "project"
    project.mkdir()
    name = parse(default_reference(hub)).repository
    pinned = json.dumps(f"hf:{hub.repo}/{model}@{commit}")
    (project / "GPUXfile").write_text(f"name: {name}\nmodel: {pinned}\n", encoding="utf-8")
    return project, commit, 1


def _project_files(config: GPUXfile, hub: HubSource) -> list[str]:
    """The repository paths a GPUXfile at the repository's root names (model, tokenizers, label
    files); sources that are URLs or hf: are fetched by the build itself."""
    named: list[tuple[str, str]] = [("model", config.model.source)]
    for entry in config.preprocess:
        if entry.text is not None:
            named.append((f"preprocess '{entry.name}' tokenizer", entry.text.tokenizer.source))
    named = [(what, text) for what, text in named if sources.source_kind(text) == "local"]
    if isinstance(config.labels, str):
        named.append(("labels", config.labels))
    for result in config.postprocess:
        for step in result.steps:
            labels = getattr(step.options, "labels", None)
            if isinstance(labels, str):
                named.append((f"postprocess '{result.name}' labels", labels))
    found: list[str] = []
    for what, text in named:
        path = inside_project(text)
        if path is None:
            raise SourceError(
                f"the GPUXfile of {hub.at} names {what} '{text}', outside the repository",
                "paths in a GPUXfile on the Hub are relative to the repository's root",
            )
        if path not in found:
            found.append(path)
    return found


def _check_size(listing: sources.HubListing, names: list[str], source: str, limit: int) -> None:
    total = sum(listing.files.get(name) or 0 for name in names)
    if total > limit:
        raise SourceError(
            f"{source}: {', '.join(names)} come to {total / 1e6:.1f} MB, more than GPUX pulls "
            f"({limit / 1e6:.0f} MB)",
            "an ONNX model without external data is under 2 GiB; check that the repository "
            "names the right files",
        )
