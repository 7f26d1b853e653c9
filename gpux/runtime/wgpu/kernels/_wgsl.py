"""WGSL pieces the kernels share: declarations, the flat index, broadcasting, literals.

Shapes are known at load, so kernels write them into the WGSL source as constants: the
compiler folds the index arithmetic, and nodes of the same shapes share one pipeline.
Arithmetic on ``f16`` tensors runs in ``f32`` (loaded with ``f32(...)``, stored back with
``f16(...)``): the same speed on current GPUs, and no precision lost between steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpux.runtime.wgpu.kernel import (
    Binding,
    Dispatch,
    NodeContext,
    TensorInfo,
    Unsupported,
    wgsl_type,
    workgroups_for,
)

WORKGROUP = 256
FLOATS = (np.dtype(np.float32), np.dtype(np.float16))
INTEGERS = (np.dtype(np.int64), np.dtype(np.int32))
NUMBERS = FLOATS + INTEGERS


def device_type(context: NodeContext, dtype: np.dtype[Any]) -> str:
    """The WGSL storage type of ``dtype``; f16 only where the adapter has ``shader-f16``."""
    kind = wgsl_type(dtype)
    if kind == "f16" and "shader-f16" not in context.features:
        raise Unsupported("float16 needs the adapter feature shader-f16")
    return kind


def compute_type(dtype: np.dtype[Any]) -> str:
    """The WGSL type arithmetic runs in for ``dtype``."""
    kind = wgsl_type(dtype)
    return "f32" if kind == "f16" else kind


def require_dtypes(context: NodeContext, allowed: Sequence[np.dtype[Any]]) -> None:
    """Refuse the node unless every present input and output has a dtype in ``allowed``."""
    for tensor in (*context.inputs, *context.outputs):
        if tensor is not None and tensor.dtype not in allowed:
            raise Unsupported(f"{context.op_type} on {tensor.dtype} has no kernel")
        if tensor is not None:
            device_type(context, tensor.dtype)


def enable_f16(*dtypes: np.dtype[Any]) -> str:
    return "enable f16;\n" if any(wgsl_type(d) == "f16" for d in dtypes) else ""


def storage(binding: int, name: str, dtype: np.dtype[Any], write: bool = False) -> str:
    access = "read_write" if write else "read"
    return (
        f"@group(0) @binding({binding}) var<storage, {access}> {name}: array<{wgsl_type(dtype)}>;"
    )


def load(name: str, index: str, dtype: np.dtype[Any]) -> str:
    """An expression reading ``name[index]`` in the compute type."""
    return f"f32({name}[{index}])" if wgsl_type(dtype) == "f16" else f"{name}[{index}]"


def store(value: str, dtype: np.dtype[Any]) -> str:
    """``value`` (of the compute type) converted to the storage type."""
    return f"f16({value})" if wgsl_type(dtype) == "f16" else value


def literal(value: float, kind: str = "f32") -> str:
    """A WGSL literal of ``kind`` (f32, i32 or u32); infinities and NaN as bit patterns."""
    if kind == "i32":
        return f"i32({int(value)})"
    if kind == "u32":
        return f"{int(value)}u"
    if math.isnan(value):
        return "bitcast<f32>(0x7fc00000u)"
    if math.isinf(value):
        return "bitcast<f32>(0x7f800000u)" if value > 0 else "bitcast<f32>(0xff800000u)"
    # f32 literals above f32's range do not compile; clamp to the largest finite f32.
    value = float(np.clip(np.float32(value), np.finfo(np.float32).min, np.finfo(np.float32).max))
    return f"f32({value!r})"


def flat_main(count: int, body: str, workgroup: int = WORKGROUP) -> str:
    """An entry point running ``body`` once per flat index ``i`` below ``count``."""
    return (
        f"@compute @workgroup_size({workgroup})\n"
        "fn main(@builtin(global_invocation_id) gid: vec3<u32>,"
        " @builtin(num_workgroups) groups: vec3<u32>) {\n"
        f"    let i = gid.x + gid.y * groups.x * {workgroup}u;\n"
        f"    if (i >= {count}u) {{ return; }}\n"
        f"{body}\n"
        "}\n"
    )


def strides(shape: Sequence[int]) -> list[int]:
    result = [1] * len(shape)
    for axis in range(len(shape) - 2, -1, -1):
        result[axis] = result[axis + 1] * max(1, shape[axis + 1])
    return result


def coordinate(flat: str, axis: int, shape: Sequence[int]) -> str:
    """WGSL for coordinate ``axis`` of flat index ``flat`` in a contiguous ``shape``."""
    stride = strides(shape)[axis]
    divided = flat if stride == 1 else f"({flat} / {stride}u)"
    return divided if axis == 0 else f"({divided} % {shape[axis]}u)"


def broadcast_index(flat: str, source: Sequence[int], target: Sequence[int]) -> str:
    """WGSL for the index into a tensor of shape ``source`` that numpy broadcasting reads for
    flat index ``flat`` of ``target``."""
    if tuple(source) == tuple(target):
        return flat
    if int(np.prod(source, dtype=np.int64)) == 1:
        return "0u"
    aligned = [1] * (len(target) - len(source)) + list(source)
    source_strides = strides(aligned)
    terms = [
        f"{coordinate(flat, axis, target)} * {source_strides[axis]}u"
        for axis in range(len(target))
        if aligned[axis] != 1
    ]
    return "(" + " + ".join(terms) + ")"


def flat_dispatch(
    shader: str, count: int, inputs: Sequence[int], outputs: int = 1
) -> tuple[Dispatch, ...]:
    """One dispatch of ``flat_main`` over ``count`` elements binding ``inputs`` then outputs."""
    if count == 0:
        return ()
    bindings = tuple(Binding("input", i) for i in inputs) + tuple(
        Binding("output", o) for o in range(outputs)
    )
    return (Dispatch(shader, bindings, workgroups_for(count, WORKGROUP)),)


def present(context: NodeContext, index: int) -> TensorInfo | None:
    return context.inputs[index] if index < len(context.inputs) else None


def constant_ints(context: NodeContext, index: int, what: str) -> list[int] | None:
    """Input ``index`` as a list of ints when the node has it, None when omitted; refused
    when it is only known at run time."""
    if present(context, index) is None:
        return None
    value = context.constants.get(index)
    if value is None:
        raise Unsupported(f"{context.op_type} needs its {what} known at load")
    return [int(v) for v in np.asarray(value).reshape(-1)]


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise Unsupported(f"axis {axis} outside rank {rank}")
    return axis + rank if axis < 0 else axis
