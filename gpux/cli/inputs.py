"""``--input`` values read the way people type them, for a model with a pipeline.

``gpux run`` and ``gpux bench`` read ``--input`` the same way, so both take their items from
here (the model a benchmark times is fed exactly what ``gpux run`` would feed it):

* ``--input "I love this"`` / ``--input photo.jpg`` / ``--input clip.wav``: a bare value for the
  model's only pipeline input (a file path for images and audio);
* several ``--input``, a folder, a ``.jsonl`` file (one item per line) or a ``.txt`` file (text
  inputs: one sentence per line): many items;
* ``name=value`` for models with several inputs (``name=@file`` reads a file);
* stdin: text, one item per line; for images and audio, the file's bytes;
* ``NAME=VALUE`` naming only model inputs the pipeline does not feed: tensors given directly,
  past the pipeline (:func:`skips_pipeline`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpux import json_text
from gpux.api import Model
from gpux.errors import InputError, NotFoundError, UsageError
from gpux.pipeline.inputs import MEDIA_SUFFIXES as SUFFIXES
from gpux.pipeline.inputs import clip, loose_value, parse_value
from gpux.pipeline.runner import Pipeline

Item = tuple[str, dict[str, Any]]  # (what to call it in the output, the item)


def gather(pipeline: Pipeline, values: list[str]) -> tuple[list[Item], bool]:
    """Items from ``--input`` values; the flag says whether the user asked for one item."""
    names = pipeline.input_names
    named: dict[str, Any] = {}
    items: list[Item] = []
    for text in values:
        name, separator, rest = text.partition("=")
        if separator and name in names:
            if name in named:
                raise UsageError(f"input '{name}' is given twice", "pass each input once")
            named[name] = item_value(pipeline, name, rest)
            continue
        jsonl = Path(text.removeprefix("@")).expanduser()
        if jsonl.suffix.lower() == ".jsonl" and jsonl.is_file():
            items.extend(_jsonl(pipeline, jsonl))  # items of any number of inputs
            continue
        if len(names) != 1:
            raise UsageError(
                f"--input '{_clip(text)}' does not name an input",
                f"write NAME=VALUE; the model takes: {', '.join(names)}",
            )
        items.extend(_expand(pipeline, names[0], text))
    if named:
        if items:
            raise UsageError("mix of named and bare --input values", "name every input: NAME=VALUE")
        return [("input", named)], True
    single = len(values) == 1 and len(items) == 1 and not _is_collection(values[0])
    return items, single


def from_stdin(pipeline: Pipeline) -> tuple[list[Item], bool]:
    """Items from stdin when no ``--input`` is given: a media file's bytes, a JSON object of
    inputs, or text (one item per line); the flag says whether it holds one item."""
    names = pipeline.input_names
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError(
            "no inputs given",
            f"pass --input VALUE (the model takes: {', '.join(names)}), or pipe input on stdin",
        )
    kind = pipeline.kind(names[0]) if len(names) == 1 else "tensor"
    if kind in ("image", "audio"):
        data = sys.stdin.buffer.read()
        if not data:
            raise UsageError("no inputs given: stdin is empty", f"pipe a {kind} file")
        return [("stdin", {names[0]: data})], True
    text = sys.stdin.read()
    stripped = text.strip()
    if not stripped:
        raise UsageError("no inputs given: stdin is empty", 'e.g. echo "some text" | gpux run NAME')
    if stripped.startswith("{"):
        try:
            request = json_text.loads(stripped)
        except ValueError:
            request = None
        if isinstance(request, dict):
            return [("stdin", pipeline.item(request))], True
    lines = [line for line in text.splitlines() if line.strip()]
    if kind != "text":
        raise UsageError(
            "stdin holds text, but this model takes several inputs",
            'pipe a JSON object of inputs, e.g. {"name": value}',
        )
    return [(f"line {i + 1}", {names[0]: line}) for i, line in enumerate(lines)], len(lines) == 1


def _is_collection(text: str) -> bool:
    path = Path(text.removeprefix("@")).expanduser()
    if path.suffix.lower() == ".txt":
        return text.startswith("@") and path.is_file()  # without '@' it is the text itself
    return path.is_dir() or (path.suffix.lower() == ".jsonl" and path.is_file())


def _expand(pipeline: Pipeline, name: str, text: str) -> Iterator[Item]:
    kind = pipeline.kind(name)
    path = Path(text.removeprefix("@")).expanduser()
    if path.suffix.lower() == ".jsonl" and path.is_file():
        yield from _jsonl(pipeline, path)
        return
    if kind == "text":
        if path.suffix.lower() == ".txt" and path.is_file() and text.startswith("@"):
            lines = [line for line in path.read_text("utf-8").splitlines() if line.strip()]
            yield from ((f"{path.name}:{i + 1}", {name: line}) for i, line in enumerate(lines))
            return
        yield (_clip(text), {name: text})
        return
    if kind == "value":  # a handler's input: JSON, else the text as typed
        yield (_clip(text), {name: loose_value(text)})
        return
    if kind in SUFFIXES:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES[kind])
            if not files:
                raise NotFoundError(
                    f"folder '{path}' holds no {kind} files",
                    f"expected files ending in {', '.join(sorted(SUFFIXES[kind]))}",
                )
            yield from ((str(p), {name: p}) for p in files)
            return
        if not path.is_file():
            raise NotFoundError(
                f"input '{name}': file '{text}' not found",
                f"give the path of a {kind} file, a folder of them, or a .jsonl file",
            )
        yield (str(path), {name: path})
        return
    yield (_clip(text), {name: item_value(pipeline, name, text)})


def _jsonl(pipeline: Pipeline, path: Path) -> Iterator[Item]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                value = json_text.loads(line)
            except ValueError as exc:
                raise InputError(
                    f"{path.name}:{number} is not valid JSON: {exc}",
                    'write one JSON value per line, e.g. {"text": "..."} or "..."',
                ) from None
            item = pipeline.item(value)
            for name, entry in item.items():
                # File paths in JSONL are relative to the JSONL file.
                if pipeline.kind(name) in SUFFIXES and isinstance(entry, str):
                    candidate = path.parent / entry
                    if candidate.is_file():
                        item[name] = candidate
            yield (f"{path.name}:{number}", item)


def item_value(pipeline: Pipeline, name: str, text: str) -> Any:
    """One input's value from the text typed for it: ``@file`` read (text) or taken as a path
    (images, audio) or a tensor file; a bare path for media; JSON for tensors."""
    kind = pipeline.kind(name)
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        if not path.is_file():
            raise NotFoundError(f"input '{name}': file '{path}' not found", "check the path")
        if kind == "text":
            return path.read_text("utf-8")
        if kind in SUFFIXES:
            return path
        from gpux.pipeline.inputs import read_value_file

        return read_value_file(name, path)
    if kind == "text":
        return text
    if kind == "value":
        return loose_value(text)
    if kind in SUFFIXES:
        return Path(text).expanduser()
    return parse_value(name, text, None)


def _clip(text: str) -> str:
    return clip(text, 60)


def skips_pipeline(inputs: list[str], model: Model) -> bool:
    """True when every --input names a model input the pipeline does not: tensors given
    directly, past the pipeline (e.g. to compare with another runtime)."""
    assert isinstance(model.pipeline, Pipeline)
    pipeline_names = set(model.pipeline.input_names)
    tensor_names = {t.name for t in model.inputs} - pipeline_names
    names = [item.partition("=")[0] for item in inputs if "=" in item]
    return bool(inputs) and len(names) == len(inputs) and set(names) <= tensor_names
