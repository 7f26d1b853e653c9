"""Normalisations: BatchNormalization (inference), LayerNormalization (and the RMS forms of
``contrib.py``), InstanceNormalization, GroupNormalization, Softmax, LogSoftmax, Hardmax, LpNormalization, LRN.

Row-wise ops (softmax, layer norm) give each row one workgroup: its invocations stride over
the row and combine partial results in workgroup memory, so a BERT row of 768 values costs a
few loads per invocation instead of one invocation looping over all of them.
"""

from __future__ import annotations

from gpux.runtime.wgpu.kernel import (
    MAX_WORKGROUPS_PER_DIMENSION,
    Binding,
    Dispatch,
    Lowering,
    NodeContext,
    Unsupported,
    kernel,
)
from gpux.runtime.wgpu.kernels._wgsl import (
    FLOATS,
    enable_f16,
    flat_dispatch,
    flat_main,
    literal,
    load,
    normalize_axis,
    require_dtypes,
    storage,
    store,
)

ROW_WORKGROUP = 128

# Workgroup-wide reductions: every invocation passes its partial value and gets the total.
ROW_REDUCTIONS = f"""
var<workgroup> partial: array<f32, {ROW_WORKGROUP}>;
fn row_sum(local: u32, value: f32) -> f32 {{
    partial[local] = value;
    workgroupBarrier();
    for (var step = {ROW_WORKGROUP // 2}u; step > 0u; step >>= 1u) {{
        if (local < step) {{ partial[local] += partial[local + step]; }}
        workgroupBarrier();
    }}
    let total = partial[0];
    workgroupBarrier();
    return total;
}}
fn row_max(local: u32, value: f32) -> f32 {{
    partial[local] = value;
    workgroupBarrier();
    for (var step = {ROW_WORKGROUP // 2}u; step > 0u; step >>= 1u) {{
        if (local < step) {{ partial[local] = max(partial[local], partial[local + step]); }}
        workgroupBarrier();
    }}
    let total = partial[0];
    workgroupBarrier();
    return total;
}}
"""


def row_main(rows: int, length: int, inner: int, body: str) -> str:
    """An entry point with one workgroup per row; ``at(j)`` is the storage index of the row's
    element ``j`` (rows of ``length`` elements, ``inner`` apart)."""
    return f"""{ROW_REDUCTIONS}
@compute @workgroup_size({ROW_WORKGROUP})
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) local: u32) {{
    let row = group.x + group.y * groups.x;
    if (row >= {rows}u) {{ return; }}
    let base = (row / {inner}u) * {length * inner}u + row % {inner}u;
{body}
}}
"""


def row_workgroups(rows: int) -> tuple[int, int, int]:
    if rows <= MAX_WORKGROUPS_PER_DIMENSION:
        return (rows, 1, 1)
    return (MAX_WORKGROUPS_PER_DIMENSION, -(-rows // MAX_WORKGROUPS_PER_DIMENSION), 1)


@kernel("Softmax")
@kernel("LogSoftmax")
def softmax(context: NodeContext) -> Lowering:
    require_dtypes(context, FLOATS)
    x_info = context.inputs[0]
    output = context.outputs[0]
    assert x_info is not None
    shape = x_info.shape
    if not shape:
        raise Unsupported(f"{context.op_type} of a scalar")
    legacy = context.opset < 13  # before 13: the input is flattened to 2-D at axis
    axis = normalize_axis(int(context.attribute("axis", 1 if legacy else -1)), len(shape))
    length = 1
    for dim in shape[axis:] if legacy else shape[axis : axis + 1]:
        length *= dim
    inner = 1
    if not legacy:
        for dim in shape[axis + 1 :]:
            inner *= dim
    if output.size == 0:
        return Lowering()
    rows = output.size // length
    result = (
        "log_value - log(total)" if context.op_type == "LogSoftmax" else "exp(log_value) / total"
    )
    body = f"""    var largest = {literal(float("-inf"))};
    for (var j = local; j < {length}u; j += {ROW_WORKGROUP}u) {{
        largest = max(largest, {load("x", f"base + j * {inner}u", x_info.dtype)});
    }}
    largest = row_max(local, largest);
    var sum = 0.0;
    for (var j = local; j < {length}u; j += {ROW_WORKGROUP}u) {{
        sum += exp({load("x", f"base + j * {inner}u", x_info.dtype)} - largest);
    }}
    let total = row_sum(local, sum);
    for (var j = local; j < {length}u; j += {ROW_WORKGROUP}u) {{
        let log_value = {load("x", f"base + j * {inner}u", x_info.dtype)} - largest;
        y[base + j * {inner}u] = {store(result, output.dtype)};
    }}"""
    shader = (
        enable_f16(x_info.dtype)
        + storage(0, "x", x_info.dtype)
        + "\n"
        + storage(1, "y", output.dtype, write=True)
        + "\n"
        + row_main(rows, length, inner, body)
    )
    bindings = (Binding("input", 0), Binding("output", 0))
    return Lowering((Dispatch(shader, bindings, row_workgroups(rows)),))


@kernel("LayerNormalization")
def layer_normalization(context: NodeContext) -> Lowering:
    x_info = context.inputs[0]
    assert x_info is not None
    axis = normalize_axis(int(context.attribute("axis", -1)), len(x_info.shape))
    length = x_info.size // max(1, _prod(x_info.shape[:axis]))
    roles = ("y", "mean", "inverse")[: len(context.outputs)]
    return lower_row_normalization(context, length, [0], 1, 2, roles)


def lower_row_normalization(
    context: NodeContext,
    length: int,
    summed: list[int],
    scale: int,
    bias: int | None,
    roles: tuple[str, ...],
    simplified: bool = False,
) -> Lowering:
    """Normalise rows of ``length`` values, each the sum of inputs ``summed`` (a skip
    connection and a bias broadcast along the row), scaled by input ``scale`` and shifted by
    input ``bias``. ``roles`` name what each output holds: ``y``, ``mean``, ``inverse`` (the
    inverse standard deviation), ``sum`` (the summed row before normalising) or "" for none;
    outputs the node omits are not written.
    ``simplified`` is RMS normalisation: no mean taken out."""
    require_dtypes(context, FLOATS)
    x_info = context.inputs[summed[0]]
    scale_info = context.inputs[scale]
    assert x_info is not None and scale_info is not None
    bias_info = context.inputs[bias] if bias is not None and bias < len(context.inputs) else None
    if scale_info.size != length or (bias_info is not None and bias_info.size != length):
        raise Unsupported(f"{context.op_type} with a broadcast scale or bias")
    epsilon = float(context.attribute("epsilon", 1e-5))
    if x_info.size == 0:
        return Lowering()
    rows = x_info.size // length
    declarations: list[str] = []
    bindings: list[Binding] = []

    def bind_input(name: str, index: int) -> str:
        info = context.inputs[index]
        assert info is not None
        declarations.append(storage(len(declarations), name, info.dtype))
        bindings.append(Binding("input", index))
        return name

    terms = []
    for position, index in enumerate(summed):
        info = context.inputs[index]
        if info is None:
            continue
        name = bind_input(f"term{position}", index)
        if info.size == x_info.size:
            at = "base + j"
        elif info.size == length:
            at = "j"  # a bias along the row
        elif x_info.size % info.size == 0 and info.size % length == 0:
            at = f"(base + j) % {info.size}u"  # a skip shared by the batch
        else:
            raise Unsupported(f"{context.op_type} with an input of shape {info.shape}")
        terms.append(load(name, at, info.dtype))
    value = " + ".join(terms)
    shifted = (
        f"(value - mean) * inverse * {load(bind_input('scale', scale), 'j', scale_info.dtype)}"
    )
    if bias_info is not None and bias is not None:
        shifted += f" + {load(bind_input('shift', bias), 'j', bias_info.dtype)}"
    stores = {"y": "", "sum": "", "mean": "", "inverse": ""}
    for index, role in enumerate(roles):
        if not role or index in context.omitted_outputs:
            continue
        info = context.outputs[index]
        name = f"{role}_out"
        declarations.append(storage(len(declarations), name, info.dtype, write=True))
        bindings.append(Binding("output", index))
        if role == "y":
            stores[role] = f"\n        y_out[base + j] = {store(shifted, info.dtype)};"
        elif role == "sum":
            stores[role] = f"\n        sum_out[base + j] = {store('value', info.dtype)};"
        else:
            stores[role] = f"\n    if (local == 0u) {{ {name}[row] = {store(role, info.dtype)}; }}"
    count = literal(float(length))
    # Two passes over the row (mean, then squared deviations): no cancellation for rows with
    # a large mean, which E[x^2] - E[x]^2 would suffer.
    if simplified:
        mean_pass = "    let mean = 0.0;"
    else:
        mean_pass = f"""    var sum = 0.0;
    for (var j = local; j < {length}u; j += {ROW_WORKGROUP}u) {{ sum += {value}; }}
    let mean = row_sum(local, sum) / {count};"""
    body = f"""{mean_pass}
    var squares = 0.0;
    for (var j = local; j < {length}u; j += {ROW_WORKGROUP}u) {{
        let deviation = {value} - mean;
        squares += deviation * deviation;
    }}
    let inverse = inverseSqrt(row_sum(local, squares) / {count} + {literal(epsilon)});
    for (var j = local; j < {length}u; j += {ROW_WORKGROUP}u) {{
        let value = {value};{stores["y"]}{stores["sum"]}
    }}{stores["mean"]}{stores["inverse"]}"""
    dtypes = [info.dtype for info in (*context.inputs, *context.outputs) if info is not None]
    shader = enable_f16(*dtypes) + "\n".join(declarations) + "\n" + row_main(rows, length, 1, body)
    return Lowering((Dispatch(shader, tuple(bindings), row_workgroups(rows)),))


def _prod(values: tuple[int, ...]) -> int:
    result = 1
    for value in values:
        result *= value
    return result


@kernel("BatchNormalization")
def batch_normalization(context: NodeContext) -> Lowering:
    require_dtypes(context, FLOATS)
    if len(context.outputs) > 1 or context.attribute("training_mode", 0):
        raise Unsupported("BatchNormalization in training mode")
    if context.opset < 9 and not context.attribute("spatial", 1):
        raise Unsupported("BatchNormalization with spatial=0")
    x_info = context.inputs[0]
    output = context.outputs[0]
    assert x_info is not None
    channels = x_info.shape[1] if len(x_info.shape) > 1 else 1
    spatial = _prod(x_info.shape[2:])
    epsilon = float(context.attribute("epsilon", 1e-5))
    names = ["x", "scale", "bias", "mean", "variance"]
    declarations = []
    for index, name in enumerate(names):
        info = context.inputs[index]
        assert info is not None
        declarations.append(storage(index, name, info.dtype))
    declarations.append(storage(5, "y", output.dtype, write=True))
    dtypes = [info.dtype for info in context.inputs if info is not None]

    def channel(name: str) -> str:
        info = context.inputs[names.index(name)]
        assert info is not None
        return load(name, "c", info.dtype)

    body = f"""    let c = (i / {spatial}u) % {channels}u;
    let normalized = ({load("x", "i", x_info.dtype)} - {channel("mean")})
        * inverseSqrt({channel("variance")} + {literal(epsilon)});
    y[i] = {store(f"normalized * {channel('scale')} + {channel('bias')}", output.dtype)};"""
    shader = (
        enable_f16(*dtypes, output.dtype)
        + "\n".join(declarations)
        + "\n"
        + flat_main(output.size, body)
    )
    return Lowering(flat_dispatch(shader, output.size, [0, 1, 2, 3, 4]))


@kernel("InstanceNormalization")
@kernel("GroupNormalization")
def instance_normalization(context: NodeContext) -> Lowering:
    """Each (image, group) block normalised, then scaled and shifted per channel (per group
    for GroupNormalization before opset 21): one workgroup per block. InstanceNormalization
    is the case of one channel per group."""
    require_dtypes(context, FLOATS)
    x_info, scale_info, bias_info = context.inputs
    output = context.outputs[0]
    assert x_info is not None and scale_info is not None and bias_info is not None
    if len(x_info.shape) < 3:
        raise Unsupported(f"{context.op_type} of a rank-{len(x_info.shape)} input")
    channels = x_info.shape[1]
    groups = int(context.attribute("num_groups", channels))
    if groups <= 0 or channels % groups:
        raise Unsupported(f"{context.op_type} of {channels} channels in {groups} groups")
    plane = _prod(x_info.shape[2:])
    length = plane * (channels // groups)
    if output.size == 0 or length == 0:
        raise Unsupported(f"{context.op_type} of an empty tensor")
    if scale_info.size == channels:
        channel = f"(row % {groups}u) * {channels // groups}u + j / {plane}u"
    elif scale_info.size == groups:
        channel = f"row % {groups}u"
    else:
        raise Unsupported(f"{context.op_type} with a scale of shape {scale_info.shape}")
    rows = output.size // length
    epsilon = float(context.attribute("epsilon", 1e-5))
    count = literal(float(length))
    value = load("x", "base + j", x_info.dtype)
    shifted = (
        f"({value} - mean) * inverse * {load('scale', channel, scale_info.dtype)}"
        f" + {load('bias', channel, bias_info.dtype)}"
    )
    body = f"""    var sum = 0.0;
    for (var j = local; j < {length}u; j += {ROW_WORKGROUP}u) {{ sum += {value}; }}
    let mean = row_sum(local, sum) / {count};
    var squares = 0.0;
    for (var j = local; j < {length}u; j += {ROW_WORKGROUP}u) {{
        let deviation = {value} - mean;
        squares += deviation * deviation;
    }}
    let inverse = inverseSqrt(row_sum(local, squares) / {count} + {literal(epsilon)});
    for (var j = local; j < {length}u; j += {ROW_WORKGROUP}u) {{
        y[base + j] = {store(shifted, output.dtype)};
    }}"""
    shader = (
        enable_f16(x_info.dtype, scale_info.dtype, bias_info.dtype, output.dtype)
        + "\n".join(
            [
                storage(0, "x", x_info.dtype),
                storage(1, "scale", scale_info.dtype),
                storage(2, "bias", bias_info.dtype),
                storage(3, "y", output.dtype, write=True),
            ]
        )
        + "\n"
        + row_main(rows, length, 1, body)
    )
    bindings = (Binding("input", 0), Binding("input", 1), Binding("input", 2), Binding("output", 0))
    return Lowering((Dispatch(shader, bindings, row_workgroups(rows)),))


def _rows_along(shape: tuple[int, ...], axis: int, legacy: bool) -> tuple[int, int, int]:
    """(rows, length, inner) of ``shape`` along ``axis``; ``legacy`` flattens at ``axis``
    (Softmax-family ops before opset 13)."""
    length = _prod(shape[axis:]) if legacy else shape[axis]
    inner = 1 if legacy else _prod(shape[axis + 1 :])
    rows = _prod(shape) // max(1, length)
    return rows, length, inner


@kernel("Hardmax")
@kernel("LpNormalization")
def row_per_invocation(context: NodeContext) -> Lowering:
    """Hardmax (1 at each row's first largest value) and LpNormalization (each row over its
    L1 or L2 norm): one invocation per row."""
    require_dtypes(context, FLOATS)
    x_info = context.inputs[0]
    output = context.outputs[0]
    assert x_info is not None
    legacy = context.op_type == "Hardmax" and context.opset < 13
    default_axis = 1 if legacy else -1
    axis = normalize_axis(int(context.attribute("axis", default_axis)), len(x_info.shape))
    rows, length, inner = _rows_along(x_info.shape, axis, legacy)
    if output.size == 0 or length == 0:
        return Lowering()
    at = f"base + j * {inner}u"
    value = load("x", at, x_info.dtype)
    if context.op_type == "Hardmax":
        body = f"""    var best = {load("x", "base", x_info.dtype)};
    var index = 0u;
    for (var j = 1u; j < {length}u; j++) {{
        if ({value} > best) {{ best = {value}; index = j; }}
    }}
    for (var j = 0u; j < {length}u; j++) {{ y[{at}] = {store("select(0.0, 1.0, j == index)", output.dtype)}; }}"""
    else:
        p = int(context.attribute("p", 2))
        if p not in (1, 2):
            raise Unsupported(f"LpNormalization with p={p}")
        term = f"abs({value})" if p == 1 else f"{value} * {value}"
        norm = "total" if p == 1 else "sqrt(total)"
        body = f"""    var total = 0.0;
    for (var j = 0u; j < {length}u; j++) {{ total += {term}; }}
    let norm = {norm};
    for (var j = 0u; j < {length}u; j++) {{
        y[{at}] = {store(f"select({value} / norm, 0.0, norm == 0.0)", output.dtype)};
    }}"""
    shader = (
        enable_f16(x_info.dtype)
        + storage(0, "x", x_info.dtype)
        + "\n"
        + storage(1, "y", output.dtype, write=True)
        + "\n"
        + flat_main(
            rows,
            f"    let base = (i / {inner}u) * {length * inner}u + i % {inner}u;\n{body}",
        )
    )
    return Lowering(flat_dispatch(shader, rows, [0]))


@kernel("LRN")
def local_response_normalization(context: NodeContext) -> Lowering:
    """Each value over the sum of squares of its neighbours across channels (NCHW)."""
    require_dtypes(context, FLOATS)
    x_info = context.inputs[0]
    output = context.outputs[0]
    assert x_info is not None
    if len(x_info.shape) < 3:
        raise Unsupported(f"LRN of a rank-{len(x_info.shape)} input")
    size = int(context.attribute("size"))
    alpha = float(context.attribute("alpha", 1e-4))
    beta = float(context.attribute("beta", 0.75))
    bias = float(context.attribute("bias", 1.0))
    channels = x_info.shape[1]
    plane = _prod(x_info.shape[2:])
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    body = f"""    let c = i32((i / {plane}u) % {channels}u);
    var squares = 0.0;
    for (var d = max(0, c - {before}); d <= min({channels - 1}, c + {after}); d++) {{
        let v = {load("x", f"i + u32(d - c + {channels}) * {plane}u - {channels * plane}u", x_info.dtype)};
        squares += v * v;
    }}
    let scale = pow({literal(bias)} + {literal(alpha / size)} * squares, {literal(beta)});
    y[i] = {store(f"{load('x', 'i', x_info.dtype)} / scale", output.dtype)};"""
    shader = (
        enable_f16(x_info.dtype)
        + storage(0, "x", x_info.dtype)
        + "\n"
        + storage(1, "y", output.dtype, write=True)
        + "\n"
        + flat_main(output.size, body)
    )
    return Lowering(flat_dispatch(shader, output.size, [0]))
