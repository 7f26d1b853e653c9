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
    if image.components:
        return describe_chain(image)
    if isinstance(config.get("generative"), dict):
        return describe_generative(image)
    return {
        "kind": "image",
        **_identity(image),
        "source": config.get("source"),
        "inputs": gpuxfile.get("inputs", []),
        "outputs": gpuxfile.get("outputs", []),
        "labels": len(gpuxfile.get("labels") or []) or None,
        "pipeline": describe_pipeline(gpuxfile),
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
        "variant": config.get("variant"),
        "variants": variants_of(image),
        "code": describe_code(image),
    }


def describe_generative(image: Image) -> dict[str, Any]:
    """A generative image: the model folder, its generation defaults, the smoke generation and
    what is proven about where it runs."""
    config = image.config
    gpuxfile = config.get("gpuxfile", {})
    return {
        "kind": "generative",
        **_identity(image),
        "source": config.get("source"),
        "model": config.get("generative"),
        "generation": gpuxfile.get("generation"),
        **({"speech": gpuxfile.get("speech") or {}} if _is_speech(config) else {}),
        "runtime": gpuxfile.get("runtime"),
        "smoke": config.get("smoke"),
        "placement_proof": placement_proof((config.get("smoke") or {}).get("placement") or {}),
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


def _is_speech(config: dict[str, Any]) -> bool:
    info = config.get("generative")
    return isinstance(info, dict) and info.get("task") == "speech-to-text"


def placement_proof(placement: dict[str, Any]) -> str:
    """One sentence: what the build proved about where the model runs, and what it did not."""
    details = placement.get("details") or {}
    nodes = details.get("nodes") or {}
    if details.get("proof") == "onnxruntime-log" and nodes:
        counted = ", ".join(f"{count} on {provider}" for provider, count in nodes.items())
        return (
            f"proven at build: ONNX Runtime placed the nodes of onnxruntime-genai's session "
            f"{counted} (its own placement log); device {placement.get('device')}"
        )
    return (
        f"not proven: onnxruntime-genai reported device {placement.get('device')}, but which "
        "execution provider runs each node was not read"
    )


def describe_code(image: Image) -> dict[str, Any] | None:
    """The image's handler code: its files, requirements, and whether it runs without asking."""
    from gpux.store.code import built_here, code_files, handler_entry

    if handler_entry(image) is None:
        return None
    handler = image.config.get("handler", {})
    return {
        "entry": handler.get("entry"),
        "files": code_files(image),
        "requirements": handler.get("requirements", []),
        "built_here": built_here(image),
    }


def _identity(image: Image) -> dict[str, Any]:
    return {
        "name": image.name,
        "names": image.names,
        "digest": image.digest,
        "created": image.created,
        "size": image.size,
        "description": image.config.get("gpuxfile", {}).get("description"),
    }


def describe_chain(image: Image) -> dict[str, Any]:
    """A chain image: how its models connect, then each model as its own image."""
    gpuxfile = image.config.get("gpuxfile", {})
    return {
        "kind": "chain",
        **_identity(image),
        "chain": gpuxfile.get("chain"),
        "models": {key: describe_image(image.component(key)) for key in image.components},
        "build": image.config.get("build"),
    }


def variants_of(image: Image) -> list[dict[str, Any]]:
    """The stored variants built from ``image`` (``NAME:TAG-int8`` ...), with their headline
    figures; found by the annotation each variant carries."""
    from gpux.builder.variants import VARIANT_OF_ANNOTATION

    found = []
    for other in image.store.images():
        of = other.annotations.get(VARIANT_OF_ANNOTATION, "").partition("@")[0]
        if not of or of not in image.names:
            continue
        report = other.config.get("variant", {})
        found.append(
            {
                "image": other.name,
                "digest": other.digest,
                "variant": report.get("name"),
                "size_ratio": report.get("size", {}).get("ratio"),
                "latency_ratio": report.get("latency", {}).get("ratio"),
                "cosine": report.get("accuracy", {}).get("cosine"),
                "top1_agreement": report.get("accuracy", {}).get("top1_agreement"),
            }
        )
    return sorted(found, key=lambda entry: entry["image"])


def describe_pipeline(gpuxfile: dict[str, Any]) -> dict[str, list[str]] | None:
    """One line per pipeline input and per result, e.g. ``audio -> input (16000 Hz, ...)``."""
    from gpux.config.pipeline import PipelineInput, PipelineOutput

    entries = [PipelineInput.model_validate(e) for e in gpuxfile.get("preprocess", [])]
    results = [PipelineOutput.model_validate(r) for r in gpuxfile.get("postprocess", [])]
    if not entries and not results:
        return None
    inputs = []
    for entry in entries:
        if entry.text is not None:
            text = entry.text
            targets = ", ".join(t for t in (text.ids, text.mask, text.type_ids) if t)
            detail = f"tokenizer, max_length {text.max_length}, padding {text.padding.value}"
            detail += "" if text.truncation else ", no truncation"
        elif entry.image is not None:
            image = entry.image
            targets = str(image.to)
            steps = [image.color.value]
            if image.resize is not None:
                resize = image.resize
                steps.append(_resize_text(resize))
            if image.crop:
                steps.append(f"crop {image.crop[0]}x{image.crop[1]}")
            if image.letterbox:
                steps.append(f"letterbox {image.letterbox.size[0]}x{image.letterbox.size[1]}")
            steps.append(f"{image.layout.value} {image.dtype.value}")
            detail = ", ".join(steps)
        else:
            audio = entry.audio
            assert audio is not None
            targets = str(audio.to)
            steps = [f"{audio.sample_rate} Hz mono"]
            if audio.frame:
                steps.append(f"windows of {audio.frame.size} + {audio.frame.context} context")
            steps.extend(f"state {s.input} <- {s.output}" for s in audio.state)
            detail = ", ".join(steps)
        inputs.append(f"{entry.name} ({entry.kind}) -> {targets}: {detail}")
    outputs = [
        f"{r.name} <- {r.source}" + (": " + ", ".join(s.name for s in r.steps) if r.steps else "")
        for r in results
    ]
    return {"inputs": inputs, "results": outputs}


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
        outputs = signature.with_batch_axes(
            project.config.outputs,
            inputs,
            signature.merge(project.config.outputs, declared_outputs, "outputs"),
        )
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


def _resize_text(resize: Any) -> str:
    """One line for ``inspect``: what the resize does, in the GPUXfile's own terms."""
    if resize.size:
        return f"resize {resize.size[0]}x{resize.size[1]}"
    if resize.height:
        width = f", width {resize.min_width or 1}-{resize.max_width or 'any'}"
        text = f"resize to height {resize.height}{width}"
    elif resize.limit_side:
        kind = getattr(resize.limit_type, "value", resize.limit_type)
        text = (
            f"resize {kind} side to at least {resize.limit_side}"
            if kind == "min"
            else (f"resize {kind} side to at most {resize.limit_side}")
        )
    else:
        side = "shorter" if resize.shorter_side else "longer"
        text = f"resize {side} side {resize.shorter_side or resize.longer_side}"
    return text + (f" (x{resize.multiple_of})" if resize.multiple_of > 1 else "")
