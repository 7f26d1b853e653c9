"""Pooling: MaxPool and AveragePool over 1 or 2 spatial axes, GlobalAveragePool and
GlobalMaxPool. One invocation per output element, looping over its window (ResNet's windows
are 3x3 and 7x7: a loop is as fast as staging them in workgroup memory)."""

from __future__ import annotations

from gpux.runtime.wgpu.kernel import Lowering, NodeContext, Unsupported, kernel
from gpux.runtime.wgpu.kernels._wgsl import (
    FLOATS,
    enable_f16,
    flat_dispatch,
    flat_main,
    literal,
    load,
    require_dtypes,
    storage,
    store,
)
from gpux.runtime.wgpu.kernels.conv import as_2d, sliding_window


@kernel("MaxPool")
@kernel("AveragePool")
def pool(context: NodeContext) -> Lowering:
    require_dtypes(context, FLOATS)
    if len(context.outputs) > 1:
        raise Unsupported("MaxPool's Indices output")
    x_info = context.inputs[0]
    output = context.outputs[0]
    assert x_info is not None
    if len(x_info.shape) not in (3, 4):
        raise Unsupported(f"{context.op_type} of a rank-{len(x_info.shape)} input")
    is_max = context.op_type == "MaxPool"
    if not is_max and context.opset < 19 and context.attribute("dilations", None):
        raise Unsupported("AveragePool dilations before opset 19")
    window = sliding_window(
        context, x_info.shape[2:], output.shape[2:], list(context.attribute("kernel_shape"))
    )
    height, width = as_2d(list(x_info.shape[2:]), 1)
    out_height, out_width = as_2d(list(output.shape[2:]), 1)
    (kernel_h, kernel_w), (stride_h, stride_w) = window.kernel, window.strides
    (dilation_h, dilation_w), (pad_top, pad_left) = window.dilations, window.pads_begin
    pad_bottom, pad_right = window.pads_end
    if is_max:
        start, combine, finish = literal(float("-inf")), "result = max(result, value);", "result"
    elif context.attribute("count_include_pad", 0):
        # Positions in the padded input count, positions past it (ceil_mode) do not.
        start, combine = "0.0", "result += value;"
        finish = "result / f32(padded_count)"
    else:
        start, combine, finish = "0.0", "result += value;", "result / f32(count)"
    body = f"""    let plane = i / {out_height * out_width}u;
    let oh = i32((i / {out_width}u) % {out_height}u);
    let ow = i32(i % {out_width}u);
    var result = {start};
    var count = 0u;
    var padded_count = 0u;
    for (var kh = 0; kh < {kernel_h}; kh++) {{
        let ih = oh * {stride_h} - {pad_top} + kh * {dilation_h};
        for (var kw = 0; kw < {kernel_w}; kw++) {{
            let iw = ow * {stride_w} - {pad_left} + kw * {dilation_w};
            if (ih < {height + pad_bottom} && iw < {width + pad_right}) {{ padded_count++; }}
            if (ih < 0 || ih >= {height} || iw < 0 || iw >= {width}) {{ continue; }}
            let value = {load("x", f"(plane * {height}u + u32(ih)) * {width}u + u32(iw)", x_info.dtype)};
            {combine}
            count++;
        }}
    }}
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


@kernel("GlobalAveragePool")
@kernel("GlobalMaxPool")
def global_pool(context: NodeContext) -> Lowering:
    require_dtypes(context, FLOATS)
    x_info = context.inputs[0]
    output = context.outputs[0]
    assert x_info is not None
    if len(x_info.shape) < 3:
        raise Unsupported(f"{context.op_type} of a rank-{len(x_info.shape)} input")
    spatial = x_info.size // max(1, output.size)
    if context.op_type == "GlobalMaxPool":
        start, combine, finish = literal(float("-inf")), "max(result, value)", "result"
    else:
        start, combine, finish = "0.0", "result + value", f"result / {literal(float(spatial))}"
    body = f"""    var result = {start};
    for (var s = 0u; s < {spatial}u; s++) {{
        let value = {load("x", f"i * {spatial}u + s", x_info.dtype)};
        result = {combine};
    }}
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
