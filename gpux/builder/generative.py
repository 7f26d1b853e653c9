"""``gpux build`` of a generative model (``model.format: genai``): an onnxruntime-genai folder.

Steps: list and hash the folder's files, check its ``genai_config.json`` names files that are
there, load it with onnxruntime-genai while reading ONNX Runtime's placement log (the proof of
where the sessions run), generate a few tokens greedily (the smoke run), then store one layer per
file (deduplicated like every blob: two images sharing weights store them once).

The build key covers the GPUXfile, every file's hash, the options and the versions of GPUX,
ONNX Runtime and onnxruntime-genai: rebuilding an unchanged project hashes the files, finds the
key on the tagged image and stops, without loading anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpux import env
from gpux.builder.archive_member import extract_member, folder_members
from gpux.builder.progress import Reporter
from gpux.builder.sources import ProgressCallback, hub_folder, resolve_file, source_kind
from gpux.config.common import FileSource
from gpux.config.load import Project
from gpux.config.paths import project_file
from gpux.errors import ConfigValidationError, InputError, ModelError, SourceError
from gpux.runtime.backend import Placement
from gpux.runtime.generative import Stream
from gpux.runtime.speech import SPEECH_TYPES, TEXT_ONLY_SETTINGS
from gpux.store import LayerSource, Store, mediatypes
from gpux.store.folders import check_title
from gpux.store.reference import Reference

if TYPE_CHECKING:
    from gpux.builder.build import BuildOptions, BuildResult

SMOKE_TOKENS = 4
SMOKE_PROMPT = "Hello"
SMOKE_TONE_HZ = 440
ARCHIVES = (".zip", ".whl", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass
class ModelFolder:
    """The genai folder, resolved: where it is on disk and its files by relative path."""

    path: Path
    files: dict[str, Path]
    source: dict[str, Any]  # what the image records: kind, origin, revision, archive_sha256
    warnings: list[str] = field(default_factory=list)  # for the build output (a stale Hub copy)


def resolve_folder(project: Project, progress: ProgressCallback | None = None) -> ModelFolder:
    """A project folder, or a folder inside an archive from any source (a project path, an
    https URL with its sha256, a Hub file): ``member`` names the folder, or the archive's root
    when absent. Archive files are extracted with :func:`extract_member`'s checks."""
    model = project.config.model
    if model.converted:
        from gpux.builder.converted import converted_folder

        return converted_folder(project, progress)
    kind = source_kind(model.source)
    origin = {"kind": kind, "origin": model.source, "revision": None, "archive_sha256": None}
    if kind == "local" and model.member is None:
        path = project_file(project.root, model.source, f"{project.path}: model.source")
        if path.is_dir():
            return ModelFolder(path, _local_files(project, path), origin)
    elif kind == "hf" and model.member is None and not model.source.endswith(ARCHIVES):
        folder, files, commit, warnings = hub_folder(model.source, "model")
        _require_config(
            files, f"model '{model.source}'", "check the folder's path in the repository"
        )
        origin["revision"] = commit
        return ModelFolder(folder, files, origin, warnings)
    archive = resolve_file(
        project.root, FileSource(source=model.source, sha256=model.sha256), "model", progress
    )
    members = folder_members(archive.path, model.member, "model")
    files = {
        check_title(relative): extract_member(archive.path, archive.sha256, name, "model")
        for relative, name in members.items()
    }
    folder = env.home() / "cache" / "extracted" / archive.sha256
    if model.member:
        folder = folder / model.member.strip("/")
    _require_config(
        files,
        f"model '{model.source}'" + (f" folder '{model.member}'" if model.member else ""),
        "set 'member' to the folder inside the archive that holds genai_config.json "
        "(unzip -l / tar tf lists it)",
    )
    origin.update(revision=archive.revision, archive_sha256=archive.sha256)
    return ModelFolder(folder, files, origin, archive.warnings)


def _require_config(files: dict[str, Path], what: str, hint: str) -> None:
    if "genai_config.json" not in files:
        if "config.json" in files:
            hint = "it looks like a Hugging Face checkpoint: set format: transformers to convert it"
        raise SourceError(
            f"{what} has no genai_config.json, so it is not an onnxruntime-genai model folder",
            hint,
        )


def _local_files(project: Project, folder: Path) -> dict[str, Path]:
    """The folder's regular files by relative path (hidden files left out)."""
    source = project.config.model.source
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in relative.split("/")) or path.is_dir():
            continue
        # A link inside the folder may not reach outside the project (it would be published).
        resolved = project_file(project.root, f"{source}/{relative}", f"{project.path}: {source}")
        if resolved.is_file():
            files[check_title(relative)] = resolved
    return files


def folder_digest(hashes: dict[str, str]) -> str:
    """One hash for the folder: of its files' paths and hashes."""
    lines = "".join(f"{name}\t{digest}\n" for name, digest in sorted(hashes.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def generative_build_key(project: Project, digest: str, options: BuildOptions) -> str:
    from gpux.builder.build import CONFIG_SCHEMA, tool_versions
    from gpux.runtime.discovery import installed_versions

    material = {
        "gpuxfile": project.config.model_dump(mode="json", exclude={"build"}),
        "folder_sha256": digest,
        "backend": options.backend,
        "versions": {
            **tool_versions(),
            **installed_versions("onnxruntime-genai", "onnxruntime-genai-cuda"),
        },
        "config_schema": CONFIG_SCHEMA,
    }
    encoded = json.dumps(material, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def check_folder(folder: Path, files: dict[str, Path], source: str) -> dict[str, Any]:
    """What the image records about the model; a ModelError when the folder is incomplete."""
    from gpux.runtime.generative import read_genai_config

    config = read_genai_config(folder)
    model = config["model"]
    decoder = model.get("decoder") if isinstance(model.get("decoder"), dict) else {}
    needed = [name for name in (decoder.get("filename"), "tokenizer.json") if name]
    if model.get("type") in SPEECH_TYPES:  # its encoder, and the processor that makes features
        encoder = model.get("encoder") if isinstance(model.get("encoder"), dict) else {}
        needed += [encoder.get("filename") or "encoder.onnx", "audio_processor_config.json"]
    missing = [name for name in needed if name not in files]
    if missing:
        raise ModelError(
            f"model folder '{source}' lacks {', '.join(missing)}, which genai_config.json needs",
            "copy the whole folder that onnxruntime_genai.models.builder wrote",
        )
    return {
        "engine": "onnxruntime-genai",
        "type": model.get("type"),
        "context_length": model.get("context_length"),
        "vocab_size": model.get("vocab_size"),
        "layers": decoder.get("num_hidden_layers"),
        "filename": decoder.get("filename"),
        "provider_options": decoder.get("session_options", {}).get("provider_options", []),
    }


def build_generative(
    project: Project,
    reference: Reference,
    options: BuildOptions,
    store: Store,
    reporter: Reporter,
) -> BuildResult:
    from gpux.builder.build import (
        CONFIG_SCHEMA,
        BuildResult,
        cached_build,
        stored_gpuxfile,
        tool_versions,
    )
    from gpux.builder.sources import sha256_hex

    with reporter.step("resolve model") as step:
        resolved = resolve_folder(project, reporter.transfer)
        folder, files = resolved.path, resolved.files
        hashes = {name: sha256_hex(path) for name, path in files.items()}
        digest = folder_digest(hashes)
        size = sum(path.stat().st_size for path in files.values())
        step.detail = f"folder, {len(files)} files, {size / 1e6:.1f} MB, {digest[:12]}"
        converted = resolved.source.get("converted_from")
        if converted:
            step.detail = (
                f"converted from {converted['format']} ({converted['precision']}, "
                f"{converted['target']}), " + step.detail
            )
    key = generative_build_key(project, digest, options)
    if not options.force:
        cached = cached_build(store, reference, key, reporter)
        if cached is not None:
            return cached

    with reporter.step("check model") as step:
        for message in resolved.warnings:
            reporter.warn(message)
        info = check_folder(folder, files, project.config.model.source)
        speech = info["type"] in SPEECH_TYPES
        _check_sections(project, speech, info["type"])
        if speech:
            info["task"] = "speech-to-text"
        chat = _has_chat_template(folder)
        info["chat_template"] = chat
        step.detail = f"{info['type']}, {info['layers']} layers, vocab {info['vocab_size']}"

    with reporter.step("smoke run") as step:
        if speech:
            smoke, placement = _smoke_speech(project, folder)
        else:
            smoke, placement = _smoke_text(project, folder, chat)
        if placement.fallback_reason:
            reporter.warn_once(
                f"backend 'auto' fell back to {placement.backend}: {placement.fallback_reason}",
                key=placement.fallback_reason,
            )
        step.detail = (
            f"{placement.backend}, {smoke['usage']['completion_tokens']} tokens, first after "
            f"{smoke['time_to_first_token_ms']} ms"
        )

    with reporter.step("write image") as step:
        gpuxfile = stored_gpuxfile(project, [], [])
        gpuxfile.pop("inputs", None)
        gpuxfile.pop("outputs", None)
        gpuxfile["model"]["sha256"] = digest
        info["files"] = [
            {"path": name, "sha256": hashes[name], "size": files[name].stat().st_size}
            for name in files
        ]
        config: dict[str, Any] = {
            "schema": CONFIG_SCHEMA,
            "gpuxfile": gpuxfile,
            "source": {**resolved.source, "sha256": digest},
            "generative": info,
            "smoke": smoke,
            "build": {
                "key": key,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "versions": {**tool_versions(), **_genai_versions()},
            },
        }
        layers = [
            LayerSource(mediatypes.GENAI_FILE, name, path=path) for name, path in files.items()
        ]
        annotations = {
            mediatypes.BUILD_KEY: key,
            mediatypes.TITLE: reference.repository,
            mediatypes.VERSION: reference.tag,
            "dev.gpux.placement.backend": placement.backend,
            "dev.gpux.placement.device": placement.device,
            "dev.gpux.model.source": project.config.model.source,
            "dev.gpux.model.sha256": digest,
        }
        if project.config.description:
            annotations[mediatypes.DESCRIPTION] = project.config.description
        image = store.write_image(reference, config, layers, annotations)
        step.detail = f"{reference.name} {image.digest[7:19]}"
    return BuildResult(image, reference, False, reporter)


def _smoke_text(project: Project, folder: Path, chat: bool) -> tuple[dict[str, Any], Placement]:
    """A few tokens generated greedily, with ONNX Runtime's placement log read at load."""
    from gpux.runtime.discovery import captured_native_stderr
    from gpux.runtime.generative import Completion, GenerativeModel

    runtime = project.config.runtime
    assert project.config.generation is not None  # filled in by the schema for genai models
    with GenerativeModel(
        folder,
        runtime.backend.value,
        device=runtime.device,
        threads=runtime.threads,
        defaults=project.config.generation,
        prove_placement=True,
    ) as model:
        # The placement log stays on: its lines while generating are not the user's business.
        with captured_native_stderr():
            prompt = (
                model.chat_prompt([{"role": "user", "content": SMOKE_PROMPT}])
                if chat
                else SMOKE_PROMPT
            )
            try:  # with the GPUXfile's guidance: llguidance compiles it now, or refuses
                completion = model.generate(prompt, max_new_tokens=SMOKE_TOKENS, temperature=0)
            except InputError as exc:
                raise ConfigValidationError(
                    f"{project.path}: generation.guidance: {exc.message}", exc.hint
                ) from exc
        placement = model.placement
    assert isinstance(completion, Completion)
    smoke = {
        "prompt": SMOKE_PROMPT,
        "chat": chat,
        **completion.to_json(),
        "placement": placement.to_json(),
    }
    return smoke, placement


def _smoke_speech(project: Project, folder: Path) -> tuple[dict[str, Any], Placement]:
    """A second of a tone transcribed greedily (a few tokens), placement log read at load."""
    import numpy as np

    from gpux.runtime.discovery import captured_native_stderr
    from gpux.runtime.speech import SpeechModel

    runtime = project.config.runtime
    speech = project.config.speech
    with captured_native_stderr():
        try:
            model = SpeechModel(
                folder,
                runtime.backend.value,
                device=runtime.device,
                threads=runtime.threads,
                defaults=project.config.generation,
                speech=speech,
                prove_placement=True,
            )
        except InputError as exc:  # the GPUXfile's speech: asks what the model cannot do
            raise ConfigValidationError(f"{project.path}: speech: {exc.message}", exc.hint) from exc
        with model:
            rate = model.sample_rate
            tone = 0.3 * np.sin(2 * np.pi * SMOKE_TONE_HZ * np.arange(rate) / rate)
            transcription = model.transcribe(
                (tone.astype(np.float32), rate), max_new_tokens=SMOKE_TOKENS, temperature=0
            )
        placement = model.placement
    assert not isinstance(transcription, Stream)
    smoke = {
        "audio": f"1 s of a {SMOKE_TONE_HZ} Hz tone",
        **transcription.completion.to_json(),
        "language": transcription.language,
        "placement": placement.to_json(),
    }
    return smoke, placement


def _check_sections(project: Project, speech: bool, model_type: object) -> None:
    """``speech:`` only for a speech model; no text-only generation settings for one."""
    config = project.config
    if config.speech is not None and not speech:
        raise ConfigValidationError(
            f"{project.path}: speech: the model folder is a '{model_type}', not a speech model",
            "remove 'speech' (it applies to Whisper folders: genai_config.json type 'whisper')",
        )
    generation = config.generation
    if speech and generation is not None:
        given = [key for key in TEXT_ONLY_SETTINGS if getattr(generation, key)]
        if given:
            raise ConfigValidationError(
                f"{project.path}: generation.{given[0]}: not for a speech model (the folder is a "
                f"'{model_type}'): a transcript ends where the speech does",
                f"remove {' and '.join(f'generation.{key}' for key in given)}",
            )


def _genai_versions() -> dict[str, str]:
    from gpux.runtime.discovery import installed_versions

    return installed_versions("onnxruntime-genai", "onnxruntime-genai-cuda")


def _has_chat_template(folder: Path) -> bool:
    from gpux.runtime.generative import chat_template_of

    return chat_template_of(folder) is not None
