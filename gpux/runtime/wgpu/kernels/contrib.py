"""ONNX Runtime's fused ops (domain com.microsoft), which its EXTENDED graph optimizer writes:
a convolution with its residual sum and activation, MatMul with transposes and a scale,
Gemm with an activation, the Gelu family and skip + layer normalisation. Each reuses the
plain op's kernel with a richer epilogue, so a fused node costs one dispatch, as it should."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpux.runtime.wgpu.kernel import Lowering, NodeContext, Unsupported, kernel
from gpux.runtime.wgpu.kernels._wgsl import (
    FLOATS,
    activation,
    broadcast_index,
    enable_f16,
    flat_dispatch,
    flat_main,
    literal,
    load,
    math_helpers,
    require_dtypes,
    storage,
    store,
)
from gpux.runtime.wgpu.kernels.conv import lower_conv
from gpux.runtime.wgpu.kernels.matmul import lower_gemm, lower_matmul
from gpux.runtime.wgpu.kernels.normalization import lower_row_normalization

MICROSOFT = "com.microsoft"


@kernel("FusedConv", MICROSOFT)
def fused_conv(context: NodeContext) -> Lowering:
    """activation(Conv(X, W, B) + Z)."""
    name = str(context.attribute("activation", ""))
    params = [float(p) for p in context.attribute("activation_params", None) or []]
    return lower_conv(context, activation(name, params) if name else "v", add_input=3)


@kernel("FusedGemm", MICROSOFT)
def fused_gemm(context: NodeContext) -> Lowering:
    name = str(context.attribute("activation", ""))
    params = [
        float(context.attribute(key))
        for key in ("activation_alpha", "activation_beta")
        if context.attribute(key) is not None
    ]
    return lower_gemm(context, activation(name, params) if name else "v")


@kernel("FusedMatMul", MICROSOFT)
def fused_matmul(context: NodeContext) -> Lowering:
    return lower_matmul(context, **fused_matmul_options(context))


def fused_matmul_options(context: NodeContext) -> dict[str, Any]:
    """``lower_matmul``'s arguments for a FusedMatMul node."""
    if context.attribute("transBatchA", 0) or context.attribute("transBatchB", 0):
        raise Unsupported("FusedMatMul with transBatchA/transBatchB")
    return {
        "alpha": float(context.attribute("alpha", 1.0)),
        "trans_a": bool(context.attribute("transA", 0)),
        "trans_b": bool(context.attribute("transB", 0)),
    }


GELU = {
    "Gelu": "0.5 * v * (1.0 + erf_f32(v * 0.7071067811865476))",
    "BiasGelu": "0.5 * v * (1.0 + erf_f32(v * 0.7071067811865476))",
    "FastGelu": "0.5 * v * (1.0 + tanh_f32(0.7978845608028654 * (v + 0.044715 * v * v * v)))",
    "QuickGelu": "v / (1.0 + exp(-{alpha} * v))",
}


@kernel("Gelu", MICROSOFT)
@kernel("BiasGelu", MICROSOFT)
@kernel("FastGelu", MICROSOFT)
@kernel("QuickGelu", MICROSOFT)
def gelu(context: NodeContext) -> Lowering:
    """Gelu of ``X`` (plus a bias along the last axis, for BiasGelu and FastGelu)."""
    require_dtypes(context, FLOATS)
    x_info = context.inputs[0]
    bias_info = context.inputs[1] if len(context.inputs) > 1 else None
    output = context.outputs[0]
    assert x_info is not None
    expression = GELU[context.op_type].format(
        alpha=literal(float(context.attribute("alpha", 1.702)))
    )
    declarations = [storage(0, "x", x_info.dtype)]
    inputs = [0]
    value = load("x", "i", x_info.dtype)
    if bias_info is not None:
        declarations.append(storage(1, "bias", bias_info.dtype))
        inputs.append(1)
        at = broadcast_index("i", bias_info.shape, output.shape)
        value += f" + {load('bias', at, bias_info.dtype)}"
    declarations.append(storage(len(declarations), "y", output.dtype, write=True))
    dtypes = [info.dtype for info in context.inputs if info is not None]
    shader = (
        enable_f16(*dtypes, output.dtype)
        + "\n".join(declarations)
        + "\n"
        + math_helpers(expression)
        + flat_main(
            output.size, f"    let v = {value};\n    y[i] = {store(expression, output.dtype)};"
        )
    )
    return Lowering(flat_dispatch(shader, output.size, inputs))


@kernel("SkipLayerNormalization", MICROSOFT)
@kernel("SkipSimplifiedLayerNormalization", MICROSOFT)
def skip_layer_normalization(context: NodeContext) -> Lowering:
    """LayerNorm(input + skip + bias) * gamma + beta; outputs: the result, mean, inverse
    standard deviation, and the sum before normalising (each optional but the first)."""
    x_info = context.inputs[0]
    assert x_info is not None
    simplified = context.op_type == "SkipSimplifiedLayerNormalization"
    length = x_info.shape[-1]
    # Inputs: input, skip, gamma, then beta and bias (SkipSimplified has no beta).
    bias_index = 3 if simplified else 4
    summed = [0, 1] + ([bias_index] if len(context.inputs) > bias_index else [])
    roles = ("y", "mean", "inverse", "sum")[: len(context.outputs)]
    if simplified:
        roles = tuple("" if role == "mean" else role for role in roles)
    return lower_row_normalization(
        context,
        length,
        summed,
        scale=2,
        bias=None if simplified else 3,
        roles=roles,
        simplified=simplified,
    )


@kernel("SimplifiedLayerNormalization", "")
def simplified_layer_normalization(context: NodeContext) -> Lowering:
    """RMS normalisation as ONNX Runtime writes it (in the ai.onnx domain)."""
    x_info = context.inputs[0]
    assert x_info is not None
    axis = int(context.attribute("axis", -1))
    axis = axis + len(x_info.shape) if axis < 0 else axis
    length = int(np.prod(x_info.shape[axis:], dtype=np.int64))
    roles = ("y", "", "inverse")[: len(context.outputs)]
    return lower_row_normalization(context, length, [0], 1, None, roles, simplified=True)


@kernel("RMSNormalization")
def rms_normalization(context: NodeContext) -> Lowering:
    """ONNX's RMSNormalization (opset 23): the same kernel as ONNX Runtime's simplified one."""
    return simplified_layer_normalization(context)
