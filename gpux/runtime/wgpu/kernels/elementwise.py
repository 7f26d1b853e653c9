"""Elementwise kernels: unary math, binary arithmetic and comparisons with numpy broadcasting,
Clip, Where and Cast. One invocation per output element."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gpux.runtime.wgpu.kernel import Lowering, NodeContext, Unsupported, kernel
from gpux.runtime.wgpu.kernels._wgsl import (
    FLOATS,
    NUMBERS,
    broadcast_index,
    compute_type,
    device_type,
    enable_f16,
    flat_dispatch,
    flat_main,
    literal,
    load,
    math_helpers,
    present,
    require_dtypes,
    storage,
    store,
)

# Unary ops on floats: WGSL of the compute value ``x`` (and the attribute reader).
FLOAT_UNARY: dict[str, Callable[[NodeContext], str]] = {
    "Relu": lambda c: "max(x, 0.0)",
    "Sigmoid": lambda c: "1.0 / (1.0 + exp(-x))",
    "Tanh": lambda c: "tanh_f32(x)",
    "Erf": lambda c: "erf_f32(x)",
    "Sqrt": lambda c: "sqrt(x)",
    "Exp": lambda c: "exp(x)",
    "Log": lambda c: "log(x)",
    "Abs": lambda c: "abs(x)",
    "Neg": lambda c: "-x",
    "Reciprocal": lambda c: "1.0 / x",
    "Floor": lambda c: "floor(x)",
    "Ceil": lambda c: "ceil(x)",
    "Sin": lambda c: "sin(x)",
    "Cos": lambda c: "cos(x)",
    "Softplus": lambda c: "softplus_f32(x)",
    "LeakyRelu": lambda c: f"select(x * {literal(c.attribute('alpha', 0.01))}, x, x >= 0.0)",
    "Elu": lambda c: f"select({literal(c.attribute('alpha', 1.0))} * (exp(x) - 1.0), x, x >= 0.0)",
    "HardSigmoid": lambda c: (
        f"clamp({literal(c.attribute('alpha', 0.2))} * x + "
        f"{literal(c.attribute('beta', 0.5))}, 0.0, 1.0)"
    ),
    "Gelu": lambda c: _gelu(c),
    "HardSwish": lambda c: "x * clamp(x / 6.0 + 0.5, 0.0, 1.0)",
    "Sign": lambda c: "sign(x)",
    "Round": lambda c: "round(x)",  # WGSL rounds half to even, as ONNX does
    "Mish": lambda c: "x * tanh_f32(softplus_f32(x))",
    "Tan": lambda c: "tan(x)",
    "Asin": lambda c: "asin(x)",
    "Acos": lambda c: "acos(x)",
    "Atan": lambda c: "atan(x)",
    "Sinh": lambda c: "sinh(x)",
    "Cosh": lambda c: "cosh(x)",
    "Asinh": lambda c: "asinh(x)",
    "Acosh": lambda c: "acosh(x)",
    "Atanh": lambda c: "atanh(x)",
    "Softsign": lambda c: "x / (1.0 + abs(x))",
    "Selu": lambda c: (
        f"select({literal(c.attribute('gamma', 1.0507009873554805))} * "
        f"{literal(c.attribute('alpha', 1.6732632423543772))} * (exp(x) - 1.0), "
        f"{literal(c.attribute('gamma', 1.0507009873554805))} * x, x > 0.0)"
    ),
    "Celu": lambda c: (
        f"max(0.0, x) + min(0.0, {literal(c.attribute('alpha', 1.0))} * "
        f"(exp(x / {literal(c.attribute('alpha', 1.0))}) - 1.0))"
    ),
    "ThresholdedRelu": lambda c: f"select(0.0, x, x > {literal(c.attribute('alpha', 1.0))})",
    "Shrink": lambda c: (
        f"select(select(0.0, x - {literal(c.attribute('bias', 0.0))}, "
        f"x > {literal(c.attribute('lambd', 0.5))}), x + {literal(c.attribute('bias', 0.0))}, "
        f"x < -{literal(c.attribute('lambd', 0.5))})"
    ),
    "Swish": lambda c: f"x / (1.0 + exp(-{literal(c.attribute('alpha', 1.0))} * x))",
}

INTEGER_UNARY: dict[str, str] = {
    "Relu": "max(x, 0)",
    "Abs": "abs(x)",
    "Neg": "-x",
    "Sign": "sign(x)",
}

# Tests on the bits: shader compilers may assume that floats are never NaN or infinite and
# fold ``x != x`` away.
FLOAT_TESTS: dict[str, Callable[[NodeContext], str]] = {
    "IsNaN": lambda c: "(bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u",
    "IsInf": lambda c: " || ".join(
        ["false"]
        + (["bitcast<u32>(x) == 0x7f800000u"] if c.attribute("detect_positive", 1) else [])
        + (["bitcast<u32>(x) == 0xff800000u"] if c.attribute("detect_negative", 1) else [])
    ),
}


def _gelu(context: NodeContext) -> str:
    if context.attribute("approximate", "none") == "tanh":
        return "0.5 * x * (1.0 + tanh_f32(0.7978845608028654 * (x + 0.044715 * x * x * x)))"
    return "0.5 * x * (1.0 + erf_f32(x * 0.7071067811865476))"


def _unary(context: NodeContext) -> Lowering:
    source = context.inputs[0]
    output = context.outputs[0]
    assert source is not None
    if context.op_type in FLOAT_TESTS:
        if source.dtype not in FLOATS:
            raise Unsupported(f"{context.op_type} on {source.dtype} has no kernel")
        device_type(context, source.dtype)
        expression = f"select(0u, 1u, {FLOAT_TESTS[context.op_type](context)})"
    elif source.dtype in FLOATS and context.op_type in FLOAT_UNARY:
        require_dtypes(context, FLOATS)
        expression = FLOAT_UNARY[context.op_type](context)
    elif context.op_type in INTEGER_UNARY:
        require_dtypes(context, NUMBERS)
        expression = INTEGER_UNARY[context.op_type]
        if context.op_type == "Sign" and compute_type(source.dtype) != "i32":
            raise Unsupported(f"Sign on {source.dtype}")
    else:
        raise Unsupported(f"{context.op_type} on {source.dtype} has no kernel")
    shader = (
        enable_f16(source.dtype)
        + storage(0, "x_in", source.dtype)
        + "\n"
        + storage(1, "y", output.dtype, write=True)
        + "\n"
        + math_helpers(expression)
        + flat_main(
            output.size,
            f"    let x = {load('x_in', 'i', source.dtype)};\n"
            f"    y[i] = {expression if context.op_type in FLOAT_TESTS else store(expression, output.dtype)};",
        )
    )
    return Lowering(flat_dispatch(shader, output.size, [0]))


for _op in (*FLOAT_UNARY, *FLOAT_TESTS):
    kernel(_op)(_unary)


def _float_pow(a: str, b: str) -> str:
    # WGSL's pow is undefined for a negative base; ONNX (like numpy) takes integer exponents
    # of negative bases.
    return (
        f"select(select(pow(abs({a}), {b}), -pow(abs({a}), {b}), "
        f"{a} < 0.0 && round({b}) == {b} && (i32(abs({b})) & 1) == 1), 1.0, {b} == 0.0)"
    )


# Binary ops: WGSL of compute values ``a`` and ``b``, by compute type.
BINARY: dict[str, dict[str, str]] = {
    "Add": {"f32": "a + b", "i32": "a + b"},
    "Sub": {"f32": "a - b", "i32": "a - b"},
    "Mul": {"f32": "a * b", "i32": "a * b"},
    "Div": {"f32": "a / b", "i32": "a / b"},
    "Max": {"f32": "max(a, b)", "i32": "max(a, b)"},
    "Min": {"f32": "min(a, b)", "i32": "min(a, b)"},
    "Pow": {"f32": _float_pow("a", "b")},
    "Equal": {"f32": "a == b", "i32": "a == b", "u32": "a == b"},
    "Less": {"f32": "a < b", "i32": "a < b"},
    "LessOrEqual": {"f32": "a <= b", "i32": "a <= b"},
    "Greater": {"f32": "a > b", "i32": "a > b"},
    "GreaterOrEqual": {"f32": "a >= b", "i32": "a >= b"},
    "And": {"u32": "(a & b) != 0u"},
    "Or": {"u32": "(a | b) != 0u"},
    "Xor": {"u32": "(a ^ b) != 0u"},
    # Mod: WGSL's % truncates (C's fmod); fmod=0 on integers takes the divisor's sign.
    # PRelu: the slope broadcasts unidirectionally onto x, as any binary operand here.
    "PRelu": {"f32": "select(a * b, a, a >= 0.0)", "i32": "select(a * b, a, a >= 0)"},
    "Mod": {
        "f32": "a % b",
        "i32": "select(a % b, a % b + b, a % b != 0 && ((a % b < 0) != (b < 0)))",
    },
}
COMPARISONS = {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor"}
_ALLOWED = (*NUMBERS, np.dtype(np.bool_))


@kernel("Add")
@kernel("Sub")
@kernel("Mul")
@kernel("Div")
@kernel("Pow")
@kernel("Mod")
@kernel("PRelu")
@kernel("Equal")
@kernel("Less")
@kernel("LessOrEqual")
@kernel("Greater")
@kernel("GreaterOrEqual")
@kernel("And")
@kernel("Or")
@kernel("Xor")
def binary(context: NodeContext) -> Lowering:
    if context.op_type in VARIADIC and len(context.inputs) != 2:
        return variadic(context)
    if len(context.inputs) != 2:
        raise Unsupported(f"{context.op_type} of {len(context.inputs)} inputs (only 2)")
    if context.opset < 7:
        raise Unsupported(f"{context.op_type} before opset 7 (broadcast attribute)")
    a, b = context.inputs
    output = context.outputs[0]
    assert a is not None and b is not None
    require_dtypes(context, _ALLOWED)
    if context.op_type == "Pow" and a.dtype != b.dtype:
        raise Unsupported("Pow of mixed dtypes")
    compute = compute_type(a.dtype)
    expression = BINARY[context.op_type].get(compute)
    if context.op_type == "Mod" and context.attribute("fmod", 0):
        expression = "a % b"  # C's fmod, for floats and integers alike
    elif context.op_type == "Mod" and compute == "f32":
        raise Unsupported("Mod with fmod=0 on floats")
    if expression is None:
        raise Unsupported(f"{context.op_type} on {a.dtype} has no kernel")
    if context.op_type in COMPARISONS:
        expression = f"select(0u, 1u, {expression})"
    else:
        expression = store(expression, output.dtype)
    shader = (
        enable_f16(a.dtype, b.dtype, output.dtype)
        + storage(0, "a_in", a.dtype)
        + "\n"
        + storage(1, "b_in", b.dtype)
        + "\n"
        + storage(2, "y", output.dtype, write=True)
        + "\n"
        + flat_main(
            output.size,
            f"    let a = {load('a_in', broadcast_index('i', a.shape, output.shape), a.dtype)};\n"
            f"    let b = {load('b_in', broadcast_index('i', b.shape, output.shape), b.dtype)};\n"
            f"    y[i] = {expression};",
        )
    )
    return Lowering(flat_dispatch(shader, output.size, [0, 1]))


# Ops of any number of inputs: how two compute values combine, and the finish.
VARIADIC = {
    "Max": ("max({a}, {b})", "v"),
    "Min": ("min({a}, {b})", "v"),
    "Sum": ("{a} + {b}", "v"),
    "Mean": ("{a} + {b}", "v / {count}"),
}


@kernel("Max")
@kernel("Min")
@kernel("Sum")
@kernel("Mean")
def elementwise_reduce(context: NodeContext) -> Lowering:
    if len(context.inputs) == 2 and context.op_type in BINARY:
        return binary(context)
    return variadic(context)


def variadic(context: NodeContext) -> Lowering:
    """Max, Min, Sum or Mean of any number of inputs, numpy-broadcast."""
    if context.opset < 8:
        raise Unsupported(f"{context.op_type} before opset 8 (no broadcasting)")
    require_dtypes(context, NUMBERS)
    output = context.outputs[0]
    combine, finish = VARIADIC[context.op_type]
    compute = compute_type(output.dtype)
    if context.op_type == "Mean" and compute != "f32":
        raise Unsupported(f"Mean on {output.dtype}")
    declarations = []
    lines = []
    for index, info in enumerate(context.inputs):
        assert info is not None
        declarations.append(storage(index, f"x{index}", info.dtype))
        value = load(f"x{index}", broadcast_index("i", info.shape, output.shape), info.dtype)
        if index == 0:
            lines.append(f"    var v = {value};")
        else:
            step = combine.format(a="v", b=f"x{index}_value")
            lines.append(f"    let x{index}_value = {value};\n    v = {step};")
    declarations.append(storage(len(declarations), "y", output.dtype, write=True))
    result = finish.format(count=literal(float(len(context.inputs))))
    lines.append(f"    y[i] = {store(result, output.dtype)};")
    dtypes = [info.dtype for info in context.inputs if info is not None]
    shader = (
        enable_f16(*dtypes, output.dtype)
        + "\n".join(declarations)
        + "\n"
        + flat_main(output.size, "\n".join(lines))
    )
    return Lowering(flat_dispatch(shader, output.size, list(range(len(context.inputs)))))


@kernel("Not")
def logical_not(context: NodeContext) -> Lowering:
    require_dtypes(context, (np.dtype(np.bool_),))
    output = context.outputs[0]
    shader = (
        storage(0, "x", output.dtype)
        + "\n"
        + storage(1, "y", output.dtype, write=True)
        + "\n"
        + flat_main(output.size, "    y[i] = select(1u, 0u, x[i] != 0u);")
    )
    return Lowering(flat_dispatch(shader, output.size, [0]))


@kernel("Where")
def where(context: NodeContext) -> Lowering:
    condition, a, b = context.inputs
    output = context.outputs[0]
    assert condition is not None and a is not None and b is not None
    require_dtypes(context, _ALLOWED)
    if condition.dtype != np.bool_:
        raise Unsupported("Where with a non-bool condition")
    shape = output.shape
    shader = (
        enable_f16(output.dtype)
        + storage(0, "condition", condition.dtype)
        + "\n"
        + storage(1, "a", a.dtype)
        + "\n"
        + storage(2, "b", b.dtype)
        + "\n"
        + storage(3, "y", output.dtype, write=True)
        + "\n"
        + flat_main(
            output.size,
            f"    y[i] = select(b[{broadcast_index('i', b.shape, shape)}], "
            f"a[{broadcast_index('i', a.shape, shape)}], "
            f"condition[{broadcast_index('i', condition.shape, shape)}] != 0u);",
        )
    )
    return Lowering(flat_dispatch(shader, output.size, [0, 1, 2]))


def _bound(context: NodeContext, index: int, attribute: str, default: float) -> tuple[str, Any]:
    """Clip's bound as WGSL: an input read from the device, an attribute, or the default."""
    if context.opset >= 11:
        if present(context, index) is not None:
            return f"{load(('low', 'high')[index - 1], '0u', context.outputs[0].dtype)}", index
        return (literal(default, compute_type(context.outputs[0].dtype))), None
    return literal(context.attribute(attribute, default)), None


@kernel("Clip")
def clip(context: NodeContext) -> Lowering:
    output = context.outputs[0]
    require_dtypes(context, NUMBERS)
    compute = compute_type(output.dtype)
    lowest: float
    highest: float
    if compute == "i32":
        lowest, highest = -(2**31), 2**31 - 1
    else:
        lowest, highest = -float("inf"), float("inf")
    low, low_input = _bound(context, 1, "min", lowest)
    high, high_input = _bound(context, 2, "max", highest)
    declarations = [storage(0, "x", output.dtype)]
    inputs = [0]
    for name, index in (("low", low_input), ("high", high_input)):
        if index is not None:
            declarations.append(storage(len(declarations), name, output.dtype))
            inputs.append(index)
    declarations.append(storage(len(declarations), "y", output.dtype, write=True))
    # min(max()) rather than clamp(): clamp is undefined when low > high, ONNX gives high.
    clipped = f"min(max({load('x', 'i', output.dtype)}, {low}), {high})"
    shader = (
        enable_f16(output.dtype)
        + "\n".join(declarations)
        + "\n"
        + flat_main(
            output.size,
            f"    y[i] = {store(clipped, output.dtype)};",
        )
    )
    return Lowering(flat_dispatch(shader, output.size, inputs))


_CASTABLE = (*NUMBERS, np.dtype(np.bool_))


@kernel("Cast")
@kernel("CastLike")
def cast(context: NodeContext) -> Lowering:
    source = context.inputs[0]
    output = context.outputs[0]
    assert source is not None
    require_dtypes(context, _CASTABLE)
    value = load("x", "i", source.dtype)
    from_kind, to_kind = compute_type(source.dtype), compute_type(output.dtype)
    if to_kind == "u32":  # to bool
        zero = {"f32": "0.0", "i32": "0", "u32": "0u"}[from_kind]
        expression = f"select(0u, 1u, {value} != {zero})"
    else:
        expression = store(f"{to_kind}({value})", output.dtype)
    shader = (
        enable_f16(source.dtype, output.dtype)
        + storage(0, "x", source.dtype)
        + "\n"
        + storage(1, "y", output.dtype, write=True)
        + "\n"
        + flat_main(output.size, f"    y[i] = {expression};")
    )
    return Lowering(flat_dispatch(shader, output.size, [0]))
