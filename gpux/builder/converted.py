"""``gpux build`` of a model converted at build (``model.format: gguf`` or ``transformers``).

The source (a GGUF file from any file source: the project, a URL, an archive's member, the Hub;
or a transformers checkpoint folder in the project) is hashed, and its genai folder is made by
:func:`gpux.builder.convert.convert` into ``$GPUX_HOME/cache/converted/<key>``, the key covering
the source's hash, the precision and the target. The
rest of the build (placement proof, smoke run, layers) takes that folder as it takes any genai
folder; rebuilding finds the converted folder and converts nothing.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from gpux import env
from gpux.builder.sources import ProgressCallback, resolve_file, sha256_hex
from gpux.config.common import FileSource
from gpux.config.load import Project
from gpux.config.paths import project_file

if TYPE_CHECKING:
    from gpux.builder.generative import ModelFolder

DEFAULT_PRECISION = "int4"
DEFAULT_TARGET = "cpu"


def converted_folder(project: Project, progress: ProgressCallback | None = None) -> ModelFolder:
    from gpux.builder.convert import convert
    from gpux.builder.generative import ModelFolder, folder_digest

    model = project.config.model
    precision = model.precision or DEFAULT_PRECISION
    target = model.target or DEFAULT_TARGET
    origin: dict[str, Any] = {"kind": "local", "origin": model.source, "revision": None}
    origin["archive_sha256"] = None
    if model.format == "gguf":
        resolved = resolve_file(
            project.root,
            FileSource(source=model.source, sha256=model.sha256, member=model.member),
            "model",
            progress,
        )
        source, digest, warnings = resolved.path, resolved.sha256, resolved.warnings
        origin.update(
            kind=resolved.kind,
            origin=resolved.origin,
            revision=resolved.revision,
            archive_sha256=resolved.archive_sha256,
        )
    else:
        source = project_file(project.root, model.source, f"{project.path}: model.source")
        files = sorted(p for p in source.rglob("*") if p.is_file() and ".cache" not in p.parts)
        digest = folder_digest({p.relative_to(source).as_posix(): sha256_hex(p) for p in files})
        warnings = []
    key = _conversion_key(model.format, digest, precision, target)
    out = env.home() / "cache" / "converted" / key[:32]
    if not (out / "genai_config.json").is_file():
        convert(source, out, precision=precision, target=target, kind=model.format)
    origin["converted_from"] = {
        "format": model.format,
        "sha256": digest,
        "precision": precision,
        "target": target,
    }
    converted = {
        path.relative_to(out).as_posix(): path for path in sorted(out.rglob("*")) if path.is_file()
    }
    return ModelFolder(out, converted, origin, list(warnings))


def _conversion_key(kind: str, digest: str, precision: str, target: str) -> str:
    # The converter's versions stay out: a folder converted once keeps serving rebuilds on a
    # machine without the converter (the build's smoke run still checks that it loads).
    material = {"format": kind, "sha256": digest, "precision": precision, "target": target}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
