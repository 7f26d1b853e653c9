"""MatMul and Gemm on one tiled GEMM template, which Conv reuses as an implicit GEMM.

The template computes ``C[batch, m, n] = sum_k A(batch, m, k) * B(batch, k, n)`` with the
operands read through WGSL functions the caller writes (``load_a``, ``load_b``) and the result
written by ``store_c``: a MatMul reads plain rows, a Gemm transposed ones, a Conv gathers
input windows. Each workgroup of 16x16 invocations computes a 64x64 block of C, 4x4 per
invocation, staging 64x16 slices of A and B in workgroup memory so that every value read from
storage is used 64 times. Problems too small to fill a GPU with 64x64 blocks (a batch-1 ResNet's
last stages: 49 pixels by 512 channels) take 32x32 or 16x16 blocks instead, trading reuse for
parallelism.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gpux.runtime.wgpu.kernel import (
    MAX_WORKGROUPS_PER_DIMENSION,
    Binding,
    Dispatch,
    Lowering,
    NodeContext,
    Unsupported,
    kernel,
    workgroups_for,
)
from gpux.runtime.wgpu.kernels._wgsl import (
    FLOATS,
    WORKGROUP,
    broadcast_index,
    enable_f16,
    flat_main,
    literal,
    load,
    math_helpers,
    require_dtypes,
    storage,
    store,
)

TILE_K = 16
THREADS = 16  # per side: 16x16 invocations, each computing (tile/16)^2 outputs
TILES = (64, 32, 16)  # block sides, preferred first
# Workgroups enough to occupy a large GPU (an H100 has 132 SMs); fewer and the block shrinks.
ENOUGH_WORKGROUPS = 256
MIN_SPLIT_K = 256  # no part of a split K shorter than this
MAX_SPLITS = 8


@dataclass(frozen=True)
class Gemm:
    """A GEMM problem: sizes, and the WGSL declarations and functions that read A and B and
    write C (``load_a(batch, m, k) -> f32``, ``load_b(batch, k, n) -> f32``,
    ``store_c(batch, m, n, value: f32)``), called only with in-range indices."""

    batch: int
    m: int
    n: int
    k: int
    declarations: str
    functions: str


def block_side(problem: Gemm) -> int:
    """The largest block side that still gives ENOUGH_WORKGROUPS, else the smallest."""
    for side in TILES:
        groups = -(-problem.m // side) * -(-problem.n // side) * problem.batch
        if groups >= ENOUGH_WORKGROUPS:
            return side
    return TILES[-1]


def split_count(problem: Gemm, side: int) -> int:
    """How many parts K is cut into (split-K) when blocks alone cannot fill the GPU: a
    batch-1 ResNet's last convolutions (512 x 49 outputs, K = 4608) would otherwise loop over
    K in 128 workgroups. Parts are summed by a second dispatch."""
    groups = -(-problem.m // side) * -(-problem.n // side) * problem.batch
    if groups >= ENOUGH_WORKGROUPS or problem.k < 2 * MIN_SPLIT_K:
        return 1
    wanted = -(-ENOUGH_WORKGROUPS // groups)
    splits = max(1, min(wanted, problem.k // MIN_SPLIT_K, MAX_SPLITS))
    while splits > 1 and problem.batch * splits > MAX_WORKGROUPS_PER_DIMENSION:
        splits -= 1
    return splits


def gemm_shader(problem: Gemm, side: int, splits: int = 1) -> str:
    """The tiled kernel; with ``splits`` > 1 each workgroup sums one part of K into the
    ``partial`` scratch buffer instead of calling ``store_c``."""
    TILE_M = TILE_N = side
    pm = pn = side // THREADS
    loads_a = TILE_M * TILE_K // (THREADS * THREADS)
    loads_b = TILE_K * TILE_N // (THREADS * THREADS)
    per_part = -(-problem.k // splits)
    chunk = -(-per_part // TILE_K) * TILE_K  # whole K steps; a last part may be empty
    if splits > 1:
        where = f"""    let batch = group.z / {splits}u;
    let part = group.z % {splits}u;
    let k_begin = part * {chunk}u;
    let k_end = min({problem.k}u, k_begin + {chunk}u);"""
        keep = f"partial[((part * {problem.batch}u + batch) * {problem.m}u + m) * {problem.n}u + n] = acc[i * {pn}u + j];"
    else:
        where = f"""    let batch = group.z;
    let k_begin = 0u;
    let k_end = {problem.k}u;"""
        keep = f"store_c(batch, m, n, acc[i * {pn}u + j]);"
    return f"""{problem.declarations}
{problem.functions}
var<workgroup> tile_a: array<f32, {TILE_K * TILE_M}>;
var<workgroup> tile_b: array<f32, {TILE_K * TILE_N}>;

@compute @workgroup_size({THREADS}, {THREADS})
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>,
        @builtin(local_invocation_index) thread: u32) {{
{where}
    let m0 = group.y * {TILE_M}u;
    let n0 = group.x * {TILE_N}u;
    var acc: array<f32, {pm * pn}>;
    for (var k0 = k_begin; k0 < k_end; k0 += {TILE_K}u) {{
        for (var e = 0u; e < {loads_a}u; e++) {{
            let index = thread + e * {THREADS * THREADS}u;
            let mm = index / {TILE_K}u;
            let kk = index % {TILE_K}u;
            var value = 0.0;
            if (m0 + mm < {problem.m}u && k0 + kk < k_end) {{
                value = load_a(batch, m0 + mm, k0 + kk);
            }}
            tile_a[kk * {TILE_M}u + mm] = value;
        }}
        for (var e = 0u; e < {loads_b}u; e++) {{
            let index = thread + e * {THREADS * THREADS}u;
            let kk = index / {TILE_N}u;
            let nn = index % {TILE_N}u;
            var value = 0.0;
            if (n0 + nn < {problem.n}u && k0 + kk < k_end) {{
                value = load_b(batch, k0 + kk, n0 + nn);
            }}
            tile_b[kk * {TILE_N}u + nn] = value;
        }}
        workgroupBarrier();
        for (var kk = 0u; kk < {TILE_K}u; kk++) {{
            var a: array<f32, {pm}>;
            var b: array<f32, {pn}>;
            for (var i = 0u; i < {pm}u; i++) {{ a[i] = tile_a[kk * {TILE_M}u + local.y + i * {THREADS}u]; }}
            for (var j = 0u; j < {pn}u; j++) {{ b[j] = tile_b[kk * {TILE_N}u + local.x + j * {THREADS}u]; }}
            for (var i = 0u; i < {pm}u; i++) {{
                for (var j = 0u; j < {pn}u; j++) {{
                    acc[i * {pn}u + j] = fma(a[i], b[j], acc[i * {pn}u + j]);
                }}
            }}
        }}
        workgroupBarrier();
    }}
    for (var i = 0u; i < {pm}u; i++) {{
        let m = m0 + local.y + i * {THREADS}u;
        for (var j = 0u; j < {pn}u; j++) {{
            let n = n0 + local.x + j * {THREADS}u;
            if (m < {problem.m}u && n < {problem.n}u) {{
                {keep}
            }}
        }}
    }}
}}
"""


# At most this many rows of A take the thin kernel: a batch-1 classifier (1 x 2048 x 1000) or
# BERT's pooler would leave 15 of 16 rows of every block idle.
THIN_ROWS = 4
THIN_WORKGROUP = 64


def thin_gemm_shader(problem: Gemm) -> str:
    """One invocation per column of C, computing its (at most THIN_ROWS) rows: B is read once,
    A's few rows are shared by every invocation through the cache."""
    rows = problem.m
    return f"""{problem.declarations}
{problem.functions}
@compute @workgroup_size({THIN_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) group: vec3<u32>) {{
    let n = gid.x;
    let batch = group.z;
    if (n >= {problem.n}u) {{ return; }}
    var acc: array<f32, {rows}>;
    for (var k = 0u; k < {problem.k}u; k++) {{
        let b = load_b(batch, k, n);
        for (var m = 0u; m < {rows}u; m++) {{ acc[m] = fma(load_a(batch, m, k), b, acc[m]); }}
    }}
    for (var m = 0u; m < {rows}u; m++) {{ store_c(batch, m, n, acc[m]); }}
}}
"""


def gemm_lowering(
    problem: Gemm, bindings: tuple[Binding, ...], side: int | None = None
) -> Lowering:
    """The dispatches of ``problem`` with ``bindings`` (what its declarations bind): the thin
    kernel for a few rows, else blocks of ``side`` (chosen by size unless given), with
    split-K and a scratch buffer of partial sums when blocks alone leave the GPU idle."""
    if side is None and problem.m <= THIN_ROWS:
        groups = (-(-problem.n // THIN_WORKGROUP), 1, problem.batch)
        _check_groups(groups)
        return Lowering((Dispatch(thin_gemm_shader(problem), bindings, groups),))
    side = side or block_side(problem)
    splits = split_count(problem, side)
    groups = (-(-problem.n // side), -(-problem.m // side), problem.batch * splits)
    _check_groups(groups)
    if splits == 1:
        return Lowering((Dispatch(gemm_shader(problem, side), bindings, groups),))
    partial = (
        f"\n@group(0) @binding({len(bindings)}) var<storage, read_write> partial: array<f32>;\n"
    )
    split = Gemm(
        problem.batch,
        problem.m,
        problem.n,
        problem.k,
        problem.declarations + partial,
        problem.functions,
    )
    outputs = problem.batch * problem.m * problem.n
    total = f"""    var total = 0.0;
    for (var part = 0u; part < {splits}u; part++) {{ total += partial[part * {outputs}u + i]; }}
    store_c(i / {problem.m * problem.n}u, (i / {problem.n}u) % {problem.m}u, i % {problem.n}u, total);"""
    reduce = split.declarations + split.functions + flat_main(outputs, total)
    with_scratch = (*bindings, Binding("scratch", 0))
    return Lowering(
        (
            Dispatch(gemm_shader(split, side, splits), with_scratch, groups),
            Dispatch(reduce, with_scratch, workgroups_for(outputs, WORKGROUP)),
        ),
        scratch=(4 * splits * outputs,),
    )


def _check_groups(groups: tuple[int, int, int]) -> None:
    if max(groups) > MAX_WORKGROUPS_PER_DIMENSION:
        raise Unsupported(f"a GEMM of {groups} workgroups passes the per-dimension limit")


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
    context: NodeContext, alpha: float = 1.0, trans_a: bool = False, trans_b: bool = False
) -> Lowering:
    """MatMul of ``alpha * A @ B``, A and B optionally transposed in their last two axes
    (what com.microsoft.FusedMatMul adds)."""
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
    a_at = f"k * {m}u + m" if trans_a and len(a_info.shape) >= 2 else f"m * {k}u + k"
    b_at = f"n * {k}u + k" if trans_b and len(b_info.shape) >= 2 else f"k * {n}u + n"
    scaled = "value" if alpha == 1.0 else f"{literal(alpha)} * value"
    problem = Gemm(
        batch=batch_count,
        m=m,
        n=n,
        k=k,
        declarations=enable_f16(a_info.dtype, b_info.dtype, output.dtype)
        + "\n".join(
            [
                storage(0, "a", a_info.dtype),
                storage(1, "b", b_info.dtype),
                storage(2, "c", output.dtype, write=True),
            ]
        ),
        functions=f"""
fn load_a(batch: u32, m: u32, k: u32) -> f32 {{
    return {load("a", f"{a_index} * {m * k}u + {a_at}", a_info.dtype)};
}}
fn load_b(batch: u32, k: u32, n: u32) -> f32 {{
    return {load("b", f"{b_index} * {k * n}u + {b_at}", b_info.dtype)};
}}
fn store_c(batch: u32, m: u32, n: u32, value: f32) {{
    c[batch * {m * n}u + m * {n}u + n] = {store(scaled, output.dtype)};
}}
""",
    )
    bindings = (Binding("input", 0), Binding("input", 1), Binding("output", 0))
    return gemm_lowering(problem, bindings)


@kernel("Gemm")
def gemm(context: NodeContext) -> Lowering:
    return lower_gemm(context)


def lower_gemm(context: NodeContext, activation: str = "v") -> Lowering:
    """Gemm, then ``activation`` (WGSL of the f32 value ``v``): com.microsoft.FusedGemm."""
    require_dtypes(context, FLOATS)
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
    dtypes: list[np.dtype[Any]] = [a_info.dtype, b_info.dtype, output.dtype]
    problem = Gemm(
        batch=1,
        m=m,
        n=n,
        k=k,
        declarations=enable_f16(*dtypes) + "\n".join(declarations),
        functions=f"""
fn load_a(batch: u32, m: u32, k: u32) -> f32 {{ return {load("a", a_at, a_info.dtype)}; }}
fn load_b(batch: u32, k: u32, n: u32) -> f32 {{ return {load("b", b_at, b_info.dtype)}; }}
fn store_c(batch: u32, m: u32, n: u32, value: f32) {{
    let v = {value};
    c[m * {n}u + n] = {store(activation, output.dtype)};
}}
{math_helpers(activation)}""",
    )
    return gemm_lowering(problem, tuple(bindings))
