"""Resize (opset 11+): nearest and linear interpolation over any axes, with every coordinate
transformation but tf_crop_and_resize. One invocation per output element; linear reads the
2^k corners around its source point (k resized axes: 4 for an image)."""

from __future__ import annotations

import numpy as np

from gpux.runtime.wgpu.kernel import DEVICE_DTYPES, Lowering, NodeContext, Unsupported, kernel
from gpux.runtime.wgpu.kernels._wgsl import (
    FLOATS,
    coordinate,
    enable_f16,
    flat_dispatch,
    flat_main,
    literal,
    load,
    require_dtypes,
    storage,
    store,
    strides,
)

# The source coordinate of output coordinate ``x`` (f32) on an axis: scale ``s``, input
# length ``L``, output length ``O``.
TRANSFORMS = {
    "half_pixel": "({x} + 0.5) / {s} - 0.5",
    "pytorch_half_pixel": "select(0.0, ({x} + 0.5) / {s} - 0.5, {F} > 1.0)",
    "align_corners": "select({x} * ({L} - 1.0) / ({F} - 1.0), 0.0, {F} == 1.0)",
    "asymmetric": "{x} / {s}",
    "tf_half_pixel_for_nearest": "({x} + 0.5) / {s}",
    "half_pixel_symmetric": ("{L} / 2.0 * (1.0 - {O} / ({s} * {L})) + ({x} + 0.5) / {s} - 0.5"),
}
ROUNDING = {
    "round_prefer_floor": "ceil({x} - 0.5)",
    "round_prefer_ceil": "floor({x} + 0.5)",
    "floor": "floor({x})",
    "ceil": "ceil({x})",
}


def _scales(
    context: NodeContext, shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> list[float]:
    """The scale of every axis: the ``scales`` input, or what ``sizes`` and the aspect ratio
    policy make of it."""
    rank = len(shape)
    axes = [a + rank if a < 0 else a for a in context.attribute("axes", None) or range(rank)]
    scales_info = context.inputs[2] if len(context.inputs) > 2 else None
    if scales_info is not None and scales_info.size:
        given = context.constants.get(2)
        if given is None:
            raise Unsupported("Resize needs its scales known at load")
        result = [1.0] * rank
        for axis, value in zip(axes, np.asarray(given, dtype=np.float64).reshape(-1), strict=True):
            result[axis] = float(value)
        return result
    policy = context.attribute("keep_aspect_ratio_policy", "stretch")
    sizes = context.constants.get(3) if len(context.inputs) > 3 else None
    if sizes is not None:
        requested = dict(zip(axes, (int(v) for v in np.asarray(sizes).reshape(-1)), strict=True))
    elif policy == "stretch":
        requested = {axis: out_shape[axis] for axis in axes}
    else:
        raise Unsupported("Resize needs its sizes known at load")
    ratios = [requested[axis] / shape[axis] if shape[axis] else 1.0 for axis in axes]
    if policy == "stretch":
        uniform = None
    elif policy == "not_larger":
        uniform = min(ratios)
    elif policy == "not_smaller":
        uniform = max(ratios)
    else:
        raise Unsupported(f"keep_aspect_ratio_policy {policy}")
    result = [1.0] * rank
    for axis, ratio in zip(axes, ratios, strict=True):
        result[axis] = ratio if uniform is None else uniform
    return result


@kernel("Resize")
def resize(context: NodeContext) -> Lowering:
    require_dtypes(context, (*FLOATS, *(d for d in DEVICE_DTYPES if d not in FLOATS)))
    x_info = context.inputs[0]
    output = context.outputs[0]
    assert x_info is not None
    if context.opset < 11:
        raise Unsupported("Resize before opset 11")
    mode = context.attribute("mode", "nearest")
    transform = context.attribute("coordinate_transformation_mode", "half_pixel")
    if mode not in ("nearest", "linear"):
        raise Unsupported(f"Resize mode {mode}")
    if transform not in TRANSFORMS:
        raise Unsupported(f"coordinate_transformation_mode {transform}")
    shrinks = any(o < i for o, i in zip(output.shape, x_info.shape, strict=True))
    if context.attribute("antialias", 0) and mode == "linear" and shrinks:
        raise Unsupported("antialiased downsampling")
    if mode == "linear" and x_info.dtype not in FLOATS:
        raise Unsupported(f"linear Resize of {x_info.dtype}")
    rounding = ROUNDING.get(context.attribute("nearest_mode", "round_prefer_floor"))
    if rounding is None:
        raise Unsupported(f"nearest_mode {context.attribute('nearest_mode')}")
    shape, out_shape = x_info.shape, output.shape
    scales = _scales(context, shape, out_shape)
    source_strides = strides(shape)
    lines: list[str] = []
    fixed: list[str] = []  # index terms of axes that are not resized
    corners: list[tuple[str, str, str]] = []  # (low index, high index, weight) per linear axis
    for axis in range(len(shape)):
        out_coordinate = coordinate("i", axis, out_shape)
        stride = source_strides[axis]
        if shape[axis] == out_shape[axis] and scales[axis] == 1.0:
            fixed.append(f"{out_coordinate} * {stride}u")
            continue
        source = TRANSFORMS[transform].format(
            x=f"f32({out_coordinate})",
            s=literal(scales[axis]),
            L=literal(float(shape[axis])),
            O=literal(float(out_shape[axis])),
            F=literal(scales[axis] * shape[axis]),
        )
        last = shape[axis] - 1
        lines.append(f"    let x{axis} = {source};")
        if mode == "nearest":
            nearest = rounding.format(x=f"x{axis}")
            fixed.append(f"u32(clamp(i32({nearest}), 0, {last})) * {stride}u")
        else:
            lines.append(
                f"    let floor{axis} = floor(x{axis});\n"
                f"    let low{axis} = u32(clamp(i32(floor{axis}), 0, {last})) * {stride}u;\n"
                f"    let high{axis} = u32(clamp(i32(floor{axis}) + 1, 0, {last})) * {stride}u;\n"
                f"    let weight{axis} = x{axis} - floor{axis};"
            )
            corners.append((f"low{axis}", f"high{axis}", f"weight{axis}"))
    base = " + ".join(fixed) or "0u"
    lines.append(f"    let base = {base};")
    if not corners:
        lines.append("    y[i] = x[base];")
    else:
        lines.append("    var total = 0.0;")
        for mask in range(1 << len(corners)):
            index = ["base"]
            weight = []
            for bit, (low, high, w) in enumerate(corners):
                take_high = bool(mask >> bit & 1)
                index.append(high if take_high else low)
                weight.append(w if take_high else f"(1.0 - {w})")
            value = load("x", " + ".join(index), x_info.dtype)
            lines.append(f"    total += {' * '.join(weight)} * {value};")
        lines.append(f"    y[i] = {store('total', output.dtype)};")
    shader = (
        enable_f16(x_info.dtype)
        + storage(0, "x", x_info.dtype)
        + "\n"
        + storage(1, "y", output.dtype, write=True)
        + "\n"
        + flat_main(output.size, "\n".join(lines))
    )
    return Lowering(flat_dispatch(shader, output.size, [0]))
