"""What ``gpux init`` reads from the model it writes a GPUXfile for: the graph's inputs and
outputs, and for an image model the layout and size of its image input.

Only a local .onnx file inside the project is read, and only its graph (the weights kept in
side files are not loaded). A remote model (hf:, https:), a file not there yet or one ONNX
cannot read gives nothing: the template is written as it stands, and ``gpux build`` says what
is wrong with the model when it meets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpux.runtime.tensors import TensorSignature

CHANNEL_COUNTS = (1, 3, 4)
"""Sizes a channel axis may have (grey, colour, colour with alpha): how the layout is told."""


@dataclass(frozen=True)
class ModelSignature:
    """The model's inputs (initializers listed as inputs left out) and outputs."""

    source: str  # as written in the GPUXfile, for the comments that cite it
    inputs: list[TensorSignature]
    outputs: list[TensorSignature]


@dataclass(frozen=True)
class ImageTensor:
    """The image-like input: its layout and fixed sizes, or why they could not be told."""

    tensor: TensorSignature
    layout: str | None  # NCHW, NHWC; None: no axis alone looks like the channels
    channels: int | None
    height: int | None  # None: not a fixed number
    width: int | None


def read_signature(directory: Path, source: str) -> ModelSignature | None:
    """The signature of ``source`` (the GPUXfile's ``model``, relative to ``directory``) when it
    is a local .onnx file that exists and ONNX can read; None otherwise."""
    from gpux.config.hub_source import is_hub_source
    from gpux.config.paths import project_file
    from gpux.errors import GPUXError

    if is_hub_source(source) or "://" in source or not source.lower().endswith(".onnx"):
        return None
    try:
        path = project_file(directory, source, "model")
    except GPUXError:  # outside the project: gpux build refuses it, and says why
        return None
    if not path.is_file():
        return None
    import onnx

    from gpux.builder.analyze import model_signature

    try:
        inputs, outputs = model_signature(onnx.load(str(path), load_external_data=False))
    except Exception:  # not ONNX, truncated, not plain tensors: gpux build says which
        return None
    return ModelSignature(source, inputs, outputs)


def image_tensor(signature: ModelSignature) -> ImageTensor | str:
    """The model's only input of rank 4 (what an image pipeline feeds by default) with its
    layout: ``[N, 3, H, W]`` is NCHW, ``[N, H, W, 3]`` NHWC (a channel axis of 1, 3 or 4).
    A string says why there is none to read: no input, or several, of rank 4."""
    ranked = [t for t in signature.inputs if t.shape is not None and len(t.shape) == 4]
    if len(ranked) != 1:
        names = ", ".join(t.name for t in ranked)
        return (
            f"several inputs have 4 dimensions ({names}): set 'to' to the image's"
            if ranked
            else "no model input has 4 dimensions [N, C, H, W] or [N, H, W, C]"
        )
    tensor = ranked[0]
    assert tensor.shape is not None
    _, second, third, last = tensor.shape
    first_is_channels = second in CHANNEL_COUNTS
    last_is_channels = last in CHANNEL_COUNTS
    if first_is_channels and not last_is_channels:
        return ImageTensor(tensor, "NCHW", _fixed(second), _fixed(third), _fixed(last))
    if last_is_channels and not first_is_channels:
        return ImageTensor(tensor, "NHWC", _fixed(last), _fixed(second), _fixed(third))
    return ImageTensor(tensor, None, None, None, None)


def _fixed(dim: int | str | None) -> int | None:
    return dim if isinstance(dim, int) else None


def describe(tensor: TensorSignature) -> str:
    """``float32 [batch, 3, 224, 224]``: the dtype and shape, ``?`` for a size with no name."""
    if tensor.shape is None:
        return f"{tensor.dtype}, shape unknown"
    dims = ", ".join("?" if dim is None else str(dim) for dim in tensor.shape)
    return f"{tensor.dtype} [{dims}]"
