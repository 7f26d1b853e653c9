"""Elementwise kernels: unary math, binary arithmetic and comparisons with numpy broadcasting,
Clip, Where and Cast. One invocation per output element.

Every such node compiles as a chain of one step; ``fusion.py`` hands :func:`chain_lowering`
longer chains (a bias add, GELU's six nodes), computed per element in one kernel with no
buffer between the steps. What each op computes is ``expressions.py``'s table, shared by both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpux.runtime.wgpu.kernel import (
    Binding,
    Dispatch,
    Lowering,
    NodeContext,
    TensorInfo,
    Unsupported,
    kernel,
    workgroups_for,
)
from gpux.runtime.wgpu.kernels._wgsl import (
    WORKGROUP,
    broadcast_index,
    compute_type,
    enable_f16,
    flat_main,
    literal,
    load,
    math_helpers,
    storage,
    store,
)
from gpux.runtime.wgpu.kernels.expressions import EXPRESSIONS, expression

I32_RANGE = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class Step:
    """One node of a chain. ``operands[k]`` says where the node's input ``k`` comes from: input
    number ``int`` of the kernel, or the value of earlier step ``str`` (``"t0"``, ``"t1"``...);
    None for an omitted input."""

    context: NodeContext
    operands: tuple[int | str | None, ...]


def _inline(value: np.ndarray[Any, Any] | None, info: TensorInfo) -> str | None:
    """A one-element constant as a WGSL literal of its compute type (no binding for it), or
    None to bind it."""
    if value is None or value.size != 1:
        return None
    kind = compute_type(info.dtype)
    scalar = value.reshape(-1)[0].item()
    if kind == "i32" and not I32_RANGE[0] <= scalar <= I32_RANGE[1]:
        raise Unsupported(f"constant {scalar} does not fit in i32")
    return literal(scalar, kind)


@dataclass(frozen=True)
class ChainCode:
    """A chain's WGSL, for a kernel to place: ``declarations`` of the inputs it binds (kernel
    input numbers ``bound``, in binding order), the step ``functions``, and the ``body`` lines
    that compute each step for one element, the last step's value named ``result``."""

    declarations: tuple[str, ...]
    functions: str
    body: tuple[str, ...]
    result: str
    bound: tuple[int, ...]


def chain_code(
    steps: Sequence[Step],
    inputs: Sequence[TensorInfo | None],
    constants: Mapping[int, np.ndarray[Any, Any]],
    index: str = "i",
    first_binding: int = 0,
    prefix: str = "",
) -> ChainCode:
    """The WGSL computing ``steps`` in order at flat ``index`` of the last step's output (every
    step has that shape; kernel inputs broadcast into it). Bindings are numbered from
    ``first_binding``; names start with ``prefix``, so that the code can sit inside another
    kernel. A ``str`` operand that names no earlier step is a WGSL value in scope (a GEMM's
    ``v``)."""
    shape = steps[-1].context.outputs[0].shape
    functions: list[str] = []
    body: list[str] = []
    bound: list[int] = []
    declarations: list[str] = []
    sources: dict[int, str] = {}
    step_names = {f"t{number}": f"{prefix}t{number}" for number in range(len(steps))}
    for number, step in enumerate(steps):
        if step.context.outputs[0].shape != shape:
            raise Unsupported("a chain's steps differ in shape")
        computed = expression(step.context)
        parameters, arguments = [], []
        for input_number, name in zip(computed.inputs, computed.names, strict=True):
            info = step.context.inputs[input_number]
            operand = step.operands[input_number]
            assert info is not None and operand is not None
            parameters.append(f"{name}: {compute_type(info.dtype)}")
            if isinstance(operand, str):
                arguments.append(step_names.get(operand, operand))
                continue
            if operand not in sources:
                source = inputs[operand]
                assert source is not None
                inlined = _inline(constants.get(operand), source)
                if inlined is not None:
                    sources[operand] = inlined
                else:
                    binding = first_binding + len(bound)
                    buffer = f"{prefix}src{binding}"
                    bound.append(operand)
                    declarations.append(storage(binding, buffer, source.dtype))
                    index_wgsl = broadcast_index(index, source.shape, shape)
                    body.append(
                        f"    let {prefix}s{binding} = {load(buffer, index_wgsl, source.dtype)};"
                    )
                    sources[operand] = f"{prefix}s{binding}"
            arguments.append(sources[operand])
        result = compute_type(step.context.outputs[0].dtype)
        functions.append(
            f"fn {prefix}step{number}({', '.join(parameters)}) -> {result} {{\n"
            f"    return {computed.wgsl};\n}}\n"
        )
        body.append(f"    let {prefix}t{number} = {prefix}step{number}({', '.join(arguments)});")
    return ChainCode(
        declarations=tuple(declarations),
        functions=math_helpers(*functions) + "".join(functions),
        body=tuple(body),
        result=f"{prefix}t{len(steps) - 1}",
        bound=tuple(bound),
    )


def chain_lowering(
    steps: Sequence[Step],
    inputs: Sequence[TensorInfo | None],
    constants: Mapping[int, np.ndarray[Any, Any]],
) -> Lowering:
    """One dispatch computing ``steps`` in order for each element of the last step's output
    (every step has that shape; kernel inputs broadcast into it), storing only that.
    ``inputs``/``constants``: the kernel's inputs and those known at load; one-element
    constants are written into the WGSL instead of bound."""
    output = steps[-1].context.outputs[0]
    code = chain_code(steps, inputs, constants)
    body = [*code.body, f"    y[i] = {store(code.result, output.dtype)};"]
    declarations = [*code.declarations, storage(len(code.bound), "y", output.dtype, write=True)]
    dtypes = [info.dtype for info in inputs if info is not None]
    shader = (
        enable_f16(*dtypes, *(step.context.outputs[0].dtype for step in steps))
        + "\n".join(declarations)
        + "\n"
        + code.functions
        + flat_main(output.size, "\n".join(body))
    )
    if output.size == 0:
        return Lowering()
    bindings = (*(Binding("input", i) for i in code.bound), Binding("output", 0))
    return Lowering((Dispatch(shader, bindings, workgroups_for(output.size, WORKGROUP)),))


def elementwise(context: NodeContext) -> Lowering:
    """One elementwise node: a chain of one step reading the node's own inputs."""
    operands = tuple(None if info is None else index for index, info in enumerate(context.inputs))
    return chain_lowering([Step(context, operands)], context.inputs, context.constants)


for _op in EXPRESSIONS:
    kernel(_op)(elementwise)
