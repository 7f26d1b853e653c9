"""The tiled GEMM template that MatMul, Gemm and Conv (as an implicit GEMM) lower to.

The template computes ``C[batch, m, n] = sum_k A(batch, m, k) * B(batch, k, n)`` with the
operands read through WGSL functions the caller writes (``load_a``, ``load_b``) and the result
written by ``store_c``: a MatMul reads plain rows, a Gemm transposed ones, a Conv gathers
input windows.

Each workgroup of 16x16 invocations computes a block of C (64x64, 32x32 or 16x16), one w x w
square per invocation (w = side / 16: 4, 2 or 1), staging side x 16 slices of A and B in
workgroup memory so that every value read from storage is used ``side`` times. The WGSL is
generated fully unrolled from Python, because the tile sizes are constants: the invocation's
square is w accumulators of ``vecw<f32>`` (one per row), the 16 steps over a staged slice are
written out (a vector of w values of A and one of B, then w vector FMAs each), and every
bounds check the sizes make unnecessary is left out. Nothing is a function-local array indexed
at run time: naga guards such indexes, and NVIDIA's compiler then keeps the array in local
memory instead of registers, which made the first version of this kernel ~10x slower than a
naive one on an H100.

Problems too small to fill a GPU with 64x64 blocks (a batch-1 ResNet's last stages: 49 pixels
by 512 channels) take 32x32 or 16x16 blocks instead, trading reuse for parallelism, and split K
across workgroups when blocks alone still leave it idle; a few rows of A (a batch-1 classifier)
take a thin kernel of one invocation per column.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gpux.runtime.wgpu.kernel import (
    MAX_WORKGROUPS_PER_DIMENSION,
    Binding,
    Dispatch,
    Lowering,
    Unsupported,
    workgroups_for,
)
from gpux.runtime.wgpu.kernels._wgsl import WORKGROUP, flat_main

TILE_K = 16
THREADS = 16  # per side: 16x16 invocations, each computing (side/16)^2 outputs
TILES = (64, 32, 16)  # block sides, preferred first
# Workgroups enough to occupy a large GPU (an H100 has 132 SMs); fewer and the block shrinks.
ENOUGH_WORKGROUPS = 256
MIN_SPLIT_K = 256  # no part of a split K shorter than this
MAX_SPLITS = 8
# Rows of a staged slice hold THREADS vectors plus one, so that the 16 invocations storing
# one column of a slice (one k each) hit distinct workgroup-memory banks.
ROW = THREADS + 1
COMPONENTS = "xyzw"


@dataclass(frozen=True)
class Gemm:
    """A GEMM problem: sizes, and the WGSL declarations and functions that read A and B and
    write C (``load_a(batch, m, k) -> f32``, ``load_b(batch, k, n) -> f32``,
    ``store_c(batch, m, n, value: f32)``), called only with in-range indices.

    ``a_along_k`` and ``b_along_k`` say whether consecutive k of A (of B) lie next to each
    other in memory (A row-major, B transposed): the invocations that stage a slice then walk
    k, so that neighbours read neighbouring addresses."""

    batch: int
    m: int
    n: int
    k: int
    declarations: str
    functions: str
    a_along_k: bool = True
    b_along_k: bool = False


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


def _vector(width: int) -> str:
    return "f32" if width == 1 else f"vec{width}<f32>"


def _component(name: str, width: int, index: int) -> str:
    return name if width == 1 else f"{name}.{COMPONENTS[index]}"


def _guarded(statement: str, conditions: list[str]) -> str:
    return f"if ({' && '.join(conditions)}) {{ {statement} }}" if conditions else statement


def _vector_axis(along_k: bool) -> str:
    """The invocation axis that picks which rows of A (columns of B) an invocation stages; the
    other walks k."""
    return "y" if along_k else "x"


def _stage(operand: str, width: int, along_k: bool, check_k: bool, check_edge: bool) -> str:
    """WGSL staging this step's slice of ``operand`` ("a" or "b"): each invocation reads
    ``width`` consecutive rows of A (columns of B) at one k and stores them as one vector at
    ``tile_<operand>[k][vector]``."""
    # Which invocation axis walks k: the one whose neighbours are neighbours in memory
    # (local.x: consecutive invocations of a subgroup).
    vector_axis = _vector_axis(along_k)
    k_axis = "x" if vector_axis == "y" else "y"
    first = f"{operand}_first"  # the first row of A (column of B) this invocation reads
    lines = [
        f"        let {operand}_k = k0 + local.{k_axis};",
        f"        var {operand}_value = {_vector(width)}(0.0);",
    ]
    for index in range(width):
        conditions = [f"{operand}_k < k_end"] if check_k else []
        if check_edge:
            conditions.append(f"{first}_ok{index}")
        call = (
            f"load_a(batch, {first} + {index}u, a_k)"
            if operand == "a"
            else f"load_b(batch, b_k, {first} + {index}u)"
        )
        statement = f"{_component(f'{operand}_value', width, index)} = {call};"
        lines.append("        " + _guarded(statement, conditions))
    lines.append(f"        tile_{operand}[local.{k_axis}][local.{vector_axis}] = {operand}_value;")
    return "\n".join(lines)


def gemm_shader(problem: Gemm, side: int, splits: int = 1) -> str:
    """The tiled kernel; with ``splits`` > 1 each workgroup sums one part of K into the
    ``partial`` scratch buffer instead of calling ``store_c``."""
    width = side // THREADS
    vector = _vector(width)
    per_part = -(-problem.k // splits)
    chunk = -(-per_part // TILE_K) * TILE_K  # whole K steps; a last part may be empty
    # Sizes are constants: a check whose answer the sizes fix is not written.
    check_m, check_n, check_k = problem.m % side, problem.n % side, problem.k % TILE_K
    if splits > 1:
        where = f"""    let batch = group.z / {splits}u;
    let part = group.z % {splits}u;
    let k_begin = part * {chunk}u;
    let k_end = min({problem.k}u, k_begin + {chunk}u);"""
        at = f"((part * {problem.batch}u + batch) * {problem.m}u + {{m}}) * {problem.n}u + {{n}}"
        keep = f"partial[{at}] = {{value}};"
    else:
        where = f"""    let batch = group.z;
    let k_begin = 0u;
    let k_end = {problem.k}u;"""
        keep = "store_c(batch, {m}, {n}, {value});"
    edges = [
        f"    let {operand}_first_ok{index} = {operand}_first + {index}u < {size}u;"
        for operand, size, check in (("a", problem.m, check_m), ("b", problem.n, check_n))
        if check
        for index in range(width)
    ]
    steps = []
    for kk in range(TILE_K):
        fmas = " ".join(
            f"acc{i} = fma({vector}({_component('a', width, i)}), b, acc{i});" for i in range(width)
        )
        steps.append(
            f"        {{ let a = tile_a[{kk}][local.y]; let b = tile_b[{kk}][local.x]; {fmas} }}"
        )
    stores = []
    for i in range(width):
        for j in range(width):
            conditions = [f"row{i} < {problem.m}u"] if check_m else []
            conditions += [f"column{j} < {problem.n}u"] if check_n else []
            value = _component(f"acc{i}", width, j)
            stores.append(
                "    " + _guarded(keep.format(m=f"row{i}", n=f"column{j}", value=value), conditions)
            )
    return f"""{problem.declarations}
{problem.functions}
var<workgroup> tile_a: array<array<{vector}, {ROW}>, {TILE_K}>;
var<workgroup> tile_b: array<array<{vector}, {ROW}>, {TILE_K}>;

@compute @workgroup_size({THREADS}, {THREADS})
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {{
{where}
    let block_m = group.y * {side}u;
    let block_n = group.x * {side}u;
    let a_first = block_m + local.{_vector_axis(problem.a_along_k)} * {width}u;
    let b_first = block_n + local.{_vector_axis(problem.b_along_k)} * {width}u;
{chr(10).join(edges)}
{chr(10).join(f"    var acc{i} = {vector}(0.0);" for i in range(width))}
    for (var k0 = k_begin; k0 < k_end; k0 += {TILE_K}u) {{
{_stage("a", width, problem.a_along_k, bool(check_k), bool(check_m))}
{_stage("b", width, problem.b_along_k, bool(check_k), bool(check_n))}
        workgroupBarrier();
{chr(10).join(steps)}
        workgroupBarrier();
    }}
    let m_first = block_m + local.y * {width}u;
    let n_first = block_n + local.x * {width}u;
{chr(10).join(f"    let row{i} = m_first + {i}u;" for i in range(width))}
{chr(10).join(f"    let column{j} = n_first + {j}u;" for j in range(width))}
{chr(10).join(stores)}
}}
"""


# At most this many rows of A take the thin kernel: a batch-1 classifier (1 x 2048 x 1000) or
# BERT's pooler would leave 15 of 16 rows of every block idle.
THIN_ROWS = 4
THIN_WORKGROUP = 64


def thin_gemm_shader(problem: Gemm) -> str:
    """One invocation per column of C, computing its (at most THIN_ROWS) rows: B is read once,
    A's few rows are shared by every invocation through the cache."""
    rows = range(problem.m)
    return f"""{problem.declarations}
{problem.functions}
@compute @workgroup_size({THIN_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) group: vec3<u32>) {{
    let n = gid.x;
    let batch = group.z;
    if (n >= {problem.n}u) {{ return; }}
{chr(10).join(f"    var acc{m} = 0.0;" for m in rows)}
    for (var k = 0u; k < {problem.k}u; k++) {{
        let b = load_b(batch, k, n);
{chr(10).join(f"        acc{m} = fma(load_a(batch, {m}u, k), b, acc{m});" for m in rows)}
    }}
{chr(10).join(f"    store_c(batch, {m}u, n, acc{m});" for m in rows)}
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
    split = replace(problem, declarations=problem.declarations + partial)
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
