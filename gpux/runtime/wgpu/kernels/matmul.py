"""MatMul and Gemm (and com.microsoft's FusedMatMul and FusedGemm, through ``lower_matmul``
and ``lower_gemm``) on the tiled GEMM template of ``gemm.py``: each writes the ``load_a``,
``load_b`` and ``store_c`` functions that read its operands (plain, transposed, broadcast over
a batch) and apply its epilogue (alpha, a bias, an activation), and says which operand walks K
in memory so that the template stages it with reads neighbours share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gpux.runtime.wgpu.kernel import (
    Binding,
    Lowering,
    NodeContext,
    TensorInfo,
    Unsupported,
    kernel,
)
from gpux.runtime.wgpu.kernels._wgsl import (
    FLOATS,
    MATH_FUNCTIONS,
    broadcast_index,
    enable_f16,
    literal,
    load,
    math_helpers,
    require_dtypes,
    storage,
    store,
)
from gpux.runtime.wgpu.kernels.epilogue import Epilogue, epilogue_code, input_dtypes
from gpux.runtime.wgpu.kernels.gemm import Gemm, gemm_lowering


def _matrix_shapes(
    a_shape: tuple[int, ...], b_shape: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], int, int, int]:
    """MatMul's (A batch, B batch, output batch, M, K, N), numpy rules for 1-D operands."""
    a = (1, *a_shape) if len(a_shape) == 1 else a_shape
    b = (*b_shape, 1) if len(b_shape) == 1 else b_shape
    m, k = a[-2], a[-1]
    if b[-2] != k:
        raise Unsupported(f"MatMul of {a_shape} and {b_shape}")
    batch = tuple(np.broadcast_shapes(a[:-2], b[:-2]))
    return a[:-2], b[:-2], batch, m, k, b[-1]


@kernel("MatMul")
def matmul(context: NodeContext) -> Lowering:
    return lower_matmul(context)


def _swap_last(shape: tuple[int, ...], swap: bool) -> tuple[int, ...]:
    return (*shape[:-2], shape[-1], shape[-2]) if swap and len(shape) >= 2 else shape


def lower_matmul(
    context: NodeContext,
    alpha: float = 1.0,
    trans_a: bool = False,
    trans_b: bool = False,
    epilogue: Epilogue | None = None,
) -> Lowering:
    """MatMul of ``alpha * A @ B``, A and B optionally transposed in their last two axes
    (what com.microsoft.FusedMatMul adds), then ``epilogue`` on each value."""
    require_dtypes(context, FLOATS)
    a_info, b_info = context.inputs[:2]
    output = context.outputs[0]
    assert a_info is not None and b_info is not None
    a_shape = _swap_last(a_info.shape, trans_a)
    b_shape = _swap_last(b_info.shape, trans_b)
    a_batch, b_batch, batch, m, k, n = _matrix_shapes(a_shape, b_shape)
    batch_count = int(np.prod(batch, dtype=np.int64))
    if output.size == 0:
        return Lowering()
    if k == 0:
        raise Unsupported("MatMul over an empty dimension")
    a_index = broadcast_index("batch", a_batch, batch)
    b_index = broadcast_index("batch", b_batch, batch)
    a_along_k = not (trans_a and len(a_info.shape) >= 2)
    b_along_k = trans_b and len(b_info.shape) >= 2
    a_at = f"m * {k}u + k" if a_along_k else f"k * {m}u + m"
    b_at = f"n * {k}u + k" if b_along_k else f"k * {n}u + n"
    scaled = "value" if alpha == 1.0 else f"{literal(alpha)} * value"
    after = epilogue_code(epilogue, first_binding=3)
    problem = Gemm(
        batch=batch_count,
        m=m,
        n=n,
        k=k,
        a_along_k=a_along_k,
        b_along_k=b_along_k,
        declarations=enable_f16(a_info.dtype, b_info.dtype, output.dtype, *input_dtypes(epilogue))
        + "\n".join(
            [
                storage(0, "a", a_info.dtype),
                storage(1, "b", b_info.dtype),
                storage(2, "c", output.dtype, write=True),
            ]
        )
        + "\n"
        + after.declarations,
        functions=f"""
fn load_a(batch: u32, m: u32, k: u32) -> f32 {{
    return {load("a", f"{a_index} * {m * k}u + {a_at}", a_info.dtype)};
}}
fn load_b(batch: u32, k: u32, n: u32) -> f32 {{
    return {load("b", f"{b_index} * {k * n}u + {b_at}", b_info.dtype)};
}}
fn store_c(batch: u32, m: u32, n: u32, value: f32) {{
    let at = batch * {m * n}u + m * {n}u + n;
    let v = {scaled};
{after.apply}    c[{after.store_at}] = {store(after.result, output.dtype)};
}}
{after.functions}""",
    )
    bindings = (Binding("input", 0), Binding("input", 1), Binding("output", 0), *after.bindings)
    return gemm_lowering(problem, bindings)


@kernel("Gemm")
def gemm(context: NodeContext) -> Lowering:
    return lower_gemm(context)


def lower_gemm(
    context: NodeContext, activation: str = "v", epilogue: Epilogue | None = None
) -> Lowering:
    """Gemm, then ``activation`` (WGSL of the f32 value ``v``: com.microsoft.FusedGemm) and
    ``epilogue`` on each value."""
    require_dtypes(context, FLOATS)
    if epilogue is not None and activation != "v":
        raise Unsupported("an epilogue after a fused activation")
    a_info, b_info = context.inputs[:2]
    c_info = context.inputs[2] if len(context.inputs) > 2 else None
    output = context.outputs[0]
    assert a_info is not None and b_info is not None
    if context.opset < 7 and c_info is not None:
        raise Unsupported("Gemm before opset 7 (broadcast attribute)")
    trans_a = bool(context.attribute("transA", 0))
    trans_b = bool(context.attribute("transB", 0))
    alpha = float(context.attribute("alpha", 1.0))
    beta = float(context.attribute("beta", 1.0))
    m, k = a_info.shape[::-1] if trans_a else a_info.shape
    n = b_info.shape[0] if trans_b else b_info.shape[1]
    if output.size == 0:
        return Lowering()
    if k == 0:
        raise Unsupported("Gemm over an empty dimension")
    a_at = f"k * {m}u + m" if trans_a else f"m * {k}u + k"
    b_at = f"n * {k}u + k" if trans_b else f"k * {n}u + n"
    declarations = [storage(0, "a", a_info.dtype), storage(1, "b", b_info.dtype)]
    bindings = [Binding("input", 0), Binding("input", 1)]
    value = f"{literal(alpha)} * value"
    if c_info is not None and beta != 0.0:
        declarations.append(storage(2, "bias", c_info.dtype))
        bindings.append(Binding("input", 2))
        bias_at = broadcast_index(f"(m * {n}u + n)", c_info.shape, (m, n))
        value += f" + {literal(beta)} * {load('bias', bias_at, c_info.dtype)}"
    declarations.append(storage(len(declarations), "c", output.dtype, write=True))
    bindings.append(Binding("output", 0))
    after = epilogue_code(epilogue, first_binding=len(bindings))
    bindings.extend(after.bindings)
    dtypes: list[np.dtype[Any]] = [a_info.dtype, b_info.dtype, output.dtype]
    dtypes += input_dtypes(epilogue)
    problem = Gemm(
        batch=1,
        m=m,
        n=n,
        k=k,
        a_along_k=not trans_a,
        b_along_k=trans_b,
        declarations=enable_f16(*dtypes) + "\n".join(declarations) + "\n" + after.declarations,
        functions=f"""
fn load_a(batch: u32, m: u32, k: u32) -> f32 {{ return {load("a", a_at, a_info.dtype)}; }}
fn load_b(batch: u32, k: u32, n: u32) -> f32 {{ return {load("b", b_at, b_info.dtype)}; }}
fn store_c(batch: u32, m: u32, n: u32, value: f32) {{
    let at = m * {n}u + n;
    let v = {_activated(value, activation)};
{after.apply}    c[{after.store_at}] = {store(after.result, output.dtype)};
}}
{_activation_function(activation)}{after.functions}""",
    )
    return gemm_lowering(problem, tuple(bindings))


def _activated(value: str, activation: str) -> str:
    """WGSL of ``activation`` (of ``v``) applied to ``value``."""
    return value if activation == "v" else f"activate({value})"


def _activation_function(activation: str) -> str:
    """``fn activate(v)`` for :func:`_activated` (and the math helpers it calls)."""
    if activation == "v":
        return ""
    return math_helpers(activation) + f"fn activate(v: f32) -> f32 {{ return {activation}; }}\n"


def lower_sibling_matmuls(
    a_info: TensorInfo,
    b_info: TensorInfo,
    bias_info: TensorInfo | None,
    parts: Sequence[tuple[TensorInfo, int, Epilogue | None]],
) -> Lowering:
    """Several MatMuls (or Gemms) of one A, as one GEMM: ``b_info`` is their B matrices side
    by side (``[K, N_0 + N_1 + ...]``, a Gemm's alpha and transB applied), ``bias_info`` their
    biases side by side (``[N_0 + N_1 + ...]``, a Gemm's beta applied; zeros for a MatMul),
    bound after B when given; ``parts[i]`` is (output ``i``, its N, its epilogue), and column
    ``n`` of the product goes to the part whose columns hold it, through that part's epilogue
    (and transposed store). BERT's Q, K and V projections read the same hidden
    states: one dispatch instead of three, and a product three times as wide, which fills more
    of a large GPU at batch 1 (128 x 2304 instead of three 128 x 768)."""
    if len(b_info.shape) != 2 or len(a_info.shape) < 2:
        raise Unsupported("sibling MatMuls need a 2-D B and an A of rank 2 or more")
    k, n_total = b_info.shape
    m = a_info.shape[-2]
    if a_info.shape[-1] != k or sum(n for _, n, _ in parts) != n_total:
        raise Unsupported(f"sibling MatMuls of {a_info.shape} and {b_info.shape}")
    batch = int(np.prod(a_info.shape[:-2], dtype=np.int64))
    outputs = [output for output, _, _ in parts]
    declarations = [storage(0, "a", a_info.dtype), storage(1, "b", b_info.dtype)]
    bindings = [Binding("input", 0), Binding("input", 1)]
    dtypes: list[np.dtype[Any]] = [a_info.dtype, b_info.dtype, *(o.dtype for o in outputs)]
    bias_term = ""
    if bias_info is not None:
        declarations.append(storage(2, "bias", bias_info.dtype))
        bindings.append(Binding("input", 2))
        dtypes.append(bias_info.dtype)
        bias_term = f" + {load('bias', 'n', bias_info.dtype)}"
    declarations += [
        storage(len(bindings) + i, f"c{i}", output.dtype, write=True)
        for i, output in enumerate(outputs)
    ]
    bindings += [Binding("output", i) for i in range(len(parts))]
    first = len(bindings)  # the epilogues' inputs are bound after the outputs
    stores, functions, branches = [], [], []
    offset = 0
    for i, (output, n, epilogue) in enumerate(parts):
        after = epilogue_code(epilogue, first, prefix=f"part{i}_")
        first += len(after.bindings)
        bindings.extend(after.bindings)
        declarations.append(after.declarations)
        functions.append(after.functions)
        dtypes += input_dtypes(epilogue)
        stores.append(
            f"fn store_part{i}(batch: u32, m: u32, n: u32, value: f32) {{\n"
            f"    let at = batch * {m * n}u + m * {n}u + n;\n"
            f"    let v = value;\n"
            f"{after.apply}    c{i}[{after.store_at}] = {store(after.result, output.dtype)};\n}}\n"
        )
        if i + 1 < len(parts):
            branches.append(
                f"    if (n < {offset + n}u) {{ store_part{i}(batch, m, n - {offset}u, value);"
                " return; }"
            )
        else:
            branches.append(f"    store_part{i}(batch, m, n - {offset}u, value);")
        offset += n
    helpers = "".join(functions)
    for source in MATH_FUNCTIONS.values():
        helpers = helpers.replace(source, "")
    problem = Gemm(
        batch=batch,
        m=m,
        n=n_total,
        k=k,
        a_along_k=True,
        b_along_k=False,
        declarations=enable_f16(*dtypes) + "\n".join(declarations) + "\n",
        functions=f"""
fn load_a(batch: u32, m: u32, k: u32) -> f32 {{
    return {load("a", f"batch * {m * k}u + m * {k}u + k", a_info.dtype)};
}}
fn load_b(batch: u32, k: u32, n: u32) -> f32 {{
    return {load("b", f"k * {n_total}u + n", b_info.dtype)};
}}
{"".join(stores)}
fn store_c(batch: u32, m: u32, n: u32, product: f32) {{
    let value = product{bias_term};
{chr(10).join(branches)}
}}
{math_helpers(helpers)}{helpers}""",
    )
    return gemm_lowering(problem, tuple(bindings))
