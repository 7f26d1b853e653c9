"""What each elementwise op computes, as a WGSL expression of one element: the table that the
one-node kernels (``elementwise.py``) and the fused chains (``fusion.py``) both compile.

An :class:`Expression` reads some of its node's inputs (by input number) under parameter
names, in their compute types (``f32`` for floats, ``i32`` for integers, ``u32`` 0/1 for
bool), and gives output 0 in its compute type. ``elementwise.py`` turns each expression into a
WGSL function, so an operand written twice in an expression is still computed once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gpux.runtime.wgpu.kernel import NodeContext, Unsupported
from gpux.runtime.wgpu.kernels._wgsl import (
    FLOATS,
    NUMBERS,
    compute_type,
    device_type,
    literal,
    present,
    require_dtypes,
)


@dataclass(frozen=True)
class Expression:
    inputs: tuple[int, ...]  # the node's input numbers the expression reads
    names: tuple[str, ...]  # the parameter name of each, as the WGSL writes it
    wgsl: str  # output 0, in its compute type


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


def _unary(context: NodeContext) -> Expression:
    source = context.inputs[0]
    assert source is not None
    if context.op_type in FLOAT_TESTS:
        if source.dtype not in FLOATS:
            raise Unsupported(f"{context.op_type} on {source.dtype} has no kernel")
        device_type(context, source.dtype)
        wgsl = f"select(0u, 1u, {FLOAT_TESTS[context.op_type](context)})"
    elif source.dtype in FLOATS and context.op_type in FLOAT_UNARY:
        require_dtypes(context, FLOATS)
        wgsl = FLOAT_UNARY[context.op_type](context)
    elif context.op_type in INTEGER_UNARY:
        require_dtypes(context, NUMBERS)
        wgsl = INTEGER_UNARY[context.op_type]
        if context.op_type == "Sign" and compute_type(source.dtype) != "i32":
            raise Unsupported(f"Sign on {source.dtype}")
    else:
        raise Unsupported(f"{context.op_type} on {source.dtype} has no kernel")
    return Expression((0,), ("x",), wgsl)


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


def _binary(context: NodeContext) -> Expression:
    if context.op_type in VARIADIC and len(context.inputs) != 2:
        return _variadic(context)
    if len(context.inputs) != 2:
        raise Unsupported(f"{context.op_type} of {len(context.inputs)} inputs (only 2)")
    if context.opset < 7:
        raise Unsupported(f"{context.op_type} before opset 7 (broadcast attribute)")
    a, b = context.inputs
    assert a is not None and b is not None
    require_dtypes(context, _ALLOWED)
    if context.op_type == "Pow" and a.dtype != b.dtype:
        raise Unsupported("Pow of mixed dtypes")
    compute = compute_type(a.dtype)
    wgsl = BINARY[context.op_type].get(compute)
    if context.op_type == "Mod" and context.attribute("fmod", 0):
        wgsl = "a % b"  # C's fmod, for floats and integers alike
    elif context.op_type == "Mod" and compute == "f32":
        raise Unsupported("Mod with fmod=0 on floats")
    if wgsl is None:
        raise Unsupported(f"{context.op_type} on {a.dtype} has no kernel")
    if context.op_type in COMPARISONS:
        wgsl = f"select(0u, 1u, {wgsl})"
    return Expression((0, 1), ("a", "b"), wgsl)


# Ops of any number of inputs: how two compute values combine, and the finish.
VARIADIC = {
    "Max": ("max({a}, {b})", "{v}"),
    "Min": ("min({a}, {b})", "{v}"),
    "Sum": ("{a} + {b}", "{v}"),
    "Mean": ("{a} + {b}", "{v} / {count}"),
}


def _variadic(context: NodeContext) -> Expression:
    """Max, Min, Sum or Mean of any number of inputs, numpy-broadcast."""
    if len(context.inputs) == 2 and context.op_type in BINARY:
        return _binary(context)
    if context.opset < 8:
        raise Unsupported(f"{context.op_type} before opset 8 (no broadcasting)")
    require_dtypes(context, NUMBERS)
    combine, finish = VARIADIC[context.op_type]
    if context.op_type == "Mean" and compute_type(context.outputs[0].dtype) != "f32":
        raise Unsupported(f"Mean on {context.outputs[0].dtype}")
    names = tuple(f"x{index}" for index in range(len(context.inputs)))
    value = names[0]
    for name in names[1:]:
        value = combine.format(a=value, b=name)
    wgsl = finish.format(v=f"({value})", count=literal(float(len(names))))
    return Expression(tuple(range(len(names))), names, wgsl)


def _not(context: NodeContext) -> Expression:
    require_dtypes(context, (np.dtype(np.bool_),))
    return Expression((0,), ("x",), "select(1u, 0u, x != 0u)")


def _where(context: NodeContext) -> Expression:
    condition = context.inputs[0]
    assert condition is not None
    require_dtypes(context, _ALLOWED)
    if condition.dtype != np.bool_:
        raise Unsupported("Where with a non-bool condition")
    return Expression((0, 1, 2), ("condition", "a", "b"), "select(b, a, condition != 0u)")


def _clip(context: NodeContext) -> Expression:
    output = context.outputs[0]
    require_dtypes(context, NUMBERS)
    compute = compute_type(output.dtype)
    lowest: float
    highest: float
    if compute == "i32":
        lowest, highest = -(2**31), 2**31 - 1
    else:
        lowest, highest = -float("inf"), float("inf")
    inputs, names = [0], ["x"]
    bounds = []
    for index, name, attribute, default in ((1, "low", "min", lowest), (2, "high", "max", highest)):
        if context.opset < 11:
            bounds.append(literal(context.attribute(attribute, default)))
        elif present(context, index) is not None:
            inputs.append(index)
            names.append(name)
            bounds.append(name)
        else:
            bounds.append(literal(default, compute))
    # min(max()) rather than clamp(): clamp is undefined when low > high, ONNX gives high.
    return Expression(tuple(inputs), tuple(names), f"min(max(x, {bounds[0]}), {bounds[1]})")


_CASTABLE = (*NUMBERS, np.dtype(np.bool_))


def _cast(context: NodeContext) -> Expression:
    source = context.inputs[0]
    assert source is not None
    require_dtypes(context, _CASTABLE)
    from_kind, to_kind = compute_type(source.dtype), compute_type(context.outputs[0].dtype)
    if to_kind == "u32":  # to bool
        zero = {"f32": "0.0", "i32": "0", "u32": "0u"}[from_kind]
        return Expression((0,), ("x",), f"select(0u, 1u, x != {zero})")
    return Expression((0,), ("x",), f"{to_kind}(x)")


EXPRESSIONS: dict[str, Callable[[NodeContext], Expression]] = {
    **{op: _unary for op in (*FLOAT_UNARY, *FLOAT_TESTS)},
    **{op: _binary for op in BINARY},
    **{op: _variadic for op in VARIADIC},
    "Not": _not,
    "Where": _where,
    "Clip": _clip,
    "Cast": _cast,
    "CastLike": _cast,
}


def expression(context: NodeContext) -> Expression:
    """The node's output 0 as one element's WGSL, or :class:`Unsupported` naming why not."""
    if context.domain or context.op_type not in EXPRESSIONS:
        raise Unsupported(f"{context.op_type} is not elementwise")
    return EXPRESSIONS[context.op_type](context)
