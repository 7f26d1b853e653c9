"""Reductions over axes: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd,
ReduceSumSquare, ReduceL1, ReduceL2, ReduceLogSum; ArgMax and ArgMin. One invocation per output element, looping over the
elements it reduces (the models GPUX targets reduce rows of hundreds, not millions)."""

from __future__ import annotations

from gpux.runtime.wgpu.kernel import Lowering, NodeContext, Unsupported, kernel
from gpux.runtime.wgpu.kernels._wgsl import (
    NUMBERS,
    compute_type,
    constant_ints,
    enable_f16,
    flat_dispatch,
    flat_main,
    literal,
    load,
    normalize_axis,
    require_dtypes,
    storage,
    store,
    strides,
)

# (start, combine of ``result`` and ``value``, finish) by op.
REDUCTIONS = {
    "ReduceSum": ("zero", "result + value", "result"),
    "ReduceMean": ("zero", "result + value", "result / count"),
    "ReduceMax": ("lowest", "max(result, value)", "result"),
    "ReduceMin": ("highest", "min(result, value)", "result"),
    "ReduceProd": ("one", "result * value", "result"),
    "ReduceSumSquare": ("zero", "result + value * value", "result"),
    "ReduceL1": ("zero", "result + abs(value)", "result"),
    "ReduceL2": ("zero", "result + value * value", "sqrt(result)"),
    "ReduceLogSum": ("zero", "result + value", "log(result)"),
}
FLOAT_ONLY = {"ReduceMean", "ReduceL2", "ReduceLogSum"}
# The opset from which each op takes its axes as an input instead of an attribute.
AXES_INPUT_FROM = {"ReduceSum": 13}


def reduced_axes(context: NodeContext, rank: int) -> list[int] | None:
    """The axes to reduce, sorted; None when the node reduces nothing (a copy)."""
    if context.opset >= AXES_INPUT_FROM.get(context.op_type, 18):
        axes = constant_ints(context, 1, "axes")
    else:
        attribute = context.attribute("axes", None)
        axes = None if attribute is None else [int(a) for a in attribute]
    if not axes:
        if context.attribute("noop_with_empty_axes", 0):
            return None
        return list(range(rank))
    return sorted({normalize_axis(a, rank) for a in axes})


@kernel("ReduceSum")
@kernel("ReduceMean")
@kernel("ReduceMax")
@kernel("ReduceMin")
@kernel("ReduceProd")
@kernel("ReduceSumSquare")
@kernel("ReduceL1")
@kernel("ReduceL2")
@kernel("ReduceLogSum")
def reduce(context: NodeContext) -> Lowering:
    require_dtypes(context, NUMBERS)
    x_info = context.inputs[0]
    output = context.outputs[0]
    assert x_info is not None
    shape = x_info.shape
    axes = reduced_axes(context, len(shape))
    if axes is None:
        axes = []
    kind = compute_type(x_info.dtype)
    if kind != "f32" and context.op_type in FLOAT_ONLY:
        raise Unsupported(f"{context.op_type} on {x_info.dtype}")
    kept = [axis for axis in range(len(shape)) if axis not in axes]
    kept_shape = [shape[axis] for axis in kept]
    reduced_shape = [shape[axis] for axis in axes]
    count = 1
    for dim in reduced_shape:
        count *= dim
    if output.size == 0:
        return Lowering()
    if count == 0 and context.op_type in ("ReduceMax", "ReduceMin", "ReduceMean"):
        raise Unsupported(f"{context.op_type} over an empty axis")
    start_name, combine, finish = REDUCTIONS[context.op_type]
    if kind == "f32":
        starts = {
            "zero": "0.0",
            "one": "1.0",
            "lowest": literal(float("-inf")),
            "highest": literal(float("inf")),
        }
    else:
        starts = {"zero": "0", "one": "1", "lowest": "i32(-2147483648)", "highest": "2147483647"}
    x_strides = strides(shape)

    def offset(flat: str, axes_of: list[int], dims: list[int]) -> str:
        terms = []
        inner = 1
        for position in range(len(axes_of) - 1, -1, -1):
            coordinate = flat if inner == 1 else f"({flat} / {inner}u)"
            if position > 0:
                coordinate = f"({coordinate} % {dims[position]}u)"
            terms.append(f"{coordinate} * {x_strides[axes_of[position]]}u")
            inner *= dims[position]
        return " + ".join(terms) or "0u"

    loop = (
        f"""    let base = {offset("i", kept, kept_shape)};
    for (var r = 0u; r < {count}u; r++) {{
        let value = {load("x", f"base + {offset('r', axes, reduced_shape)}", x_info.dtype)};
        result = {combine};
    }}
"""
        if count
        else ""
    )
    body = f"""    var result = {starts[start_name]};
{loop}    let count = {literal(float(count)) if kind == "f32" else count};
    y[i] = {store(finish, output.dtype)};"""
    shader = (
        enable_f16(x_info.dtype)
        + storage(0, "x", x_info.dtype)
        + "\n"
        + storage(1, "y", output.dtype, write=True)
        + "\n"
        + flat_main(output.size, body)
    )
    return Lowering(flat_dispatch(shader, output.size, [0]))


@kernel("ArgMax")
@kernel("ArgMin")
def arg_extreme(context: NodeContext) -> Lowering:
    """The index of the largest (smallest) value along ``axis``: the first one, or the last
    with ``select_last_index``."""
    require_dtypes(context, NUMBERS)
    x_info = context.inputs[0]
    output = context.outputs[0]
    assert x_info is not None
    axis = normalize_axis(int(context.attribute("axis", 0)), len(x_info.shape))
    extent = x_info.shape[axis]
    inner = 1
    for dim in x_info.shape[axis + 1 :]:
        inner *= dim
    if output.size == 0:
        return Lowering()
    if extent == 0:
        raise Unsupported(f"{context.op_type} over an empty axis")
    better = ">" if context.op_type == "ArgMax" else "<"
    if context.attribute("select_last_index", 0):
        better += "="
    body = f"""    let base = (i / {inner}u) * {extent * inner}u + i % {inner}u;
    var best = {load("x", "base", x_info.dtype)};
    var index = 0;
    for (var r = 1u; r < {extent}u; r++) {{
        let value = {load("x", f"base + r * {inner}u", x_info.dtype)};
        if (value {better} best) {{ best = value; index = i32(r); }}
    }}
    y[i] = index;"""
    shader = (
        enable_f16(x_info.dtype)
        + storage(0, "x", x_info.dtype)
        + "\n"
        + storage(1, "y", output.dtype, write=True)
        + "\n"
        + flat_main(output.size, body)
    )
    return Lowering(flat_dispatch(shader, output.size, [0]))
