"""What ``gpux inspect`` shows, as data: for a stored image, a project folder or an .onnx file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpux.store import Image, Store


def _by_count(model: dict[str, Any]) -> dict[str, Any]:
    operators = model.get("operators", {})
    ranked = sorted(operators.items(), key=lambda item: (-item[1], item[0]))
    return {**model, "operators": dict(ranked)}


def describe_image(image: Image) -> dict[str, Any]:
    config = image.config
    gpuxfile = config.get("gpuxfile", {})
    return {
        "kind": "image",
        "name": image.name,
        "names": image.names,
        "digest": image.digest,
        "created": image.created,
        "size": image.size,
        "description": gpuxfile.get("description"),
        "source": config.get("source"),
        "inputs": gpuxfile.get("inputs", []),
        "outputs": gpuxfile.get("outputs", []),
        "labels": len(gpuxfile.get("labels") or []) or None,
        "runtime": gpuxfile.get("runtime"),
        "model": _by_count(config.get("model", {})),
        "optimization": config.get("optimization"),
        "smoke": config.get("smoke"),
        "layers": [
            {
                "mediaType": layer.media_type,
                "digest": layer.digest,
                "size": layer.size,
                "title": layer.title,
            }
            for layer in image.layers
        ],
        "build": config.get("build"),
    }


def describe_path(path: Path) -> dict[str, Any]:
    """Analyse a project or .onnx file without building it (no smoke run, nothing stored)."""
    from gpux.builder import analyze, signature, sources
    from gpux.config.load import load_project

    if path.suffix == ".onnx" and not path.is_file():
        from gpux.errors import NotFoundError

        raise NotFoundError(f"model file '{path}' not found", "check the path")
    if path.suffix == ".onnx":
        model = analyze.load_checked(path, str(path))
        inputs, outputs = analyze.model_signature(model)
        origin: dict[str, Any] = {"kind": "local", "origin": str(path)}
        name = path.name
        description = None
    else:
        project = load_project(path)
        resolved = sources.resolve(project)
        model = analyze.load_checked(resolved.path, project.config.model.source)
        declared_inputs, declared_outputs = analyze.model_signature(model)
        inputs = signature.merge(project.config.inputs, declared_inputs, "inputs")
        outputs = signature.merge(project.config.outputs, declared_outputs, "outputs")
        origin = resolved.to_json()
        path = resolved.path
        name = project.default_name
        description = project.config.description
    return {
        "kind": "path",
        "name": name,
        "description": description,
        "source": origin,
        "inputs": [tensor.to_json() for tensor in inputs],
        "outputs": [tensor.to_json() for tensor in outputs],
        "model": _by_count(analyze.model_info(model, path)),
        "smoke": None,
    }


def describe(target: str, store: Store | None = None) -> dict[str, Any]:
    from gpux.api import looks_like_path

    if looks_like_path(target):
        return describe_path(Path(target).expanduser())
    store = store or Store()
    return describe_image(store.get(target))
