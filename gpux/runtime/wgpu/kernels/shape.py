"""Data movement: views that move nothing (Reshape, Flatten, Squeeze, Unsqueeze, Identity,
Dropout), copies that reorder (Transpose, Concat, Split, Slice, Expand, Tile, Pad, Trilu,
DepthToSpace, SpaceToDepth, CumSum), and tensors known at load (Shape, Size, ConstantOfShape,
Range). Copies move raw elements, so they serve every device dtype without conversion.
Indexed reads and writes are in ``gather.py``."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpux.runtime.wgpu.kernel import (
    DEVICE_DTYPES,
    Binding,
    Dispatch,
    Lowering,
    NodeContext,
    Unsupported,
    kernel,
    workgroups_for,
)
from gpux.runtime.wgpu.kernels._wgsl import (
    INTEGERS,
    WORKGROUP,
    broadcast_index,
    compute_type,
    constant_ints,
    coordinate,
    enable_f16,
    flat_dispatch,
    flat_main,
    literal,
    normalize_axis,
    require_dtypes,
    storage,
    store,
    strides,
)

ANY_DTYPE = tuple(DEVICE_DTYPES)


@kernel("Reshape")
@kernel("Flatten")
@kernel("Squeeze")
@kernel("Unsqueeze")
@kernel("Identity")
def view(context: NodeContext) -> Lowering:
    source = context.inputs[0] if context.inputs else None
    if source is None or source.size != context.outputs[0].size:
        raise Unsupported(f"{context.op_type} of a non-tensor or a size change")
    require_dtypes(context, ANY_DTYPE)
    return Lowering(alias_input=0)


def _copy(context: NodeContext, count: int, index: str, inputs: list[int]) -> Lowering:
    """A dispatch writing ``y[i] = x[index]`` for the flat output index ``i``."""
    source = context.inputs[inputs[0]]
    output = context.outputs[0]
    assert source is not None
    shader = (
        enable_f16(source.dtype)
        + storage(0, "x", source.dtype)
        + "\n"
        + storage(1, "y", output.dtype, write=True)
        + "\n"
        + flat_main(count, f"    y[i] = x[{index}];")
    )
    return Lowering(flat_dispatch(shader, count, inputs))


@kernel("Transpose")
def transpose(context: NodeContext) -> Lowering:
    require_dtypes(context, ANY_DTYPE)
    source = context.inputs[0]
    output = context.outputs[0]
    assert source is not None
    rank = len(source.shape)
    permutation = list(context.attribute("perm", None) or range(rank - 1, -1, -1))
    source_strides = strides(source.shape)
    terms = [
        f"{coordinate('i', axis, output.shape)} * {source_strides[permutation[axis]]}u"
        for axis in range(rank)
        if output.shape[axis] != 1
    ]
    return _copy(context, output.size, "(" + (" + ".join(terms) or "0u") + ")", [0])


@kernel("Expand")
@kernel("Tile")
def broadcast_copy(context: NodeContext) -> Lowering:
    require_dtypes(context, ANY_DTYPE)
    source = context.inputs[0]
    output = context.outputs[0]
    assert source is not None
    if context.op_type == "Expand":
        return _copy(context, output.size, broadcast_index("i", source.shape, output.shape), [0])
    # Tile: each output coordinate wraps around the input's extent.
    source_strides = strides(source.shape)
    terms = [
        f"({coordinate('i', axis, output.shape)} % {source.shape[axis]}u) * {source_strides[axis]}u"
        for axis in range(len(source.shape))
        if source.shape[axis] != 1
    ]
    return _copy(context, output.size, "(" + (" + ".join(terms) or "0u") + ")", [0])


def _block_copy(
    source_dtype: np.dtype[Any],
    count: int,
    inner: int,
    source_extent: int,
    target_extent: int,
    offset: int,
    reverse: bool,
) -> str:
    """WGSL copying a block along one axis: elements of a tensor whose axis has
    ``source_extent`` into (or, ``reverse``, out of) one whose axis has ``target_extent``, at
    ``offset`` along that axis; ``inner`` is the product of the dims after the axis."""
    outer = f"(i / {source_extent * inner}u)"
    rest = f"(i % {source_extent * inner}u)"
    wide = f"{outer} * {target_extent * inner}u + {offset * inner}u + {rest}"
    body = f"    y[i] = x[{wide}];" if reverse else f"    y[{wide}] = x[i];"
    return (
        enable_f16(source_dtype)
        + storage(0, "x", source_dtype)
        + "\n"
        + storage(1, "y", source_dtype, write=True)
        + "\n"
        + flat_main(count, body)
    )


@kernel("Concat")
def concat(context: NodeContext) -> Lowering:
    require_dtypes(context, ANY_DTYPE)
    output = context.outputs[0]
    axis = normalize_axis(int(context.attribute("axis")), len(output.shape))
    inner = int(np.prod(output.shape[axis + 1 :], dtype=np.int64))
    dispatches: list[Dispatch] = []
    offset = 0
    for index, source in enumerate(context.inputs):
        assert source is not None
        extent = source.shape[axis]
        if source.size:
            shader = _block_copy(
                source.dtype, source.size, inner, extent, output.shape[axis], offset, False
            )
            dispatches.append(
                Dispatch(
                    shader,
                    (Binding("input", index), Binding("output", 0)),
                    workgroups_for(source.size, WORKGROUP),
                )
            )
        offset += extent
    return Lowering(tuple(dispatches))


@kernel("Split")
def split(context: NodeContext) -> Lowering:
    require_dtypes(context, ANY_DTYPE)
    source = context.inputs[0]
    assert source is not None
    axis = normalize_axis(int(context.attribute("axis", 0)), len(source.shape))
    inner = int(np.prod(source.shape[axis + 1 :], dtype=np.int64))
    dispatches = []
    offset = 0
    for index, target in enumerate(context.outputs):
        extent = target.shape[axis]
        if target.size:
            shader = _block_copy(
                source.dtype, target.size, inner, extent, source.shape[axis], offset, True
            )
            dispatches.append(
                Dispatch(
                    shader,
                    (Binding("input", 0), Binding("output", index)),
                    workgroups_for(target.size, WORKGROUP),
                )
            )
        offset += extent
    if offset != source.shape[axis]:
        raise Unsupported("Split outputs that do not cover the input")
    return Lowering(tuple(dispatches))


@kernel("Slice")
def slice_(context: NodeContext) -> Lowering:
    require_dtypes(context, ANY_DTYPE)
    source = context.inputs[0]
    output = context.outputs[0]
    assert source is not None
    rank = len(source.shape)
    if context.opset >= 10:
        starts = constant_ints(context, 1, "starts") or []
        ends = constant_ints(context, 2, "ends") or []
        axes = constant_ints(context, 3, "axes")
        steps = constant_ints(context, 4, "steps")
    else:
        starts = list(context.attribute("starts"))
        ends = list(context.attribute("ends"))
        axes = context.attribute("axes", None)
        steps = None
    axes = list(axes) if axes else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    begin = [0] * rank
    step = [1] * rank
    for axis, start, end, stride in zip(axes, starts, ends, steps, strict=True):
        axis = normalize_axis(axis, rank)
        begin[axis], _, step[axis] = slice(start, end, stride).indices(source.shape[axis])
    source_strides = strides(source.shape)
    base = sum(b * s for b, s in zip(begin, source_strides, strict=True))
    terms = [
        f"i32({coordinate('i', axis, output.shape)}) * {step[axis] * source_strides[axis]}"
        for axis in range(rank)
        if output.shape[axis] != 1
    ]
    index = f"u32({base} + " + (" + ".join(terms) or "0") + ")"
    return _copy(context, output.size, index, [0])


def _constant_fill(
    output_dtype: np.dtype[Any], values: list[float] | None, fill: float, count: int
) -> str:
    kind = DEVICE_DTYPES[np.dtype(output_dtype)]
    compute = "f32" if kind == "f16" else kind
    if values is None:
        body = f"    y[i] = {store(literal(fill, compute), output_dtype)};"
    else:
        cases = "\n".join(
            f"        case {n}u: {{ y[i] = {store(literal(v, compute), output_dtype)}; }}"
            for n, v in enumerate(values)
        )
        body = f"    switch (i) {{\n{cases}\n        default: {{}}\n    }}"
    return (
        enable_f16(output_dtype)
        + storage(0, "y", output_dtype, write=True)
        + "\n"
        + flat_main(count, body)
    )


def _within_int32(values: list[float], dtype: np.dtype[Any]) -> None:
    if dtype in INTEGERS and any(not -(2**31) <= v < 2**31 for v in values):
        raise Unsupported("a constant outside int32")


@kernel("Shape")
def shape(context: NodeContext) -> Lowering:
    require_dtypes(context, ANY_DTYPE)
    source = context.inputs[0]
    output = context.outputs[0]
    assert source is not None
    rank = len(source.shape)
    start = int(context.attribute("start", 0))
    end = context.attribute("end", None)
    dims = list(source.shape)[slice(start, rank if end is None else int(end))]
    if len(dims) != output.size:
        raise Unsupported("Shape whose output disagrees with its input")
    if not dims:
        return Lowering()
    shader = _constant_fill(output.dtype, [float(d) for d in dims], 0.0, len(dims))
    return Lowering((Dispatch(shader, (Binding("output", 0),), (1, 1, 1)),))


@kernel("ConstantOfShape")
def constant_of_shape(context: NodeContext) -> Lowering:
    output = context.outputs[0]
    require_dtypes(context, ANY_DTYPE)
    value = context.attribute("value", None)
    fill = float(np.asarray(value).reshape(-1)[0]) if value is not None else 0.0
    _within_int32([fill], output.dtype)
    if output.size == 0:
        return Lowering()
    shader = _constant_fill(output.dtype, None, fill, output.size)
    return Lowering(
        (Dispatch(shader, (Binding("output", 0),), workgroups_for(output.size, WORKGROUP)),)
    )


@kernel("Range")
def range_(context: NodeContext) -> Lowering:
    output = context.outputs[0]
    require_dtypes(context, (np.dtype(np.float32), *INTEGERS))
    start = context.constants.get(0)
    delta = context.constants.get(2)
    if start is None or delta is None:
        raise Unsupported("Range needs its start and delta known at load")
    kind = DEVICE_DTYPES[np.dtype(output.dtype)]
    first, step = float(np.asarray(start).reshape(-1)[0]), float(np.asarray(delta).reshape(-1)[0])
    _within_int32([first, first + step * max(0, output.size - 1)], output.dtype)
    body = f"    y[i] = {literal(first, kind)} + {kind}(i) * {literal(step, kind)};"
    shader = storage(0, "y", output.dtype, write=True) + "\n" + flat_main(output.size, body)
    if output.size == 0:
        return Lowering()
    return Lowering(
        (Dispatch(shader, (Binding("output", 0),), workgroups_for(output.size, WORKGROUP)),)
    )


@kernel("Dropout")
def dropout(context: NodeContext) -> Lowering:
    """Dropout at inference is the identity; training mode, or its mask, is refused."""
    if len(context.outputs) > 1:
        raise Unsupported("Dropout's mask output")
    training = context.constants.get(2) if len(context.inputs) > 2 else None
    if len(context.inputs) > 2 and context.inputs[2] is not None and training is None:
        raise Unsupported("Dropout with training_mode known only at run time")
    if training is not None and bool(np.asarray(training).reshape(-1)[0]):
        raise Unsupported("Dropout in training mode")
    if context.opset < 7 and not context.attribute("is_test", 0):
        raise Unsupported("Dropout in training mode")
    return view(context)


@kernel("Pad")
def pad(context: NodeContext) -> Lowering:
    require_dtypes(context, ANY_DTYPE)
    source = context.inputs[0]
    output = context.outputs[0]
    assert source is not None
    rank = len(source.shape)
    mode = context.attribute("mode", "constant")
    if context.opset >= 11:
        pads = constant_ints(context, 1, "pads") or [0] * (2 * rank)
        value_input = context.constants.get(2) if len(context.inputs) > 2 else None
        if len(context.inputs) > 2 and context.inputs[2] is not None and value_input is None:
            raise Unsupported("Pad's constant value known only at run time")
        fill = float(np.asarray(value_input).reshape(-1)[0]) if value_input is not None else 0.0
        axes = constant_ints(context, 3, "axes") if len(context.inputs) > 3 else None
    else:
        pads = [int(p) for p in context.attribute("pads")]
        fill = float(context.attribute("value", 0.0))
        axes = None
    axes = [normalize_axis(a, rank) for a in (axes or range(rank))]
    begin = [0] * rank
    for position, axis in enumerate(axes):
        begin[axis] = pads[position]
    if mode not in ("constant", "edge", "reflect", "wrap"):
        raise Unsupported(f"Pad mode {mode}")
    kind = DEVICE_DTYPES[np.dtype(output.dtype)]
    if kind in ("i32",):
        _within_int32([fill], output.dtype)
    source_strides = strides(source.shape)
    lines = ["    var at = 0u;", "    var outside = false;"]
    for axis in range(rank):
        extent = source.shape[axis]
        lines.append(
            f"    var c{axis} = i32({coordinate('i', axis, output.shape)}) - {begin[axis]};"
        )
        if mode == "constant":
            lines.append(f"    if (c{axis} < 0 || c{axis} >= {extent}) {{ outside = true; }}")
        elif mode == "edge":
            lines.append(f"    c{axis} = clamp(c{axis}, 0, {extent - 1});")
        elif mode == "wrap":
            lines.append(f"    c{axis} = ((c{axis} % {extent}) + {extent}) % {extent};")
        elif extent > 1:  # reflect: mirror without repeating the edge
            period = 2 * (extent - 1)
            lines.append(
                f"    c{axis} = ((c{axis} % {period}) + {period}) % {period};\n"
                f"    if (c{axis} >= {extent}) {{ c{axis} = {period} - c{axis}; }}"
            )
        else:
            lines.append(f"    c{axis} = 0;")
        lines.append(f"    if (!outside) {{ at += u32(c{axis}) * {source_strides[axis]}u; }}")
    compute = "f32" if kind == "f16" else kind
    constant = store(literal(fill, compute), output.dtype)
    lines.append(f"    if (outside) {{ y[i] = {constant}; }} else {{ y[i] = x[at]; }}")
    if output.size == 0:
        return Lowering()
    if source.size == 0 and mode != "constant":
        raise Unsupported(f"Pad mode {mode} of an empty tensor")
    shader = (
        enable_f16(output.dtype)
        + storage(0, "x", source.dtype)
        + "\n"
        + storage(1, "y", output.dtype, write=True)
        + "\n"
        + flat_main(output.size, "\n".join(lines))
    )
    return Lowering(flat_dispatch(shader, output.size, [0]))


@kernel("Size")
def size(context: NodeContext) -> Lowering:
    require_dtypes(context, ANY_DTYPE)
    source = context.inputs[0]
    assert source is not None
    shader = _constant_fill(context.outputs[0].dtype, [float(source.size)], 0.0, 1)
    return Lowering((Dispatch(shader, (Binding("output", 0),), (1, 1, 1)),))


@kernel("DepthToSpace")
@kernel("SpaceToDepth")
def depth_space(context: NodeContext) -> Lowering:
    """Moves blocks of ``blocksize`` x ``blocksize`` between channels and space (NCHW)."""
    require_dtypes(context, ANY_DTYPE)
    source = context.inputs[0]
    output = context.outputs[0]
    assert source is not None
    if len(source.shape) != 4:
        raise Unsupported(f"{context.op_type} of a rank-{len(source.shape)} input")
    block = int(context.attribute("blocksize"))
    _, channels, height, width = source.shape
    _, out_channels, out_height, out_width = output.shape
    prefix = f"""    let n = i / {out_channels * out_height * out_width}u;
    let c = (i / {out_height * out_width}u) % {out_channels}u;
    let h = (i / {out_width}u) % {out_height}u;
    let w = i % {out_width}u;"""
    if context.op_type == "DepthToSpace":
        bh, bw = f"(h % {block}u)", f"(w % {block}u)"
        if context.attribute("mode", "DCR") == "CRD":
            channel = f"c * {block * block}u + {bh} * {block}u + {bw}"
        else:
            channel = f"({bh} * {block}u + {bw}) * {out_channels}u + c"
        at = f"((n * {channels}u + {channel}) * {height}u + h / {block}u) * {width}u + w / {block}u"
    else:
        if context.attribute("mode", "DCR") == "CRD":  # output channel = c * b * b + cell
            cell, source_channel = f"c % {block * block}u", f"c / {block * block}u"
        else:  # output channel = cell * channels + c
            cell, source_channel = f"c / {channels}u", f"c % {channels}u"
        body = f"""
    let cell = {cell};
    let ih = h * {block}u + cell / {block}u;
    let iw = w * {block}u + cell % {block}u;"""
        prefix += body
        at = f"((n * {channels}u + {source_channel}) * {height}u + ih) * {width}u + iw"
    shader = (
        enable_f16(source.dtype)
        + storage(0, "x", source.dtype)
        + "\n"
        + storage(1, "y", output.dtype, write=True)
        + "\n"
        + flat_main(output.size, f"{prefix}\n    y[i] = x[{at}];")
    )
    return Lowering(flat_dispatch(shader, output.size, [0]))


@kernel("Trilu")
def trilu(context: NodeContext) -> Lowering:
    """The upper (or lower) triangle of the last two axes from diagonal ``k``; zeros elsewhere."""
    require_dtypes(context, ANY_DTYPE)
    source = context.inputs[0]
    output = context.outputs[0]
    assert source is not None
    if len(source.shape) < 2:
        raise Unsupported("Trilu of a rank below 2")
    k_info = context.inputs[1] if len(context.inputs) > 1 else None
    inputs = [0]
    declarations = [storage(0, "x", source.dtype)]
    if k_info is None:
        offset = "0"
    elif 1 in context.constants:
        offset = str(int(np.asarray(context.constants[1]).reshape(-1)[0]))
    else:  # known only at run time: read from the device
        if k_info.dtype not in INTEGERS:
            raise Unsupported(f"Trilu with a {k_info.dtype} k")
        declarations.append(storage(1, "k", k_info.dtype))
        inputs.append(1)
        offset = "k[0]"
    declarations.append(storage(len(declarations), "y", output.dtype, write=True))
    rows, columns = source.shape[-2:]
    test = ">=" if context.attribute("upper", 1) else "<="
    kind = DEVICE_DTYPES[np.dtype(output.dtype)]
    zero = {"f32": "0.0", "f16": "f16(0.0)", "i32": "0", "u32": "0u"}[kind]
    body = f"""    let row = i32((i / {columns}u) % {rows}u);
    let column = i32(i % {columns}u);
    y[i] = select({zero}, x[i], column - row {test} {offset});"""
    if output.size == 0:
        return Lowering()
    shader = (
        enable_f16(source.dtype) + "\n".join(declarations) + "\n" + flat_main(output.size, body)
    )
    return Lowering(flat_dispatch(shader, output.size, inputs))


@kernel("CumSum")
def cumulative_sum(context: NodeContext) -> Lowering:
    """Running sums along ``axis`` (exclusive and reversed as asked); each output sums its
    prefix, which suits the short axes of the models GPUX runs (lengths, positions)."""
    source = context.inputs[0]
    output = context.outputs[0]
    assert source is not None
    if source.dtype not in (np.dtype(np.float32), *INTEGERS):
        raise Unsupported(f"CumSum on {source.dtype}")
    axes = constant_ints(context, 1, "axis")
    if not axes:
        raise Unsupported("CumSum without an axis")
    axis = normalize_axis(axes[0], len(source.shape))
    extent = source.shape[axis]
    inner = int(np.prod(source.shape[axis + 1 :], dtype=np.int64))
    exclusive = bool(context.attribute("exclusive", 0))
    reverse = bool(context.attribute("reverse", 0))
    kind = DEVICE_DTYPES[np.dtype(output.dtype)]
    if reverse:
        first, last = ("position + 1u" if exclusive else "position"), f"{extent}u"
    else:
        first, last = "0u", ("position" if exclusive else "position + 1u")
    body = f"""    let position = (i / {inner}u) % {extent}u;
    let base = i - position * {inner}u;
    var total = {"0.0" if kind == "f32" else "0"};
    for (var r = {first}; r < {last}; r++) {{ total += x[base + r * {inner}u]; }}
    y[i] = total;"""
    if output.size == 0:
        return Lowering()
    shader = (
        storage(0, "x", source.dtype)
        + "\n"
        + storage(1, "y", output.dtype, write=True)
        + "\n"
        + flat_main(output.size, body)
    )
    return Lowering(flat_dispatch(shader, output.size, [0]))


@kernel("EyeLike")
def eye_like(context: NodeContext) -> Lowering:
    """Ones on diagonal ``k`` of a 2-D tensor shaped like the input, zeros elsewhere."""
    require_dtypes(context, ANY_DTYPE)
    output = context.outputs[0]
    if len(output.shape) != 2:
        raise Unsupported("EyeLike of a rank other than 2")
    if output.size == 0:
        return Lowering()
    kind = DEVICE_DTYPES[np.dtype(output.dtype)]
    compute = "f32" if kind == "f16" else kind
    one, zero = (store(literal(v, compute), output.dtype) for v in (1.0, 0.0))
    offset = int(context.attribute("k", 0))
    columns = output.shape[1]
    body = (
        f"    y[i] = select({zero}, {one}, i32(i % {columns}u) - i32(i / {columns}u) == {offset});"
    )
    shader = storage(0, "y", output.dtype, write=True) + "\n" + flat_main(output.size, body)
    return Lowering(
        (
            Dispatch(
                enable_f16(output.dtype) + shader,
                (Binding("output", 0),),
                workgroups_for(output.size, WORKGROUP),
            ),
        )
    )


@kernel("OneHot")
def one_hot(context: NodeContext) -> Lowering:
    """``values[1]`` where the coordinate along ``axis`` equals the index, ``values[0]``
    elsewhere; the depth is the output's extent along ``axis``."""
    require_dtypes(context, ANY_DTYPE)
    indices, _, values = context.inputs
    output = context.outputs[0]
    assert indices is not None and values is not None
    if indices.dtype not in INTEGERS and compute_type(indices.dtype) != "f32":
        raise Unsupported(f"OneHot with {indices.dtype} indices")
    axis = normalize_axis(int(context.attribute("axis", -1)), len(output.shape))
    depth = output.shape[axis]
    inner = int(np.prod(output.shape[axis + 1 :], dtype=np.int64))
    index = "indices[source]" if indices.dtype in INTEGERS else "i32(indices[source])"
    body = f"""    let position = i32((i / {inner}u) % {depth}u);
    let source = (i / {depth * inner}u) * {inner}u + i % {inner}u;
    var index = {index};
    if (index < 0) {{ index += {depth}; }}
    y[i] = select(values[0], values[1], index == position);"""
    if output.size == 0:
        return Lowering()
    shader = (
        enable_f16(indices.dtype, values.dtype)
        + storage(0, "indices", indices.dtype)
        + "\n"
        + storage(1, "values", values.dtype)
        + "\n"
        + storage(2, "y", output.dtype, write=True)
        + "\n"
        + flat_main(output.size, body)
    )
    return Lowering(flat_dispatch(shader, output.size, [0, 2]))
