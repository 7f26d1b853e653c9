"""Load a GPUXfile: parse -> validate -> complete.

* parse: YAML text to data, remembering positions;
* validate: pydantic schema; every error is mapped back to ``file:line:column`` with the key path,
  what was expected and, for typos, a "did you mean";
* complete: resolve project-relative paths, read the labels file, fill defaults that depend on
  the project (name, tag). Filling inputs/outputs from the model happens at build, once the model
  is resolved.
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from gpux.config.chain import ChainFile
from gpux.config.hub_source import source_kind
from gpux.config.paths import project_file
from gpux.config.schema import GPUXfile
from gpux.config.yaml_positions import (
    DuplicateKeyError,
    LimitError,
    PositionedDocument,
    parse_yaml,
)
from gpux.errors import (
    ConfigParseError,
    ConfigSchemaError,
    ConfigValidationError,
    NotFoundError,
    value_kind,
)

GPUXFILE_NAMES = ("GPUXfile", "gpux.yaml", "gpux.yml")
# Names other tools use for our values: suggested, never accepted silently.
_ALIASES = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "int": "int64",
    "long": "int64",
    "boolean": "bool",
    "str": "string",
    "gpu": "cuda",
}
MAX_GPUXFILE_BYTES = 1 << 20
"""A GPUXfile is a few KiB; anything past 1 MiB is not one, and is refused before it is read."""


class _Named:
    """The image name and tag a build uses when ``-t`` is not given."""

    root: Path
    config: GPUXfile | ChainFile

    @property
    def default_name(self) -> str:
        return self.config.name or name_from_folder(self.root)

    @property
    def default_tag(self) -> str:
        return self.config.version or "latest"


@dataclass
class Project(_Named):
    """A loaded GPUXfile and the folder it lives in."""

    path: Path  # the GPUXfile itself
    root: Path  # the project folder; relative paths in the GPUXfile start here
    config: GPUXfile
    text: str  # the file as written, kept for the image config


def name_from_folder(folder: Path) -> str:
    """The image name a project folder gives when its GPUXfile names none: the folder's name
    in lowercase, runs of other characters made one '-' ('My Model' -> 'my-model')."""
    import re

    name = re.sub(r"[^a-z0-9]+", "-", folder.resolve().name.lower()).strip("-")
    return name or "model"


def find_gpuxfile(location: Path) -> Path:
    """The GPUXfile for a project folder, or ``location`` itself when it is a file."""
    if location.is_file():
        return location
    if not location.exists():
        raise NotFoundError(
            f"project '{location}' does not exist",
            "pass the folder that holds your GPUXfile, or run 'gpux init' to create one",
        )
    found = [location / name for name in GPUXFILE_NAMES if (location / name).is_file()]
    if not found:
        raise NotFoundError(
            f"no GPUXfile in '{location}' (looked for {', '.join(GPUXFILE_NAMES)})",
            f"run 'gpux init {location}' to write one",
        )
    if len(found) > 1:
        names = " and ".join(p.name for p in found)
        raise ConfigValidationError(
            f"'{location}' holds both {names}; GPUX cannot tell which one you mean",
            "keep one GPUXfile per project and delete the other",
        )
    return found[0]


def load_project(location: str | Path) -> Project:
    """Parse, validate and complete the GPUXfile of a project folder (or a GPUXfile path)."""
    path = find_gpuxfile(Path(location))
    text = read_gpuxfile(path, str(path))
    config = parse_config(text, str(path))
    project = Project(path=path, root=path.parent.resolve(), config=config, text=text)
    complete(project)
    return project


@dataclass
class ChainProject(_Named):
    """A GPUXfile that chains models, and the projects of its models."""

    path: Path
    root: Path
    config: ChainFile
    text: str
    models: dict[str, Project]


def load_any(location: str | Path) -> Project | ChainProject:
    """The project at ``location``: one model, or a chain with each model's project loaded."""
    path = find_gpuxfile(Path(location))
    text = read_gpuxfile(path, str(path))
    config = parse_any(text, str(path))
    root = path.parent.resolve()
    if isinstance(config, GPUXfile):
        project = Project(path=path, root=root, config=config, text=text)
        complete(project)
        return project
    models = {}
    for key, folder in config.models.items():
        where = project_file(
            root,
            folder,
            f"{path}: models.{key}",
            "keep each model's project in a folder inside the chain's",
        )
        if where == root:
            raise ConfigValidationError(
                f"{path}: models.{key} is the chain's own folder",
                "give each model a folder of its own, with its GPUXfile",
            )
        models[key] = load_project(where)
    return ChainProject(path=path, root=root, config=config, text=text, models=models)


def read_gpuxfile(path: Path, filename: str) -> str:
    """The text of a GPUXfile, reading at most :data:`MAX_GPUXFILE_BYTES` (plus one, to tell a
    bigger file), whatever its size said a moment before."""
    with path.open("rb") as stream:
        data = stream.read(MAX_GPUXFILE_BYTES + 1)
    if len(data) > MAX_GPUXFILE_BYTES:
        raise _too_big(filename)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigParseError(
            f"{filename}: not UTF-8 text (byte {exc.start})", "save the GPUXfile as UTF-8"
        ) from exc


def _too_big(filename: str) -> ConfigParseError:
    return ConfigParseError(
        f"{filename}: the file is larger than {MAX_GPUXFILE_BYTES // (1 << 20)} MiB, more than "
        "a GPUXfile can be",
        "is this really a GPUXfile? Models and data belong in separate files",
    )


def parse_config(text: str, filename: str = "GPUXfile") -> GPUXfile:
    """Parse and validate GPUXfile text. Errors name ``filename:line:column``."""
    config = parse_any(text, filename)
    if not isinstance(config, GPUXfile):
        raise ConfigValidationError(
            f"{filename} is a chain of models ({', '.join(config.models)}), not one model",
            "build it with 'gpux build', or give the folder of one of its models",
        )
    return config


def parse_any(text: str, filename: str = "GPUXfile") -> GPUXfile | ChainFile:
    """A GPUXfile of one model, or of a chain of models (it has a ``chain:`` key)."""
    if len(text) > MAX_GPUXFILE_BYTES:  # characters: at least as many bytes
        raise _too_big(filename)
    try:
        doc = parse_yaml(text)
    except DuplicateKeyError as exc:
        where = f"{filename}:{exc.position.line}:{exc.position.column}"
        raise ConfigParseError(
            f"{where}: key '{exc.key}' appears twice", "keep one of them"
        ) from None
    except LimitError as exc:
        where = f"{filename}:{exc.position.line}:{exc.position.column}"
        raise ConfigParseError(f"{where}: {exc.problem}", exc.hint) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigParseError(
            f"{where}: invalid YAML: {problem}",
            "check indentation (spaces, not tabs) and that every 'key: value' has a space "
            "after the colon",
        ) from None
    if doc.data is None:
        raise ConfigSchemaError(
            f"{filename}: the file is empty", "a minimal GPUXfile is one line: model: ./model.onnx"
        )
    if not isinstance(doc.data, dict):
        raise ConfigSchemaError(
            f"{filename}:1:1: expected a mapping of keys (like 'model: ./model.onnx'), "
            f"got {value_kind(doc.data)}",
            "a minimal GPUXfile is one line: model: ./model.onnx",
        )
    version = doc.data.get("version")
    if isinstance(version, int | float) and not isinstance(version, bool):
        # YAML reads `version: 1.10` as the float 1.1; the tag is the text the user wrote.
        doc.data["version"] = doc.scalars.get(("version",), str(version))
    root: type[GPUXfile] | type[ChainFile] = ChainFile if "chain" in doc.data else GPUXfile
    try:
        return root.model_validate(doc.data)
    except ValidationError as exc:
        raise _schema_error(exc, doc, filename, root) from None


def _clean_location(loc: tuple[Any, ...], data: Any) -> tuple[str | int, ...]:
    """Drop pydantic's union-member tags so the path matches the user's document."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and not _looks_like_tag(part):
            path.append(part)  # a missing required key
            node = None
    return tuple(path)


def _looks_like_tag(part: str) -> bool:
    return any(ch in part for ch in "[]()") or part in {"str", "int", "float", "bool", "none"}


def _dotted(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _model_class_at(
    path: tuple[str | int, ...], root: type[BaseModel] = GPUXfile
) -> type[BaseModel] | None:
    """The pydantic model that describes the mapping found at ``path``."""
    current: Any = root
    for part in path:
        if isinstance(part, int):
            continue  # list items share the list's element type
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """Find the model class inside Optional[...] / list[...] annotations."""
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        inner = typing.get_args(arg)
        for sub in inner:
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                return sub
    return annotation


def _enum_at(path: tuple[str | int, ...], root: type[BaseModel] = GPUXfile) -> list[str]:
    if not path or isinstance(path[-1], int):
        return []
    parent = _model_class_at(path[:-1], root)
    if parent is None or path[-1] not in parent.model_fields:
        return []
    annotation = parent.model_fields[str(path[-1])].annotation
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, Enum):
            return [str(member.value) for member in arg]
    return []


def _schema_error(
    exc: ValidationError,
    doc: PositionedDocument,
    filename: str,
    root: type[BaseModel] = GPUXfile,
) -> ConfigSchemaError:
    lines: list[str] = []
    hints: list[str] = []
    # A union (``labels: list | str``) reports one error per member; merge them per path.
    merged: dict[tuple[str | int, ...], dict[str, Any]] = {}
    for raw in exc.errors():
        path = _clean_location(raw["loc"], doc.data)
        if path in merged and raw["type"] not in ("extra_forbidden", "missing"):
            merged[path]["msg"] += " or " + _expected(raw["msg"]).removeprefix("expected ")
            continue
        merged.setdefault(path, {**raw, "msg": _expected(raw["msg"])})
    for path, error in merged.items():
        kind = error["type"]
        if kind == "extra_forbidden":
            key = str(path[-1])
            pos = doc.position_of(path, key=True)
            parent = _model_class_at(path[:-1], root)
            allowed = sorted(parent.model_fields) if parent else []
            where = "at the top level" if len(path) == 1 else f"in {_dotted(path[:-1])}"
            message = f"unknown key '{key}' {where}"
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean '{close[0]}'?"
            hints.append(f"valid keys {where}: {', '.join(allowed)}")
        elif kind == "missing":
            pos = doc.position_of(path[:-1])
            where = "at the top level" if len(path) == 1 else f"in {_dotted(path[:-1])}"
            message = f"missing required key '{path[-1]}' {where}"
            if path == ("model",):
                hints.append("add the model, e.g. 'model: ./model.onnx'")
        else:
            pos = doc.position_of(path)
            expected = error["msg"]
            value = error.get("input")
            # A validator's own message already says what is wrong with a list or mapping.
            container = kind == "value_error" and isinstance(value, dict | list)
            got = "" if container else _got(value, expected)
            message = f"{_dotted(path)}: {expected}{got}"
            choices = _enum_at(path, root)
            if choices and isinstance(error.get("input"), str):
                alias = _ALIASES.get(error["input"].lower())
                # `nhwc` for NHWC: difflib compares case-sensitively and would find nothing.
                folded = [c for c in choices if c.lower() == error["input"].lower()]
                close = (
                    [alias]
                    if alias in choices
                    else folded
                    or difflib.get_close_matches(error["input"], choices, n=1, cutoff=0.5)
                )
                if close:
                    message += f"; did you mean '{close[0]}'?"
                hints.append(f"{_dotted(path)} must be one of: {', '.join(choices)}")
        where_text = f"{filename}:{pos.line}:{pos.column}" if pos else filename
        lines.append(f"{where_text}: {message}")
    hint = "; ".join(dict.fromkeys(hints)) or "see 'gpux schema' or docs/gpuxfile.md for every key"
    return ConfigSchemaError("\n".join(lines), hint)


def _expected(pydantic_message: str) -> str:
    """Turn pydantic's "Input should be X" into "expected X"."""
    text = pydantic_message.removeprefix("Value error, ")
    if text.startswith("Input should be "):
        text = "expected " + text[len("Input should be ") :].replace("a valid ", "")
    # "integer, unable to parse string as an integer" says the same thing twice.
    text = re.sub(r", unable to parse string as an? \w+", "", text)
    # "dictionary or instance of Runtime" names a Python class the user never sees.
    text = re.sub(r"dictionary or instance of \w+", "a mapping of keys", text)
    return text[0].lower() + text[1:] if text else text


def _got(value: Any, message: str) -> str:
    if value is None or isinstance(value, dict | list):
        return f" (got {value_kind(value)})" if isinstance(value, dict | list) else ""
    text = repr(value)
    if text in message:
        return ""
    return f" (got {text if len(text) < 60 else text[:57] + '...'})"


def complete(project: Project) -> None:
    """Resolve what depends on the project folder. Model I/O is completed at build.

    Every project path the GPUXfile names is checked here, through
    :func:`gpux.config.paths.project_file`: a build reads nothing outside the project."""
    config = project.config
    sources = [("model", "model.source", config.model)] + [
        (
            f"preprocess '{entry.name}' tokenizer",
            f"preprocess[{index}].text.tokenizer.source",
            entry.text.tokenizer,
        )
        for index, entry in enumerate(config.preprocess)
        if entry.text is not None
    ]
    for what, key, spec in sources:
        kind = source_kind(spec.source)
        if kind == "url" and not spec.sha256:
            raise ConfigValidationError(
                f"{project.path}: the {what} source is a URL but its sha256 is missing",
                "add 'sha256: <hex>' beside 'source' so the download can be verified "
                "(sha256sum FILE prints it)",
            )
        if kind == "local":
            project_file(project.root, spec.source, f"{project.path}: {key}")
    if config.model.generative:
        _check_generative_source(project)
    _check_samples(project)
    if isinstance(config.labels, str):
        config.labels = _read_labels(project, config.labels, "labels")
    for result in config.postprocess:
        for step in result.steps:
            options = step.options
            # `labels: model` is read from the model's metadata at build.
            if isinstance(getattr(options, "labels", None), str) and options.labels != "model":
                options.labels = _read_labels(
                    project, options.labels, f"postprocess '{result.name}' {step.name} labels"
                )


def _check_checkpoint_source(project: Project) -> None:
    model = project.config.model
    if model.member is not None or source_kind(model.source) != "local":
        raise ConfigValidationError(
            f"{project.path}: model.source '{model.source}' is not a folder of the project; a "
            "transformers checkpoint is converted from a project folder",
            "copy the checkpoint folder (config.json, *.safetensors, tokenizer files) into the "
            "project, or convert it yourself: gpux convert SRC OUT",
        )
    folder = project_file(project.root, model.source, f"{project.path}: model.source")
    if not (folder / "config.json").is_file():
        raise ConfigValidationError(
            f"{project.path}: model.source '{model.source}' has no config.json, so it is not a "
            "Hugging Face transformers checkpoint",
            "name the folder that save_pretrained wrote",
        )


GENAI_FOLDER_HINT = (
    "name the folder that holds genai_config.json; for a Hugging Face checkpoint or a GGUF "
    "file, set format: transformers or gguf (the build converts it), or run gpux convert SRC OUT"
)


def _check_generative_source(project: Project) -> None:
    """A generative model's source is a folder (or a folder inside an archive), never one file;
    a GGUF source is one file, a transformers checkpoint a folder in the project."""
    model = project.config.model
    if model.format == "transformers":
        _check_checkpoint_source(project)
        return
    if model.member is not None or source_kind(model.source) != "local" or model.converted:
        return  # an archive's folder is checked when it is fetched; a GGUF file when converted
    folder = project_file(project.root, model.source, f"{project.path}: model.source")
    if folder.is_file() and _is_archive(folder):
        return  # the folder is the archive's root: checked once extracted, at build
    if not folder.is_dir():
        what = "is a file" if folder.is_file() else "does not exist"
        raise ConfigValidationError(
            f"{project.path}: model.source '{model.source}' {what}; a generative model "
            "(format: genai) is a folder, or an archive of one",
            GENAI_FOLDER_HINT,
        )
    if model.sha256:
        raise ConfigValidationError(
            f"{project.path}: model.sha256 is set, but model.source '{model.source}' is a "
            "folder, which has no single hash",
            "remove 'sha256' (the image records a hash of every file of the folder)",
        )
    if not (folder / "genai_config.json").is_file():
        raise ConfigValidationError(
            f"{project.path}: model.source '{model.source}' has no genai_config.json, so it is "
            "not an onnxruntime-genai model folder",
            GENAI_FOLDER_HINT,
        )


def _is_archive(path: Path) -> bool:
    import tarfile
    import zipfile

    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)


def _check_samples(project: Project) -> None:
    """build.samples and each variant's calibration: read at build, from the project."""
    remedy = (
        "copy the inputs into the project folder, or name a folder anywhere with "
        "'gpux build --samples PATH'"
    )
    build = project.config.build
    if build.samples is not None:
        project_file(project.root, build.samples, f"{project.path}: build.samples", remedy)
    for variant in build.optimize:
        if variant.calibration is not None:
            key = f"{project.path}: build.optimize[{variant.suffix}].calibration"
            project_file(project.root, variant.calibration, key, remedy)


def _read_labels(project: Project, relative: str, what: str) -> list[str]:
    labels_path = project_file(
        project.root,
        relative,
        f"{project.path}: {what}",
        "copy the labels file into the project folder, or list the labels inline",
    )
    if not labels_path.is_file():
        raise ConfigValidationError(
            f"{project.path}: {what} file '{relative}' does not exist",
            "give a text file with one label per line, relative to the GPUXfile, or an inline list",
        )
    return [line.strip() for line in labels_path.read_text("utf-8").splitlines() if line.strip()]
