"""The contract between the WGSL kernels and the wgpu executor (issue 19, step 2).

A *kernel* lowers one ONNX node, whose input and output shapes are known at load, into a
:class:`Lowering`: the compute dispatches that produce its outputs on the GPU. Kernels are pure
functions of the node and its shapes; they never touch the device. The executor
(``executor.py``) owns the device: it plans buffers, compiles each distinct WGSL source once,
builds every pipeline and bind group at load and encodes all dispatches of a call into one
compute pass.

Tensors on the device: ``float32`` as ``f32``; ``float16`` as ``f16`` (only where the adapter has
``shader-f16``); ``int64`` and ``int32`` as ``i32`` (the executor checks the range at upload);
``bool`` as ``u32``, one per element. Buffers are padded to 4 bytes.

Bindings: dispatch ``d``'s WGSL declares ``@group(0) @binding(i)`` for ``d.bindings[i]``, in
that order. Inputs are ``read`` storage, outputs and scratch ``read_write`` storage, ``params``
a ``uniform`` (the bytes in :attr:`Dispatch.params`, laid out as the shader's struct expects).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

# One workgroup dimension may count at most this many groups (WebGPU's default limit).
MAX_WORKGROUPS_PER_DIMENSION = 65535

DEVICE_DTYPES: dict[np.dtype[Any], str] = {
    np.dtype(np.float32): "f32",
    np.dtype(np.float16): "f16",
    np.dtype(np.int64): "i32",
    np.dtype(np.int32): "i32",
    np.dtype(np.bool_): "u32",
}


def wgsl_type(dtype: np.dtype[Any]) -> str:
    """The WGSL scalar type that holds ``dtype`` on the device."""
    try:
        return DEVICE_DTYPES[np.dtype(dtype)]
    except KeyError as exc:
        raise Unsupported(f"dtype {np.dtype(dtype)} has no device form") from exc


class Unsupported(Exception):
    """This node (op, attribute combination, dtype or size) has no kernel: the executor runs it
    on ONNX Runtime's CPU provider instead, and the placement proof counts it there."""


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Binding:
    """What a dispatch's binding ``i`` points at: the node's ``input``/``output`` number
    ``index``, the lowering's ``scratch`` buffer ``index``, or the dispatch's ``params``."""

    kind: Literal["input", "output", "scratch", "params"]
    index: int = 0


@dataclass(frozen=True)
class Dispatch:
    shader: str  # WGSL source; identical sources share one module and pipeline
    bindings: tuple[Binding, ...]
    workgroups: tuple[int, int, int]
    params: bytes = b""  # the uniform's bytes when a binding is ``params``
    entry_point: str = "main"


@dataclass(frozen=True)
class Lowering:
    """How a node runs: ``dispatches`` in order, with ``scratch`` buffers (sizes in bytes) that
    live for the node only. ``alias_input`` set means the node moves no data (Reshape,
    Flatten, Squeeze, Unsqueeze, Identity): output 0 is input ``alias_input``'s buffer."""

    dispatches: tuple[Dispatch, ...] = ()
    scratch: tuple[int, ...] = ()
    alias_input: int | None = None
    # Other lowerings of the same node, computing the same outputs from the same bindings
    # (their scratch may differ), made on request (generating them costs 15x the lowering) in
    # the order worth trying: the executor may time them and run the fastest (``tuning.py``).
    # This lowering is the kernel's own choice; alternatives offer none of their own.
    alternatives: Callable[[], tuple[Lowering, ...]] | None = field(
        default=None, compare=False, repr=False
    )

    def candidates(self) -> tuple[Lowering, ...]:
        """This lowering (without its alternatives), then its alternatives."""
        if self.alternatives is None:
            return (self,)
        return (replace(self, alternatives=None), *self.alternatives())


@dataclass(frozen=True)
class NodeContext:
    """Everything a kernel may read about its node. ``constants`` holds the values of inputs
    known at load (initializers and folded constants) by input number: a Reshape's shape, a
    Conv's weight. ``inputs[i]`` is None for an omitted optional input; an omitted optional
    output (SkipLayerNormalization's mean and inverse deviation beside its sum) is numbered in
    ``omitted_outputs``, and ``outputs[i]`` holds an empty stand-in that no kernel may bind."""

    op_type: str
    domain: str
    attributes: Mapping[str, Any]
    inputs: tuple[TensorInfo | None, ...]
    outputs: tuple[TensorInfo, ...]
    constants: Mapping[int, np.ndarray[Any, Any]] = field(default_factory=dict)
    features: frozenset[str] = frozenset()  # adapter features, e.g. "shader-f16"
    opset: int = 17
    omitted_outputs: frozenset[int] = frozenset()

    def attribute(self, name: str, default: Any = None) -> Any:
        return self.attributes.get(name, default)


KernelFactory = Callable[[NodeContext], Lowering]

_KERNELS: dict[tuple[str, str], KernelFactory] = {}


def kernel(op_type: str, domain: str = "") -> Callable[[KernelFactory], KernelFactory]:
    """Register ``factory`` as the lowering of ``op_type`` in ``domain`` ("" is ai.onnx)."""

    def register(factory: KernelFactory) -> KernelFactory:
        _KERNELS[(domain, op_type)] = factory
        return factory

    return register


def lower(context: NodeContext) -> Lowering:
    """The node's lowering, or :class:`Unsupported` naming why not."""
    factory = _KERNELS.get((context.domain, context.op_type))
    if factory is None:
        raise Unsupported(f"no kernel for {context.domain or 'ai.onnx'}.{context.op_type}")
    return factory(context)


def claimed_ops() -> list[str]:
    """Every op with a kernel, as ``op`` or ``domain.op``, sorted: what ``gpux doctor`` prints
    and what the ONNX backend conformance tests run."""
    return sorted(f"{d}.{op}" if d else op for d, op in _KERNELS)


def workgroups_for(count: int, per_group: int) -> tuple[int, int, int]:
    """A 1-D grid of ``count`` invocations in groups of ``per_group``, folded into y when it
    passes the per-dimension limit (the shader recovers the index as
    ``gid.x + gid.y * num_workgroups.x * per_group``)."""
    groups = max(1, -(-count // per_group))
    if groups <= MAX_WORKGROUPS_PER_DIMENSION:
        return (groups, 1, 1)
    rows = -(-groups // MAX_WORKGROUPS_PER_DIMENSION)
    return (MAX_WORKGROUPS_PER_DIMENSION, rows, 1)
