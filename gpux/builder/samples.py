"""Sample inputs for variants: real inputs run through the GPUXfile's pipeline, as model feeds.

A variant is compared with the original on these feeds, and ``int8-static`` calibrates on them.
They come from ``build.samples`` (or a variant's ``calibration``): a folder or a ``.jsonl`` file
of what users send (sentences, images, recordings), turned into model inputs by the same
``Pipeline`` that ``gpux run`` uses. A recording model sits under the pipeline and keeps every
feed it is given, so a stateful audio model yields one feed per window, each with the state the
original model produced. Without samples, the inputs' ``example`` values or generated data are
used, and the report says so: agreement on random inputs is weaker evidence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpux import json_text
from gpux.errors import ConfigValidationError, GPUXError
from gpux.runtime.backend import Backend
from gpux.runtime.model import Model
from gpux.runtime.tensors import TensorSignature, check_feed

Array = np.ndarray[Any, Any]
Feed = dict[str, Array]
MAX_FEEDS = 200  # model calls compared per variant: enough for stable figures, a few seconds
GENERATED = 4  # generated inputs when no real ones are given


@dataclass
class Samples:
    """Model feeds and where they came from (recorded in the variant report)."""

    feeds: list[Feed]
    kind: str  # "real", "examples" or "generated"
    source: str  # what the user wrote (a path), or how the inputs were made
    items: int  # inputs read (a recording gives many feeds)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "items": self.items,
            "model_calls": len(self.feeds),
        }


class RecordingModel(Model):
    """A model that keeps every feed the pipeline gives it, then runs it on the original."""

    def __init__(
        self, backend: Backend, inputs: list[TensorSignature], outputs: list[TensorSignature]
    ) -> None:
        super().__init__(backend, inputs, outputs)
        self.feeds: list[Feed] = []

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Array]:
        feed = check_feed(inputs, self.inputs)
        self.feeds.append(feed)
        result: dict[str, Array] = self.backend.run(feed)
        return result


def resolve(root: Path, text: str, key: str) -> Path:
    """A samples path from the GPUXfile (relative to the project) that must exist."""
    path = (root / text).expanduser().resolve()
    if not path.exists():
        raise ConfigValidationError(
            f"{key}: '{text}' does not exist",
            "give a folder of inputs (images, recordings, .txt files of sentences) or a .jsonl "
            "file with one input per line, relative to the project folder",
        )
    return path


def fingerprint(path: Path) -> str:
    """sha256 over the names and contents of a samples file or folder (part of the build key)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def read_feeds(
    path: Path,
    key: str,
    reference: Backend,
    gpuxfile: Mapping[str, Any],
    inputs: list[TensorSignature],
    outputs: list[TensorSignature],
    tokenizers: Mapping[str, Path],
) -> Samples:
    """The feeds the pipeline makes from the inputs at ``path``, run through the original."""
    from gpux.pipeline.runner import Pipeline

    model = RecordingModel(reference, inputs, outputs)
    pipeline = Pipeline(model, gpuxfile, tokenizers)
    used = 0
    for item in _items(pipeline, path, key):
        used += 1
        try:
            pipeline.run([item])
        except GPUXError as exc:
            raise ConfigValidationError(
                f"{key}: input {used} of '{path.name}' cannot be run: {exc.message}",
                exc.hint or "give inputs the model's pipeline accepts",
            ) from None
        if len(model.feeds) >= MAX_FEEDS:
            break
    return Samples(model.feeds[:MAX_FEEDS], "real", str(path), used)


def generated_feeds(inputs: list[TensorSignature]) -> Samples:
    """The inputs' ``example`` values when every input has one, else a few generated inputs."""
    from gpux.builder.smoke import generate_inputs

    if all(signature.example is not None for signature in inputs):
        return Samples([generate_inputs(inputs)], "examples", "inputs[].example", 1)
    feeds = [generate_inputs(inputs, seed=seed) for seed in range(GENERATED)]
    return Samples(feeds, "generated", "generated from the input signatures", len(feeds))


def _items(pipeline: Any, path: Path, key: str) -> list[dict[str, Any]]:
    from gpux.pipeline.inputs import MEDIA_SUFFIXES as SUFFIXES

    names = pipeline.input_names
    only = names[0] if len(names) == 1 else None
    kind = pipeline.kind(only) if only else "tensor"
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    items: list[dict[str, Any]] = []
    for file in files:
        suffix = file.suffix.lower()
        if suffix == ".jsonl":
            items.extend(_jsonl(pipeline, file, key))
        elif suffix == ".npz":
            with np.load(file) as arrays:
                items.append(pipeline.item({name: arrays[name] for name in arrays.files}))
        elif only and kind in SUFFIXES and suffix in SUFFIXES[kind]:
            items.append({only: file})
        elif only and kind == "text" and suffix == ".txt":
            lines = file.read_text("utf-8").splitlines()
            items.extend({only: line} for line in lines if line.strip())
        elif only and kind == "tensor" and suffix == ".npy":
            items.append({only: np.load(file)})
    if not items:
        accepted = [".jsonl (one input per line)", ".npz (named arrays)"]
        if kind in SUFFIXES:
            accepted.insert(0, f"{kind} files ({' '.join(sorted(SUFFIXES[kind]))})")
        elif kind == "text":
            accepted.insert(0, ".txt files (one input per line)")
        elif only:
            accepted.insert(0, ".npy files")
        raise ConfigValidationError(
            f"{key}: '{path}' holds no inputs for this model (it takes {', '.join(names)})",
            f"put {', '.join(accepted)} there",
        )
    return items


def _jsonl(pipeline: Any, path: Path, key: str) -> list[dict[str, Any]]:
    from gpux.pipeline.inputs import MEDIA_SUFFIXES as SUFFIXES

    items = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = pipeline.item(json_text.loads(line))
        except ValueError as exc:
            raise ConfigValidationError(
                f"{key}: {path.name}:{number} is not valid JSON: {exc}",
                'write one JSON value per line, e.g. {"text": "..."} or "..."',
            ) from None
        for name, value in item.items():
            # File names in a JSONL file are relative to it, as for `gpux run`.
            if pipeline.kind(name) in SUFFIXES and isinstance(value, str):
                item[name] = path.parent / value
        items.append(item)
    return items
