"""Merge the GPUXfile's declared inputs/outputs with the model's own signature."""

from __future__ import annotations

import difflib

from gpux.config.schema import TensorSpec
from gpux.errors import ModelError
from gpux.runtime.tensors import TensorSignature


def merge(
    declared: list[TensorSpec] | None, actual: list[TensorSignature], kind: str
) -> list[TensorSignature]:
    """The model's tensors, refined by what the GPUXfile declares.

    Declared tensors must exist, have the model's dtype and rank, and may only narrow shapes:
    a fixed size where the model is symbolic is fine, a different fixed size is not.
    """
    by_name = {spec.name: spec for spec in declared or []}
    model_names = [tensor.name for tensor in actual]
    for name in by_name:
        if name not in model_names:
            close = difflib.get_close_matches(name, model_names, n=1)
            suggestion = f"; did you mean '{close[0]}'?" if close else ""
            raise ModelError(
                f"{kind[:-1]} '{name}' in the GPUXfile is not in the model{suggestion}",
                f"the model's {kind} are: {', '.join(model_names)}",
            )
    merged = []
    for tensor in actual:
        spec = by_name.get(tensor.name)
        if spec is None:
            merged.append(tensor)
            continue
        if spec.batch_axis is not None and kind == "inputs":
            raise ModelError(
                f"input '{tensor.name}' declares batch_axis, which only outputs have",
                "batch inputs along their first axis, and remove batch_axis from the input",
            )
        dtype = tensor.dtype
        if spec.dtype is not None and spec.dtype.value != tensor.dtype:
            raise ModelError(
                f"{kind[:-1]} '{tensor.name}' is declared {spec.dtype.value} in the GPUXfile, "
                f"but the model has {tensor.dtype}",
                f"set dtype: {tensor.dtype} (or remove it to read it from the model)",
            )
        shape = tensor.shape
        if spec.shape is not None:
            shape = _narrow(kind, tensor, spec.shape)
        merged.append(
            TensorSignature(
                name=tensor.name,
                dtype=dtype,
                shape=shape,
                example=spec.example,
                description=spec.description,
                batch_axis=_declared_axis(tensor.name, spec.batch_axis, shape),
            )
        )
    return merged


def _declared_axis(
    name: str, declared: int | str | None, shape: list[int | str | None] | None
) -> int | None:
    if declared is None:
        return 0  # inferred later by with_batch_axes, from the inputs' batch symbol
    if declared == "none":
        return None
    assert isinstance(declared, int)
    if shape is not None and declared >= len(shape):
        raise ModelError(
            f"output '{name}' declares batch_axis {declared}, but it has {len(shape)} "
            f"dimension{'s' if len(shape) != 1 else ''}: [{', '.join(map(str, shape))}]",
            f"use an axis from 0 to {len(shape) - 1}",
        )
    return declared


def with_batch_axes(
    declared: list[TensorSpec] | None,
    inputs: list[TensorSignature],
    outputs: list[TensorSignature],
) -> list[TensorSignature]:
    """Outputs whose batch axis the GPUXfile leaves out get the axis that carries the inputs'
    batch symbol: a sequence-first recogniser's ``[time, batch, classes]`` gets 1, where
    splitting along axis 0 cut it into time steps."""
    given = {spec.name for spec in declared or [] if spec.batch_axis is not None}
    symbols = {s.shape[0] for s in inputs if s.shape and isinstance(s.shape[0], str)}
    if len(symbols) != 1:
        return outputs
    symbol = symbols.pop()
    for output in outputs:
        if output.name in given or not output.shape or output.shape[0] == symbol:
            continue
        if symbol in output.shape:
            output.batch_axis = output.shape.index(symbol)
    return outputs


def _narrow(
    kind: str, tensor: TensorSignature, declared: list[int | str | None]
) -> list[int | str | None]:
    if tensor.shape is None:
        return list(declared)
    if len(declared) != len(tensor.shape):
        raise ModelError(
            f"{kind[:-1]} '{tensor.name}' is declared with {_dimensions(len(declared))} "
            f"{_shape(declared)}, but the model has {_dimensions(len(tensor.shape))}: "
            f"{tensor.shape_text()}",
            f"use a shape of rank {len(tensor.shape)}, like {tensor.shape_text()}",
        )
    result: list[int | str | None] = []
    for axis, (want, have) in enumerate(zip(declared, tensor.shape, strict=True)):
        if isinstance(have, int) and want != have:
            raise ModelError(
                f"{kind[:-1]} '{tensor.name}' dimension {axis} is declared "
                f"{'null' if want is None else repr(want)} in the "
                f"GPUXfile, but the model fixes it to {have}",
                f"use {have} for that dimension (model shape {tensor.shape_text()})",
            )
        result.append(want if want is not None else have)
    return result


def _dimensions(count: int) -> str:
    return f"{count} dimension" + ("" if count == 1 else "s")


def _shape(shape: list[int | str | None]) -> str:
    return "[" + ", ".join("null" if d is None else str(d) for d in shape) + "]"


def fixed_dimensions(
    declared: list[TensorSpec] | None, actual: list[TensorSignature]
) -> dict[str, int]:
    """Symbols the GPUXfile fixes: ``{"batch": 1}`` for ``shape: [1, 4]`` over ``[batch, 4]``.

    A symbol fixed to two different sizes cannot be told to ONNX Runtime, so it is left out
    (GPUX still checks every input against its declared shape).
    """
    sizes: dict[str, set[int]] = {}
    by_name = {tensor.name: tensor for tensor in actual}
    for spec in declared or []:
        model = by_name.get(spec.name)
        if spec.shape is None or model is None or model.shape is None:
            continue
        for want, have in zip(spec.shape, model.shape, strict=False):
            if isinstance(want, int) and isinstance(have, str):
                sizes.setdefault(have, set()).add(want)
    return {symbol: next(iter(found)) for symbol, found in sizes.items() if len(found) == 1}
