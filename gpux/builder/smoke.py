"""The build's smoke run: generated inputs through the model on the chosen backend.

It proves the image runs before it is stored, records which backend really ran it (and why
``auto`` fell back, if it did) and the latency, and checks that the optimised model gives the
same answers as the original.

A GPUXfile with a pipeline is smoke-run through it at its real size: a 640x480 image, a
sentence, a second of audio go through the declared preprocessing, the model and every
postprocess result, so the latency recorded is the one ``run`` will see and a postprocess that
cannot decode the model's real outputs fails the build, not the first request. Every output's
real rank, fixed sizes and batch axis are checked against the signature recorded in the image.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpux.config.schema import Runtime
from gpux.errors import (
    BackendError,
    ConfigValidationError,
    GPUXError,
    HandlerError,
    InputError,
    ModelError,
)
from gpux.runtime.engines import engine_for
from gpux.runtime.tensors import TensorSignature, check_shape, coerce

FIRST_SYMBOLIC = 1  # batch-like leading dimensions
OTHER_SYMBOLIC = 32  # sequence lengths, image sides: large enough for strided convolutions
TIMED_RUNS = 5
# The pipeline's synthetic inputs: a photo-sized image, a sentence, one second of audio.
SMOKE_IMAGE_SIZE = (480, 640)  # height, width
SMOKE_SENTENCE = "GPUX runs this sentence through the pipeline to prove that the image works."
SMOKE_AUDIO_SECONDS = 1.0


@dataclass
class PipelineSpec:
    """What the smoke run needs to build the pipeline: the completed GPUXfile (as stored in the
    image) and the resolved tokenizer files by pipeline input name."""

    gpuxfile: Mapping[str, Any]
    tokenizers: Mapping[str, Path]
    handler: Any = None  # gpux.pipeline.handler.Handler, unpacked from the layer the image stores


def generate_inputs(
    signatures: list[TensorSignature], seed: int = 0
) -> dict[str, np.ndarray[Any, Any]]:
    """One value per input: the declared ``example``, else data generated from dtype and shape."""
    rng = np.random.default_rng(seed)
    # A symbol names the same size everywhere (``batch`` is axis 0 of one input and axis 1 of
    # another); one that leads any shape is batch-like and gets 1.
    leading = {s.shape[0] for s in signatures if s.shape and isinstance(s.shape[0], str)}
    # Declared examples come first: they fix the sizes of the symbols they use, so generated
    # inputs agree with them (an example input_ids [1, 3] makes attention_mask [1, 3] too).
    examples: dict[str, np.ndarray[Any, Any]] = {}
    bound: dict[str, tuple[int, str]] = {}
    for signature in signatures:
        if signature.example is None:
            continue
        try:
            value = coerce(signature.name, signature.example, signature)
            check_shape(signature, value.shape, bound)
        except InputError as exc:
            raise ModelError(
                f"example value of input '{signature.name}' is invalid: {exc.message}",
                "fix inputs[].example in the GPUXfile: " + (exc.hint or ""),
            ) from None
        examples[signature.name] = value
    feed = {}
    for signature in signatures:
        if signature.name in examples:
            feed[signature.name] = examples[signature.name]
            continue
        shape = [
            dim
            if isinstance(dim, int)
            else bound[dim][0]
            if isinstance(dim, str) and dim in bound
            else FIRST_SYMBOLIC
            if axis == 0 or dim in leading
            else OTHER_SYMBOLIC
            for axis, dim in enumerate(signature.shape or [])
        ]
        dtype = signature.np_dtype
        if dtype.kind == "f":
            feed[signature.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "O":
            feed[signature.name] = np.full(shape, "gpux", dtype=object)
        else:
            feed[signature.name] = np.zeros(shape, dtype=dtype)
    return feed


def smoke_run(
    model_path: Path,
    runtime: Runtime,
    inputs: list[TensorSignature],
    reference_path: Path | None = None,
    dimensions: dict[str, int] | None = None,
    outputs: list[TensorSignature] | None = None,
    pipeline: PipelineSpec | None = None,
) -> dict[str, Any]:
    """Load the model, run it (through ``pipeline`` when given), time it, check its outputs
    against ``outputs`` and, with ``reference_path``, its agreement with the original model."""
    backend_class = engine_for(runtime.backend)
    started = time.perf_counter()
    backend = backend_class.load(model_path, runtime, dimensions=dimensions)
    load_ms = (time.perf_counter() - started) * 1e3
    try:
        if pipeline is not None:
            report, feed, produced = _pipeline_run(backend, inputs, outputs or [], pipeline)
        else:
            feed = generate_inputs(inputs)
            started = time.perf_counter()
            produced = _run(backend, feed)
            first_ms = (time.perf_counter() - started) * 1e3
            timings = []
            for _ in range(TIMED_RUNS):
                started = time.perf_counter()
                _run(backend, feed)
                timings.append((time.perf_counter() - started) * 1e3)
            report = {
                "first_run_ms": round(first_ms, 3),
                "median_ms": round(statistics.median(timings), 3),
                "runs": TIMED_RUNS,
            }
            check_outputs(outputs or [], produced, items=None)
        agreement = (
            _agreement(reference_path, runtime, feed, produced, dimensions)
            if reference_path
            else None
        )
    finally:
        placement = backend.placement
        backend.close()
    report = {
        "placement": placement.to_json(),
        "load_ms": round(load_ms, 3),
        **report,
        "input_shapes": {name: list(np.shape(array)) for name, array in feed.items()},
        "output_shapes": {name: list(np.shape(value)) for name, value in produced.items()},
    }
    if agreement is not None:
        report["optimized_vs_original"] = agreement
    return report


Feed = dict[str, np.ndarray[Any, Any]]


def _pipeline_run(
    backend: Any,
    inputs: list[TensorSignature],
    outputs: list[TensorSignature],
    spec: PipelineSpec,
) -> tuple[dict[str, Any], Feed, Feed]:
    """One synthetic item through preprocess -> model -> postprocess, then a few timed runs.

    Returns the report's timings and sizes, the model's first feed and its outputs."""
    from gpux.pipeline.runner import Pipeline
    from gpux.runtime.model import Model

    labels = spec.gpuxfile.get("labels")
    model = Model(backend, inputs, outputs, labels=labels if isinstance(labels, list) else None)
    calls: list[tuple[Feed, Feed, float]] = []
    run = backend.run

    def recording(feed: Mapping[str, np.ndarray[Any, Any]]) -> Feed:
        started = time.perf_counter()
        try:
            result: Feed = run(feed)
        except (BackendError, InputError) as exc:
            shapes = ", ".join(f"{k}{list(np.shape(v))}" for k, v in feed.items())
            raise ModelError(
                f"smoke run failed at the pipeline's real size ({shapes}): "
                f"{exc.message.split(': ', 1)[-1]}",
                "check that the preprocessing gives the model the input size it was trained "
                "on (resize, letterbox, max_length, frame)",
            ) from exc
        calls.append((dict(feed), result, (time.perf_counter() - started) * 1e3))
        return result

    model._run = recording
    pipeline = Pipeline(
        model, spec.gpuxfile, spec.tokenizers, allow_files=False, handler=spec.handler
    )
    item, described = synthetic_item(pipeline, inputs)
    started = time.perf_counter()
    _decode(pipeline, item, described)
    first_ms = (time.perf_counter() - started) * 1e3
    feed, produced, _ = calls[0]
    read = {str(r.source) for r in pipeline.results}
    read |= {s.options.scores for r in pipeline.results for s in r.steps if s.name == "nms"}
    check_outputs(outputs, produced, items=1, read=read)
    del calls[:]
    timings = []
    for _ in range(TIMED_RUNS):
        started = time.perf_counter()
        _decode(pipeline, item, described)
        timings.append((time.perf_counter() - started) * 1e3)
    per_run = len(calls) // TIMED_RUNS
    report = {
        "first_run_ms": round(first_ms, 3),
        # The model alone, at the size the pipeline really feeds it (one window of framed audio).
        "median_ms": round(statistics.median(t for _, _, t in calls), 3),
        "runs": TIMED_RUNS,
        # The whole item: decoding the input, preprocessing, model call(s), postprocessing.
        "pipeline_ms": round(statistics.median(timings), 3),
        "pipeline_input": described,
    }
    if per_run > 1:
        report["model_calls_per_item"] = per_run
    return report, feed, produced


def _decode(pipeline: Any, item: dict[str, Any], described: dict[str, str]) -> None:
    try:
        pipeline.run([item])
    except HandlerError as exc:
        raise type(exc)(
            f"smoke run at the pipeline's real size ({_described(described)}): {exc.message}",
            exc.hint,
        ) from exc
    except ModelError as exc:
        if exc.message.startswith("smoke run"):
            raise
        raise ModelError(
            f"smoke run at the pipeline's real size ({_described(described)}): {exc.message}",
            exc.hint,
        ) from exc
    except GPUXError as exc:
        raise ModelError(
            f"smoke run at the pipeline's real size ({_described(described)}) failed: "
            f"{exc.message}",
            exc.hint,
        ) from exc


def _described(described: dict[str, str]) -> str:
    return ", ".join(f"{name}: {what}" for name, what in described.items())


def _sentence_that_fits(pipeline: Any, name: str, text: Any) -> str:
    """The smoke sentence, cut to fit ``max_length`` when the GPUXfile refuses longer texts
    (``truncation: false``): a build must not fail on the sentence GPUX chose."""
    words = SMOKE_SENTENCE.split()
    if text.truncation:
        return SMOKE_SENTENCE
    processor = pipeline.processor(name)
    while len(words) > 1:
        sentence = " ".join(words)
        try:
            processor([[sentence, sentence]] if text.pairs else [sentence])
            return sentence
        except InputError:
            words.pop()
    return words[0]


def synthetic_item(
    pipeline: Any, inputs: list[TensorSignature], seed: int = 0
) -> tuple[dict[str, Any], dict[str, str]]:
    """One item for ``pipeline`` at a realistic size, and what each value is (for messages and
    the report): a 640x480 image (a gradient with noise), a sentence, a second of audio (a tone
    with noise); model inputs no pipeline input feeds get generated tensors."""
    rng = np.random.default_rng(seed)
    item: dict[str, Any] = {}
    described: dict[str, str] = {}
    for entry in pipeline.entries:
        name = str(entry.name)
        if entry.image is not None:
            from PIL import Image

            height, width = SMOKE_IMAGE_SIZE
            ys, xs = np.mgrid[0:height, 0:width]
            gradient = np.stack(
                [xs * 255 / width, ys * 255 / height, (xs + ys) * 255 / (width + height)], -1
            )
            noise = rng.normal(0, 24, (height, width, 3))
            pixels = np.clip(gradient + noise, 0, 255).astype(np.uint8)
            item[name] = Image.fromarray(pixels, "RGB")
            described[name] = f"{width}x{height} RGB image"
        elif entry.text is not None:
            sentence = _sentence_that_fits(pipeline, name, entry.text)
            item[name] = [sentence, sentence] if entry.text.pairs else sentence
            described[name] = f"a sentence of {len(sentence.split())} words"
        else:
            assert entry.audio is not None
            rate = entry.audio.sample_rate
            t = np.arange(int(rate * SMOKE_AUDIO_SECONDS)) / rate
            samples = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
            item[name] = (samples.astype(np.float32), rate)
            described[name] = f"{SMOKE_AUDIO_SECONDS:g} s of audio at {rate} Hz"
    example = (pipeline.gpuxfile.get("handler") or {}).get("example")
    if pipeline.handler_inputs and example is not None:
        for name in pipeline.handler_inputs:
            if name not in example:
                raise ConfigValidationError(
                    f"handler.example has no '{name}'",
                    f"give one value for each handler input: {', '.join(pipeline.handler_inputs)}",
                )
            item[name] = example[name]
            described[name] = "handler.example"
        return item, described
    if pipeline.handler_inputs and pipeline.handler_inputs != pipeline.tensor_inputs:
        raise ConfigValidationError(
            f"the handler's inputs ({', '.join(pipeline.handler_inputs)}) have no example for "
            "the build's smoke run",
            "add handler.example: one item, e.g. {"
            + ", ".join(f"{n}: ..." for n in pipeline.handler_inputs)
            + "}",
        )
    tensors = [s for s in inputs if s.name in pipeline.tensor_inputs]
    for tensor_name, value in generate_inputs(tensors, seed).items():
        item[tensor_name] = value
        described[tensor_name] = f"generated {list(value.shape)}"
    return item, described


def check_outputs(
    signatures: list[TensorSignature],
    produced: Mapping[str, Any],
    items: int | None,
    read: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Each output's real rank and fixed sizes against its recorded signature; with ``items``,
    the batch axis of the outputs postprocess ``read`` too (it must hold that many items; other
    outputs, such as recurrent states, need not hold items)."""
    for signature in signatures:
        if signature.name not in produced or signature.shape is None:
            continue
        shape = list(np.shape(produced[signature.name]))
        declared = signature.shape_text()
        if len(shape) != len(signature.shape):
            raise ModelError(
                f"output '{signature.name}' has {len(shape)} dimensions {shape} when the model "
                f"runs, but its signature says {len(signature.shape)}: {declared}",
                f"declare its real shape in the GPUXfile (outputs: - name: {signature.name}, "
                f"shape: [...] with {len(shape)} dimensions), or re-export the model with the "
                "right output shape",
            )
        for axis, (want, got) in enumerate(zip(signature.shape, shape, strict=True)):
            if isinstance(want, int) and want != got:
                raise ModelError(
                    f"output '{signature.name}' dimension {axis} is {got} when the model runs "
                    f"({shape}), but its signature says {want}: {declared}",
                    f"declare its real shape in the GPUXfile (outputs: - name: "
                    f"{signature.name}, shape: [...]), or re-export the model",
                )
        batch_axis = signature.batch_axis
        if (
            items is not None
            and signature.name in read
            and batch_axis is not None
            and shape[batch_axis] != items
        ):
            raise ModelError(
                f"output '{signature.name}' has shape {shape} for {items} item: its batch "
                f"axis {batch_axis} should hold the item{'s' if items != 1 else ''}",
                f"declare the axis that holds the items (outputs: - name: {signature.name}, "
                "batch_axis: N), or batch_axis: none for an output the batch shares",
            )


def _agreement(
    original_path: Path,
    runtime: Runtime,
    feed: Feed,
    optimized_outputs: Feed,
    dimensions: dict[str, int] | None = None,
) -> dict[str, float]:
    """The optimised model's outputs against the original's on the same feed and backend
    (so the difference is the optimisation's own, not TF32 on a GPU against fp32 on a CPU).

    No race: whether the optimised graph is kept depends on its size alone (``gpux.builder.
    build``), never on timings that move from one build to the next."""
    original = engine_for(runtime.backend).load(original_path, runtime, dimensions=dimensions)
    try:
        reference = _run(original, feed)
    finally:
        original.close()
    worst = 0.0
    for name, value in reference.items():
        a, b = np.asarray(value), np.asarray(optimized_outputs[name])
        if a.shape != b.shape:
            worst = float("inf")
        elif a.dtype.kind in "fc" and a.size:
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
        elif not np.array_equal(a, b):
            worst = float("inf")
    return {"max_abs_diff": worst}


def _run(backend: Any, feed: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    try:
        result: dict[str, np.ndarray[Any, Any]] = backend.run(feed)
        return result
    except (BackendError, InputError) as exc:  # a feed the runtime refuses is an InputError
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feed.items())
        raise ModelError(
            f"smoke run failed with generated inputs ({shapes}): {exc.message.split(': ', 1)[-1]}",
            "declare realistic inputs in the GPUXfile: fixed sizes in inputs[].shape, or a "
            "value in inputs[].example (e.g. 'example: 16000' for a sample rate)",
        ) from exc
