"""Inputs for a benchmark: one feed per batch size, all prepared before anything is timed.

A feed starts as one example, generated from the model's signature (as the build's smoke run
does) or made from real inputs (tensors, or pipeline items such as sentences and image files,
taken through the GPUXfile's pre-processing). It is then resized along its *batch axes*: axis 0
when it is symbolic, and every axis named by a symbol that leads some input's shape (``batch``
is axis 0 of ``input`` and axis 1 of an RNN ``state``), repeating its rows as needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gpux.errors import InputError
from gpux.runtime.tensors import TensorSignature, check_feed

if TYPE_CHECKING:
    from gpux.api import Model

Array = np.ndarray[Any, Any]
Feed = dict[str, Array]
FeedSource = Mapping[str, Any] | Sequence[Any] | Callable[["Model"], Mapping[str, Any]] | None
"""Where inputs come from: None (generated), ``{input: value}`` tensors, a list of pipeline
items (``"a sentence"``, ``Path("page.png")``, ``{"text": ...}``), or a function of the loaded
model returning tensors."""


def batch_axes(signatures: Sequence[TensorSignature]) -> dict[str, list[int]]:
    """Per input, the axes that grow with the batch (empty for inputs that do not batch)."""
    leading = {s.shape[0] for s in signatures if s.shape and isinstance(s.shape[0], str)}
    axes: dict[str, list[int]] = {}
    for signature in signatures:
        shape = signature.shape or []
        axes[signature.name] = [
            axis
            for axis, dim in enumerate(shape)
            if (axis == 0 and not isinstance(dim, int)) or (isinstance(dim, str) and dim in leading)
        ]
    return axes


def fixed_batch(signatures: Sequence[TensorSignature]) -> tuple[int, str] | None:
    """``(size, why)`` when no input has a batch axis: the only batch the model takes."""
    if any(batch_axes(signatures).values()):
        return None
    for signature in signatures:
        if signature.shape:
            return int(signature.shape[0] or 1), f"input '{signature.name}' is {signature.shape}"
    return 1, "its inputs are scalars"


def check_batch_sizes(
    signatures: Sequence[TensorSignature], sizes: Sequence[int], model_name: str
) -> None:
    """A model with a fixed batch takes only that size: say so before anything is loaded twice."""
    fixed = fixed_batch(signatures)
    if fixed is None:
        return
    size, why = fixed
    refused = [b for b in sizes if b != size]
    if refused:
        raise InputError(
            f"model '{model_name}' has a fixed batch size of {size} ({why}); it cannot run "
            f"--batch-size {refused[0]}",
            f"use --batch-size {size}, or export the model with a symbolic first dimension "
            "(and leave it symbolic in the GPUXfile's inputs[].shape)",
        )


def feed_batch(feed: Mapping[str, Array], signatures: Sequence[TensorSignature]) -> int:
    """How many items a feed holds (1 for a model without batch axes)."""
    fixed = fixed_batch(signatures)
    if fixed is not None:
        return fixed[0]
    for name, axes in batch_axes(signatures).items():
        if axes and name in feed:
            return int(feed[name].shape[axes[0]])
    return 1


def resize(feed: Mapping[str, Array], signatures: Sequence[TensorSignature], size: int) -> Feed:
    """``feed`` with ``size`` items on every batch axis (rows repeated in turn), contiguous."""
    axes = batch_axes(signatures)
    resized: Feed = {}
    for name, value in feed.items():
        for axis in axes.get(name, []):
            current = value.shape[axis]
            if current == 0:
                raise InputError(
                    f"input '{name}' is empty along axis {axis}", "give at least one item"
                )
            if current != size:
                value = np.take(value, np.arange(size) % current, axis=axis)
        # np.asarray keeps a scalar 0-d (np.ascontiguousarray makes it [1]: Silero's sr).
        resized[name] = np.asarray(value, order="C")
    return resized


def example_feed(model: Model, source: FeedSource) -> Feed:
    """The one feed the batch sizes are made from, checked like ``Model.run`` checks it."""
    if source is None:
        from gpux.builder.smoke import generate_inputs

        return generate_inputs(model.inputs)
    if callable(source):
        return check_feed(source(model), model.inputs)
    if isinstance(source, Mapping):
        return check_feed(source, model.inputs)
    return check_feed(pipeline_feed(model, list(source)), model.inputs)


def pipeline_feed(model: Model, items: list[Any]) -> Mapping[str, Any]:
    """The tensors the GPUXfile's pre-processing makes of ``items``: the pipeline runs once and
    its first model call is kept (for audio windows, the first window)."""
    if not items:
        raise InputError("no inputs given", "give at least one --input")
    pipeline = model.pipeline
    if pipeline is None:
        from gpux.pipeline.runner import Pipeline

        pipeline = Pipeline(model, {}, {})
    calls: list[Mapping[str, Any]] = []
    run = model.run

    def recording(feed: Mapping[str, Any]) -> dict[str, Array]:
        calls.append(feed)
        return run(feed)

    model.run = recording  # type: ignore[method-assign,assignment]
    try:
        pipeline.run([pipeline.item(item) for item in items])
    finally:
        del model.run
    return calls[0]
