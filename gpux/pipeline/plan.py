"""Check a GPUXfile's pipeline against the model at build, and fill in what it left implicit.

Every name the pipeline uses must exist in the model (a typo found at build, not at the first
request); defaults that depend on the model (which input gets the image, which output a result
starts from) are written into the image, so running never guesses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from gpux.config.paths import project_file
from gpux.config.pipeline import AudioInput, Ctc
from gpux.config.schema import GPUXfile
from gpux.errors import ConfigValidationError, ModelError
from gpux.pipeline.steps import is_decoding
from gpux.runtime.tensors import TensorSignature

Fail = Callable[[str, str], ConfigValidationError]


def complete(
    config: GPUXfile,
    inputs: list[TensorSignature],
    outputs: list[TensorSignature],
    tokenizers: dict[str, Path],
    where: str,
    *,
    root: Path | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Validate ``config.preprocess``/``postprocess`` against the model's signature; fill defaults.

    ``tokenizers``: resolved tokenizer files by pipeline input name; ``where``: the GPUXfile path;
    ``root``: the project folder (files steps name); ``metadata``: the model's metadata
    properties (a recogniser's charset).
    """
    by_input = {t.name: t for t in inputs}
    output_names = [t.name for t in outputs]
    fed: dict[str, str] = {}  # model input -> pipeline input that feeds it

    def fail(message: str, hint: str) -> ConfigValidationError:
        return ConfigValidationError(f"{where}: {message}", hint)

    def claim(model_input: str, owner: str, role: str) -> None:
        if model_input not in by_input:
            raise fail(
                f"preprocess '{owner}': {role} '{model_input}' is not a model input",
                f"the model's inputs are: {', '.join(by_input)}",
            )
        if model_input in fed:
            raise fail(
                f"model input '{model_input}' is fed by both '{fed[model_input]}' and '{owner}'",
                "give each model input one source",
            )
        fed[model_input] = owner

    names = [entry.name for entry in config.preprocess]
    for name in names:
        if names.count(name) > 1:
            raise fail(f"two preprocess entries are named '{name}'", "give each a distinct name")

    frame_seconds: float | None = None
    for entry in config.preprocess:
        owner = str(entry.name)
        if entry.text is not None:
            text = entry.text
            explicit = text.model_fields_set
            if text.ids is None:
                raise fail(f"preprocess '{owner}': text.ids cannot be null", "name the ids input")
            claim(text.ids, owner, "text.ids")
            for role in ("mask", "type_ids"):
                target = getattr(text, role)
                if target is None:
                    continue
                if target not in by_input and role not in explicit:
                    setattr(text, role, None)  # the default name; this model has no such input
                    continue
                claim(target, owner, f"text.{role}")
        elif entry.image is not None:
            image = entry.image
            image.to = image.to or _only(
                [
                    t
                    for t in inputs
                    if t.shape is not None and len(t.shape) == 4 and t.name not in fed
                ],
                owner,
                "an input of rank 4 (images)",
                fail,
            )
            claim(image.to, owner, "image.to")
            from gpux.pipeline.image import ImagePreprocessor

            try:
                ImagePreprocessor(image, owner, by_input[image.to]).check()
            except ConfigValidationError as exc:
                raise fail(exc.message, exc.hint or "") from None
        elif entry.audio is not None:
            audio = entry.audio
            states = {s.input for s in audio.state}
            if audio.sample_rate_input:
                claim(audio.sample_rate_input, owner, "audio.sample_rate_input")
            for state in audio.state:
                claim(state.input, owner, "audio.state input")
                if state.output not in output_names:
                    raise fail(
                        f"preprocess '{owner}': state output '{state.output}' is not a model output",
                        f"the model's outputs are: {', '.join(output_names)}",
                    )
            audio.to = audio.to or _only(
                [
                    t
                    for t in inputs
                    if t.name not in fed and t.name not in states and "float" in t.dtype
                ],
                owner,
                "a float input (samples)",
                fail,
            )
            claim(audio.to, owner, "audio.to")
            if audio.frame is not None:
                frame_seconds = audio.frame.size / audio.sample_rate
            _describe_audio_inputs(audio, by_input)
    from gpux.pipeline.text import load_tokenizer

    for entry in config.preprocess:
        if entry.text is not None:
            if entry.name not in tokenizers:
                raise fail(f"preprocess '{entry.name}': its tokenizer was not resolved", "rebuild")
            load_tokenizer(tokenizers[str(entry.name)], f"preprocess '{entry.name}'")

    _complete_results(config, by_input, outputs, frame_seconds, fail, root, metadata or {})


def _describe_audio_inputs(audio: AudioInput, by_input: dict[str, TensorSignature]) -> None:
    """What the pipeline will feed, for the build's smoke run and ``inspect``: a window of
    samples, the states' shapes, the sample rate (models such as Silero VAD reject random
    sizes)."""
    samples = by_input[str(audio.to)]
    if audio.frame is not None and samples.shape is not None and len(samples.shape) == 2:
        samples.shape = [1, audio.frame.context + audio.frame.size]
    for state in audio.state:
        by_input[state.input].shape = list(state.shape)
    if audio.sample_rate_input and by_input[audio.sample_rate_input].example is None:
        by_input[audio.sample_rate_input].example = audio.sample_rate


def _complete_results(
    config: GPUXfile,
    by_input: dict[str, TensorSignature],
    outputs: list[TensorSignature],
    frame_seconds: float | None,
    fail: Fail,
    root: Path | None,
    metadata: Mapping[str, str],
) -> None:
    output_names = [t.name for t in outputs]
    by_output = {t.name: t for t in outputs}
    names = [result.name for result in config.postprocess]
    for result in config.postprocess:
        if names.count(result.name) > 1:
            raise fail(f"two postprocess results are named '{result.name}'", "rename one")
        result.source = result.source or output_names[0]
        if result.source not in by_output:
            raise fail(
                f"postprocess '{result.name}': '{result.source}' is not a model output",
                f"the model's outputs are: {', '.join(output_names)}",
            )
        for position, step in enumerate(result.steps):
            if is_decoding(step) and position != len(result.steps) - 1:
                raise fail(
                    f"postprocess '{result.name}': '{step.name}' must be the last step",
                    "decoding steps (argmax, top_k, threshold, segments, boxes) end a chain",
                )
            options = step.options
            if step.name == "mean_pool" and options.mask not in (None, *by_input):
                raise fail(
                    f"postprocess '{result.name}': mean_pool mask '{options.mask}' is not a "
                    "model input",
                    "name the attention-mask input, or set mask: null",
                )
            if step.name == "segments" and options.frame_ms is None and frame_seconds is None:
                raise fail(
                    f"postprocess '{result.name}': segments needs the duration of one frame",
                    "set frame_ms under segments, or frame: {size: N} under the audio input",
                )
            if step.name == "ctc":
                shape = by_output[result.source].shape
                count = shape[-1] if shape and isinstance(shape[-1], int) else None
                options.charset = _charset(options, count, root, metadata, result.name, fail)
            if step.name in ("yolo", "nms", "detections") and options.labels == "model":
                options.labels = _labels_from_metadata(metadata, result.name, fail)
            if step.name == "nms" and options.scores not in by_output:
                raise fail(
                    f"postprocess '{result.name}': nms scores '{options.scores}' is not a "
                    "model output",
                    f"the model's outputs are: {', '.join(output_names)}",
                )
            if step.name in ("argmax", "top_k") and getattr(options, "axis", None) is None:
                labels = options.labels if isinstance(options.labels, list) else config.labels
                shape = by_output[result.source].shape
                classes = shape[-1] if shape else None
                if isinstance(labels, list) and isinstance(classes, int) and len(labels) != classes:
                    raise fail(
                        f"postprocess '{result.name}': {len(labels)} labels for output "
                        f"'{result.source}' with {classes} classes",
                        "give exactly one label per class, in the model's order",
                    )


def _labels_from_metadata(metadata: Mapping[str, str], result: str, fail: Fail) -> list[str]:
    """ultralytics' exports keep the class names in metadata ``names``, a Python literal
    ``{0: 'person', 1: 'bicycle', ...}`` (read with ast.literal_eval: data, never code)."""
    import ast

    text = metadata.get("names")
    if text is None:
        raise fail(
            f"postprocess '{result}': labels: model, but the model's metadata has no 'names' "
            f"(it has: {', '.join(sorted(metadata)) or 'nothing'})",
            "list the labels inline or in a file, one per line",
        )
    if len(text) > 1 << 20:  # a model file is outside input: bound what is parsed
        raise fail(
            f"postprocess '{result}': the model's metadata 'names' is {len(text)} characters "
            "long, more than the 1 MiB a list of class names needs",
            "list the labels inline or in a file, one per line",
        )
    try:
        names = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise fail(
            f"postprocess '{result}': the model's metadata 'names' is not a mapping of class "
            f"numbers to names: {text[:80]!r}",
            "list the labels inline or in a file, one per line",
        ) from exc
    if isinstance(names, list | tuple) and all(isinstance(n, str) for n in names):
        return list(names)
    if (
        not isinstance(names, dict)
        or sorted(names) != list(range(len(names)))
        or not all(isinstance(n, str) for n in names.values())
    ):
        raise fail(
            f"postprocess '{result}': the model's metadata 'names' is not a mapping of class "
            f"numbers 0..N-1 to names: {text[:80]!r}",
            "list the labels inline or in a file, one per line",
        )
    return [names[index] for index in range(len(names))]


def _charset(
    options: Ctc,
    classes: int | None,
    root: Path | None,
    metadata: Mapping[str, str],
    result: str,
    fail: Fail,
) -> list[str]:
    """The ctc step's characters as a list, read from the model or the project, checked
    against the model's class count when it is fixed."""
    from gpux.pipeline import ctc

    where = f"postprocess '{result}': ctc charset"
    if isinstance(options.charset, list):
        charset = options.charset
    elif options.charset == "model":
        if options.metadata_key not in metadata:
            keys = ", ".join(sorted(metadata)) or "none"
            raise fail(
                f"{where}: the model has no metadata property '{options.metadata_key}' "
                f"(it has: {keys})",
                "set metadata_key to the property holding the characters, or give the "
                "charset as a file (one character per line) or a list",
            )
        charset = ctc.charset_from_metadata(dict(metadata), options.metadata_key)
    else:
        assert root is not None
        path = project_file(root, options.charset, where, "copy the dict file into the project")
        if not path.is_file():
            raise fail(
                f"{where}: file '{options.charset}' does not exist",
                "give a text file with one character per line, relative to the GPUXfile",
            )
        charset = ctc.charset_from_file(path)
    if classes is not None:
        try:
            ctc.full_class_list(charset, classes, options.blank)
        except ModelError as exc:
            raise fail(f"{where}: {exc.message}", exc.hint or "") from exc
    return charset


def _only(candidates: list[TensorSignature], owner: str, kind: str, fail: Fail) -> str:
    if len(candidates) == 1:
        return candidates[0].name
    found = ", ".join(t.name for t in candidates) or "none"
    raise fail(
        f"preprocess '{owner}': cannot tell which model input takes it (expected {kind}; "
        f"found: {found})",
        "say which with 'to: INPUT_NAME'",
    )
