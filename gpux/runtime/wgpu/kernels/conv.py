"""Conv (1-D and 2-D, groups, pads, strides, dilations, bias) as an implicit GEMM on the tiled
template of ``gemm.py``: per image and group, ``Y[co, pixel] = sum_k W[co, k] * X_window[k,
pixel]`` with ``k`` running over input channel and kernel position. Windows are gathered while
staging tiles, so no im2col buffer is written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gpux.runtime.wgpu.kernel import Binding, Lowering, NodeContext, Unsupported, kernel
from gpux.runtime.wgpu.kernels._wgsl import (
    FLOATS,
    enable_f16,
    flat_dispatch,
    flat_main,
    load,
    math_helpers,
    require_dtypes,
    storage,
    store,
)
from gpux.runtime.wgpu.kernels.epilogue import Epilogue, epilogue_code, input_dtypes
from gpux.runtime.wgpu.kernels.gemm import Gemm, gemm_lowering


@dataclass(frozen=True)
class Window:
    """A 2-D sliding window (1-D ops use a height of 1): kernel, strides, dilations and the
    padding before each spatial axis."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads_begin: tuple[int, int]
    pads_end: tuple[int, int]


def as_2d(values: list[int], fill: int) -> tuple[int, int]:
    return (fill, values[0]) if len(values) == 1 else (values[0], values[1])


def sliding_window(
    context: NodeContext,
    spatial_in: tuple[int, ...],
    spatial_out: tuple[int, ...],
    kernel_shape: list[int],
) -> Window:
    """The window of a Conv or pooling node over 1 or 2 spatial axes, with ``auto_pad``
    resolved to explicit pads."""
    rank = len(spatial_in)
    if rank not in (1, 2):
        raise Unsupported(f"{context.op_type} over {rank} spatial axes (only 1 or 2)")
    strides = list(context.attribute("strides", None) or [1] * rank)
    dilations = list(context.attribute("dilations", None) or [1] * rank)
    pads = list(context.attribute("pads", None) or [0] * (2 * rank))
    auto_pad = context.attribute("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        pads = [0] * (2 * rank)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * rank)
        for axis in range(rank):
            extent = (kernel_shape[axis] - 1) * dilations[axis] + 1
            total = max(0, (spatial_out[axis] - 1) * strides[axis] + extent - spatial_in[axis])
            small, large = total // 2, total - total // 2
            pads[axis], pads[axis + rank] = (
                (small, large) if auto_pad == "SAME_UPPER" else (large, small)
            )
    elif auto_pad != "NOTSET":
        raise Unsupported(f"auto_pad {auto_pad}")
    return Window(
        kernel=as_2d(kernel_shape, 1),
        strides=as_2d(strides, 1),
        dilations=as_2d(dilations, 1),
        pads_begin=as_2d(pads[:rank], 0),
        pads_end=as_2d(pads[rank:], 0),
    )


@kernel("Conv")
def conv(context: NodeContext) -> Lowering:
    return lower_conv(context)


def lower_conv(
    context: NodeContext,
    activation: str = "v",
    add_input: int | None = None,
    epilogue: Epilogue | None = None,
) -> Lowering:
    """Conv, then ``+ inputs[add_input]`` (a residual of the output's shape) and
    ``activation`` (WGSL of the f32 value ``v``): what com.microsoft.FusedConv adds; then
    ``epilogue`` on each value."""
    require_dtypes(context, FLOATS)
    if epilogue is not None and activation != "v":
        raise Unsupported("an epilogue after a fused activation")
    x_info, w_info = context.inputs[:2]
    bias_info = context.inputs[2] if len(context.inputs) > 2 else None
    output = context.outputs[0]
    assert x_info is not None and w_info is not None
    if len(x_info.shape) not in (3, 4):
        raise Unsupported(f"Conv of a rank-{len(x_info.shape)} input (only 1-D and 2-D)")
    groups = int(context.attribute("group", 1))
    kernel_shape = list(context.attribute("kernel_shape", None) or w_info.shape[2:])
    window = sliding_window(context, x_info.shape[2:], output.shape[2:], kernel_shape)
    batch, channels = x_info.shape[:2]
    height, width = as_2d(list(x_info.shape[2:]), 1)
    out_channels = w_info.shape[0]
    out_height, out_width = as_2d(list(output.shape[2:]), 1)
    if channels % groups or out_channels % groups or w_info.shape[1] != channels // groups:
        raise Unsupported(f"Conv with group {groups} of {x_info.shape} and {w_info.shape}")
    if output.size == 0:
        return Lowering()
    group_in, group_out = channels // groups, out_channels // groups
    kernel_h, kernel_w = window.kernel
    pixels = out_height * out_width
    reduction = group_in * kernel_h * kernel_w
    declarations = [storage(0, "x", x_info.dtype), storage(1, "w", w_info.dtype)]
    bindings = [Binding("input", 0), Binding("input", 1)]
    value = "value"
    if bias_info is not None:
        declarations.append(storage(2, "bias", bias_info.dtype))
        bindings.append(Binding("input", 2))
        value = f"value + {load('bias', 'co', bias_info.dtype)}"
    if add_input is not None and add_input < len(context.inputs):
        addend = context.inputs[add_input]
        if addend is not None:
            if addend.shape != output.shape:
                raise Unsupported("FusedConv with a broadcast sum")
            declarations.append(storage(len(declarations), "addend", addend.dtype))
            bindings.append(Binding("input", add_input))
            value += f" + {load('addend', 'at', addend.dtype)}"
    declarations.append(storage(len(declarations), "y", output.dtype, write=True))
    bindings.append(Binding("output", 0))
    after = epilogue_code(epilogue, first_binding=len(bindings))
    bindings.extend(after.bindings)
    dtypes = [x_info.dtype, w_info.dtype, output.dtype, *input_dtypes(epilogue)]
    problem = Gemm(
        batch=batch * groups,
        m=group_out,
        n=pixels,
        k=reduction,
        declarations=enable_f16(*dtypes) + "\n".join(declarations) + "\n" + after.declarations,
        functions=f"""
fn load_a(batch: u32, m: u32, k: u32) -> f32 {{
    let co = (batch % {groups}u) * {group_out}u + m;
    return {load("w", f"co * {reduction}u + k", w_info.dtype)};
}}
{load_b(window, x_info.dtype, groups, group_in, channels, (height, width), out_width)}
fn store_c(batch: u32, m: u32, n: u32, value: f32) {{
    let co = (batch % {groups}u) * {group_out}u + m;
    let image = batch / {groups}u;
    let at = (image * {out_channels}u + co) * {pixels}u + n;
    let v = {value};
{after.apply}    y[{after.store_at}] = {store(activation if epilogue is None else after.result, output.dtype)};
}}
{math_helpers(activation)}{after.functions}""",
    )
    return gemm_lowering(problem, tuple(bindings))


def load_b(
    window: Window,
    dtype: np.dtype[Any],
    groups: int,
    group_in: int,
    channels: int,
    size: tuple[int, int],
    out_width: int,
) -> str:
    """WGSL reading B of the implicit GEMM: input channel and kernel position ``k`` of output
    pixel ``n``. A 1x1 window without padding (most of ResNet-50's convolutions) reads a plain
    matrix, each pixel's input pixel (strided), with no bounds check: the kernel-position and
    padding arithmetic of the general gather (4 divisions and 4 comparisons) is left out."""
    height, width = size
    (kernel_h, kernel_w), (stride_h, stride_w) = window.kernel, window.strides
    (dilation_h, dilation_w), (pad_top, pad_left) = window.dilations, window.pads_begin
    image = f"batch / {groups}u"
    if window.kernel == (1, 1) and window.pads_begin == (0, 0):
        if window.strides == (1, 1):
            pixel = "n"
        else:
            pixel = f"n / {out_width}u * {stride_h * width}u + n % {out_width}u * {stride_w}u"
        at = f"(({image}) * {channels}u + c) * {height * width}u + {pixel}"
        return f"""fn load_b(batch: u32, k: u32, n: u32) -> f32 {{
    let c = (batch % {groups}u) * {group_in}u + k;
    return {load("x", at, dtype)};
}}"""
    return f"""fn load_b(batch: u32, k: u32, n: u32) -> f32 {{
    let c = (batch % {groups}u) * {group_in}u + k / {kernel_h * kernel_w}u;
    let kh = i32((k / {kernel_w}u) % {kernel_h}u);
    let kw = i32(k % {kernel_w}u);
    let ih = i32(n / {out_width}u) * {stride_h} - {pad_top} + kh * {dilation_h};
    let iw = i32(n % {out_width}u) * {stride_w} - {pad_left} + kw * {dilation_w};
    if (ih < 0 || ih >= {height} || iw < 0 || iw >= {width}) {{ return 0.0; }}
    let image = {image};
    return {load("x", f"((image * {channels}u + c) * {height}u + u32(ih)) * {width}u + u32(iw)", dtype)};
}}"""


@kernel("ConvTranspose")
def conv_transpose(context: NodeContext) -> Lowering:
    """ConvTranspose (1-D and 2-D) gathered per output: each output sums the inputs whose
    strided window covers it, so no two invocations write the same value."""
    require_dtypes(context, FLOATS)
    x_info, w_info = context.inputs[:2]
    bias_info = context.inputs[2] if len(context.inputs) > 2 else None
    output = context.outputs[0]
    assert x_info is not None and w_info is not None
    rank = len(x_info.shape) - 2
    if rank not in (1, 2):
        raise Unsupported(f"ConvTranspose over {rank} spatial axes (only 1 or 2)")
    groups = int(context.attribute("group", 1))
    kernel_shape = list(context.attribute("kernel_shape", None) or w_info.shape[2:])
    strides = list(context.attribute("strides", None) or [1] * rank)
    dilations = list(context.attribute("dilations", None) or [1] * rank)
    output_padding = list(context.attribute("output_padding", None) or [0] * rank)
    auto_pad = context.attribute("auto_pad", "NOTSET")
    pads = list(context.attribute("pads", None) or [0] * (2 * rank))
    if context.attribute("output_shape", None) is not None or auto_pad in (
        "SAME_UPPER",
        "SAME_LOWER",
    ):
        # The output's size is given: the padding is what makes the arithmetic meet it.
        for axis in range(rank):
            full = (
                strides[axis] * (x_info.shape[2 + axis] - 1)
                + output_padding[axis]
                + (kernel_shape[axis] - 1) * dilations[axis]
                + 1
            )
            total = full - output.shape[2 + axis]
            # As ONNX's reference: SAME_UPPER pads less before, the others more.
            first = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            pads[axis], pads[axis + rank] = first, total - first
    elif auto_pad == "VALID":
        pads = [0] * (2 * rank)
    elif auto_pad != "NOTSET":
        raise Unsupported(f"auto_pad {auto_pad}")
    channels = x_info.shape[1]
    height, width = as_2d(list(x_info.shape[2:]), 1)
    out_channels = output.shape[1]
    out_height, out_width = as_2d(list(output.shape[2:]), 1)
    kernel_h, kernel_w = as_2d(kernel_shape, 1)
    stride_h, stride_w = as_2d(strides, 1)
    dilation_h, dilation_w = as_2d(dilations, 1)
    pad_top, pad_left = as_2d(pads[:rank], 0)
    group_in, group_out = channels // groups, out_channels // groups
    if w_info.shape[0] != channels or w_info.shape[1] != group_out:
        raise Unsupported(f"ConvTranspose of {x_info.shape} with weights {w_info.shape}")
    if output.size == 0:
        return Lowering()
    declarations = [storage(0, "x", x_info.dtype), storage(1, "w", w_info.dtype)]
    inputs = [0, 1]
    start = "0.0"
    if bias_info is not None:
        declarations.append(storage(2, "bias", bias_info.dtype))
        inputs.append(2)
        start = load("bias", "co", bias_info.dtype)
    declarations.append(storage(len(declarations), "y", output.dtype, write=True))
    body = f"""    let image = i / {out_channels * out_height * out_width}u;
    let co = (i / {out_height * out_width}u) % {out_channels}u;
    let oh = i32((i / {out_width}u) % {out_height}u);
    let ow = i32(i % {out_width}u);
    let group = co / {group_out}u;
    let cw = co % {group_out}u;
    var total = {start};
    for (var kh = 0; kh < {kernel_h}; kh++) {{
        let th = oh + {pad_top} - kh * {dilation_h};
        if (th < 0 || th % {stride_h} != 0 || th / {stride_h} >= {height}) {{ continue; }}
        let ih = u32(th / {stride_h});
        for (var kw = 0; kw < {kernel_w}; kw++) {{
            let tw = ow + {pad_left} - kw * {dilation_w};
            if (tw < 0 || tw % {stride_w} != 0 || tw / {stride_w} >= {width}) {{ continue; }}
            let iw = u32(tw / {stride_w});
            for (var c = 0u; c < {group_in}u; c++) {{
                let ci = group * {group_in}u + c;
                let xv = {load("x", f"((image * {channels}u + ci) * {height}u + ih) * {width}u + iw", x_info.dtype)};
                let wv = {load("w", f"((ci * {group_out}u + cw) * {kernel_h}u + u32(kh)) * {kernel_w}u + u32(kw)", w_info.dtype)};
                total = fma(xv, wv, total);
            }}
        }}
    }}
    y[i] = {store("total", output.dtype)};"""
    shader = (
        enable_f16(x_info.dtype, w_info.dtype, output.dtype)
        + "\n".join(declarations)
        + "\n"
        + flat_main(output.size, body)
    )
    return Lowering(flat_dispatch(shader, output.size, inputs))
