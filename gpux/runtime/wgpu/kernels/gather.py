"""Indexed reads and writes: Gather, GatherElements, GatherND and ScatterND. Indices live on
the device as i32 (negative ones count from the end); data moves as raw elements, so every
device dtype is served without conversion."""

from __future__ import annotations

import numpy as np

from gpux.runtime.wgpu.kernel import Lowering, NodeContext, TensorInfo, Unsupported, kernel
from gpux.runtime.wgpu.kernels._wgsl import (
    INTEGERS,
    coordinate,
    enable_f16,
    flat_dispatch,
    flat_main,
    load,
    normalize_axis,
    require_dtypes,
    storage,
    store,
    strides,
)
from gpux.runtime.wgpu.kernels.shape import ANY_DTYPE


@kernel("Gather")
def gather(context: NodeContext) -> Lowering:
    data, indices = context.inputs
    output = context.outputs[0]
    assert data is not None and indices is not None
    require_dtypes(context, ANY_DTYPE)
    if indices.dtype not in INTEGERS:
        raise Unsupported(f"Gather with {indices.dtype} indices")
    axis = normalize_axis(int(context.attribute("axis", 0)), len(data.shape))
    extent = data.shape[axis]
    inner = int(np.prod(data.shape[axis + 1 :], dtype=np.int64))
    count = max(1, indices.size)
    body = f"""    let outer = i / {count * inner}u;
    var index = indices[(i / {inner}u) % {count}u];
    if (index < 0) {{ index += {extent}; }}
    y[i] = x[(outer * {extent}u + u32(index)) * {inner}u + i % {inner}u];"""
    shader = (
        enable_f16(data.dtype)
        + storage(0, "x", data.dtype)
        + "\n"
        + storage(1, "indices", indices.dtype)
        + "\n"
        + storage(2, "y", output.dtype, write=True)
        + "\n"
        + flat_main(output.size, body)
    )
    return Lowering(flat_dispatch(shader, output.size, [0, 1]))


def _index_input(context: NodeContext, index: int) -> TensorInfo:
    info = context.inputs[index]
    assert info is not None
    if info.dtype not in INTEGERS:
        raise Unsupported(f"{context.op_type} with {info.dtype} indices")
    return info


def _gather_shader(context: NodeContext, body: str) -> Lowering:
    data = context.inputs[0]
    indices = context.inputs[1]
    output = context.outputs[0]
    assert data is not None and indices is not None
    shader = (
        enable_f16(data.dtype)
        + storage(0, "x", data.dtype)
        + "\n"
        + storage(1, "indices", indices.dtype)
        + "\n"
        + storage(2, "y", output.dtype, write=True)
        + "\n"
        + flat_main(output.size, body)
    )
    return Lowering(flat_dispatch(shader, output.size, [0, 1]))


@kernel("GatherElements")
def gather_elements(context: NodeContext) -> Lowering:
    require_dtypes(context, ANY_DTYPE)
    data = context.inputs[0]
    indices = _index_input(context, 1)
    assert data is not None
    rank = len(data.shape)
    axis = normalize_axis(int(context.attribute("axis", 0)), rank)
    data_strides = strides(data.shape)
    terms = [
        f"{coordinate('i', d, indices.shape)} * {data_strides[d]}u"
        for d in range(rank)
        if d != axis and indices.shape[d] != 1
    ]
    body = f"""    var index = indices[i];
    if (index < 0) {{ index += {data.shape[axis]}; }}
    y[i] = x[{" + ".join([*terms, f"u32(index) * {data_strides[axis]}u"])}];"""
    return _gather_shader(context, body)


@kernel("GatherND")
def gather_nd(context: NodeContext) -> Lowering:
    require_dtypes(context, ANY_DTYPE)
    data = context.inputs[0]
    indices = _index_input(context, 1)
    assert data is not None
    batch_dims = int(context.attribute("batch_dims", 0))
    depth = indices.shape[-1]
    if batch_dims + depth > len(data.shape):
        raise Unsupported("GatherND indexing past the data's rank")
    slice_size = int(np.prod(data.shape[batch_dims + depth :], dtype=np.int64))
    per_batch = int(np.prod(indices.shape[batch_dims:-1], dtype=np.int64))
    batch_size = int(np.prod(data.shape[batch_dims:], dtype=np.int64))
    data_strides = strides(data.shape)
    lines = [
        f"    let tuple_at = (i / {slice_size}u) * {depth}u;",
        f"    var at = (i / {slice_size * per_batch}u) * {batch_size}u + i % {slice_size}u;",
    ]
    for j in range(depth):
        extent = data.shape[batch_dims + j]
        lines.append(
            f"    var index{j} = indices[tuple_at + {j}u];\n"
            f"    if (index{j} < 0) {{ index{j} += {extent}; }}\n"
            f"    at += u32(index{j}) * {data_strides[batch_dims + j]}u;"
        )
    lines.append("    y[i] = x[at];")
    return _gather_shader(context, "\n".join(lines))


@kernel("ScatterND")
def scatter_nd(context: NodeContext) -> Lowering:
    """A copy of ``data`` with slices replaced by ``updates``: one dispatch copies, a second
    writes the updates. A reduction (add, mul, max, min) is taken only where the indices,
    known at load, are unique: repeated ones would need atomics."""
    require_dtypes(context, ANY_DTYPE)
    data, _, updates = context.inputs
    indices = _index_input(context, 1)
    output = context.outputs[0]
    assert data is not None and updates is not None
    reduction = context.attribute("reduction", "none")
    combine = {
        "none": "{u}",
        "add": "{y} + {u}",
        "mul": "{y} * {u}",
        "max": "max({y}, {u})",
        "min": "min({y}, {u})",
    }.get(reduction)
    if combine is None:
        raise Unsupported(f"ScatterND with reduction {reduction}")
    if reduction != "none":
        known = context.constants.get(1)
        rows = None if known is None else np.asarray(known).reshape(-1, indices.shape[-1])
        if rows is None or len(np.unique(rows, axis=0)) != len(rows):
            raise Unsupported("ScatterND reduction over indices not known unique at load")
    depth = indices.shape[-1]
    slice_size = int(np.prod(data.shape[depth:], dtype=np.int64))
    data_strides = strides(data.shape)
    copy = (
        enable_f16(data.dtype)
        + storage(0, "x", data.dtype)
        + "\n"
        + storage(1, "y", output.dtype, write=True)
        + "\n"
        + flat_main(output.size, "    y[i] = x[i];")
    )
    lines = [
        f"    let tuple_at = (i / {slice_size}u) * {depth}u;",
        f"    var at = i % {slice_size}u;",
    ]
    for j in range(depth):
        lines.append(
            f"    var index{j} = indices[tuple_at + {j}u];\n"
            f"    if (index{j} < 0) {{ index{j} += {data.shape[j]}; }}\n"
            f"    at += u32(index{j}) * {data_strides[j]}u;"
        )
    merged = combine.format(y=load("y", "at", output.dtype), u=load("updates", "i", updates.dtype))
    lines.append(
        f"    y[at] = {store(merged, output.dtype) if reduction != 'none' else 'updates[i]'};"
    )
    scatter = (
        enable_f16(data.dtype)
        + storage(0, "indices", indices.dtype)
        + "\n"
        + storage(1, "updates", updates.dtype)
        + "\n"
        + storage(2, "y", output.dtype, write=True)
        + "\n"
        + flat_main(updates.size, "\n".join(lines))
    )
    return Lowering(
        flat_dispatch(copy, output.size, [0]) + flat_dispatch(scatter, updates.size, [1, 2])
    )
