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


# erf has no WGSL builtin: a Taylor series near 0 (where a rational fit loses relative
# precision) and Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7) elsewhere.
ERF = """
fn erf_f32(x: f32) -> f32 {
    let a = abs(x);
    if (a < 0.5) {
        let x2 = x * x;
        return 1.1283791670955126 * x * (1.0 + x2 * (-0.3333333333333333 + x2 * (0.1
            + x2 * (-0.023809523809523808 + x2 * (0.004629629629629629
            + x2 * -0.0007575757575757576)))));
    }
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
        + t * 1.061405429))));
    return sign(x) * (1.0 - poly * exp(-a * a));
}
"""

# log(1 + e^x) without losing the small values: log(1 + tiny) rounds to a few bits in f32, so
# a series takes over where e^-|x| is small.
SOFTPLUS = """
fn softplus_f32(x: f32) -> f32 {
    let e = exp(-abs(x));
    let tail = select(log(1.0 + e), e * (1.0 - e * (0.5 - e / 3.0)), e < 0.01);
    return max(x, 0.0) + tail;
}
"""

# tanh as drivers write it, (e^2x - 1) / (e^2x + 1), loses the relative precision of small
# values (lavapipe: 1e-3 near 1e-4) and overflows for large ones; a series near 0 and the
# decaying exponential elsewhere keep both.
TANH = """
fn tanh_f32(x: f32) -> f32 {
    let a = abs(x);
    if (a < 0.125) {
        let x2 = x * x;
        return x * (1.0 - x2 * (0.3333333333333333 - x2 * (0.13333333333333333
            - x2 * 0.05396825396825397)));
    }
    let e = exp(-2.0 * min(a, 15.0));
    return sign(x) * (1.0 - e) / (1.0 + e);
}
"""

MATH_FUNCTIONS = {"erf_f32": ERF, "softplus_f32": SOFTPLUS, "tanh_f32": TANH}


def math_helpers(*expressions: str) -> str:
    """The WGSL helper functions (``erf_f32``, ``tanh_f32``, ``softplus_f32``) that
    ``expressions`` call."""
    return "".join(
        source for name, source in MATH_FUNCTIONS.items() if any(name in e for e in expressions)
    )


def activation(name: str, params: Sequence[float]) -> str:
    """WGSL applying a fused activation (com.microsoft.FusedConv/FusedGemm's ``activation``
    and its parameters) to the f32 value ``v``."""
    if name == "Relu":
        return "max(v, 0.0)"
    if name == "Tanh":
        return "tanh_f32(v)"
    if name == "Sigmoid":
        return "1.0 / (1.0 + exp(-v))"
    if name == "LeakyRelu":
        alpha = params[0] if params else 0.01
        return f"select(v * {literal(alpha)}, v, v >= 0.0)"
    if name == "HardSigmoid":
        alpha, beta = (list(params) + [0.2, 0.5][len(params) :])[:2]
        return f"clamp({literal(alpha)} * v + {literal(beta)}, 0.0, 1.0)"
    if name == "Clip":
        low, high = (list(params) + [float("-inf"), float("inf")][len(params) :])[:2]
        return f"min(max(v, {literal(low)}), {literal(high)})"
    raise Unsupported(f"fused activation {name}")
