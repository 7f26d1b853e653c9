"""The tiled GEMM template that MatMul, Gemm and Conv (as an implicit GEMM) lower to.

The template computes ``C[batch, m, n] = sum_k A(batch, m, k) * B(batch, k, n)`` with the
operands read through WGSL functions the caller writes (``load_a``, ``load_b``) and the result
written by ``store_c``: a MatMul reads plain rows, a Gemm transposed ones, a Conv gathers
input windows.

Each workgroup of 16x16 invocations computes a block of C (rows by columns, each side 128, 64,
32 or 16 in TILES, at most MAX_ASPECT to one: ``block_shape``), staging rows x 16 and 16 x
columns slices of A and B in workgroup memory so that every value read from storage is used
as many times as the block is wide (tall). The WGSL is generated fully unrolled from Python,
since the sizes are constants:

- an invocation's rows/16 rows by columns/16 columns are held in ``vec4<f32>``
  accumulators (``vec2`` for 32 columns, ``f32`` for 16), one per row and run of 4 columns:
  4x4 in a 64x64 block, 8x8 (two runs 64 apart each way) in 128x128, 2x1 in 32x16;
- each of the 16 steps over a staged slice is written out: one vector read of A's rows and one
  of B's columns per run, then one vector FMA per row and run;
- staging reads, per invocation, a run of rows of A (columns of B) at one k and stores it as
  one vector; the invocations along ``local.x`` walk whichever axis is contiguous in memory
  (``Gemm.a_along_k`` / ``b_along_k``), and the slices' rows are padded by one vector so that
  those stores hit distinct banks;
- a bounds check whose answer the sizes fix (whole blocks, whole K steps) is not written.

Nothing is a function-local array indexed at run time. The first version kept its square in
``array<f32, 16>`` indexed in loops; naga guards such indexes, which likely made NVIDIA's
compiler keep the array in local memory: that version ran ~10x slower on an H100 than a naive
one-invocation-per-output kernel (``benchmarks/wgpu_gemm.py`` measures both).

Problems too small to fill a GPU with 64x64 blocks (a batch-1 ResNet's last stages: 49 pixels
by 512 channels) take smaller blocks instead, trading reuse for parallelism, and split K
across workgroups when blocks alone still leave it idle (a second dispatch sums the parts); a
few rows of A (a batch-1 classifier) take a thin kernel of one invocation per column.
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
# Block sides the template writes. 128 (8x8 per invocation, as two vec4 runs each way) joined
# the choice after benchmarks/wgpu_gemm.py on an H100 (2026-12-06): MatMul 2048^3 0.452 ms
# against 0.611 with 64-blocks, BERT-base b32's 4096x768 @ 768x3072 0.535 against 0.693; the
# problems too small for 256 of its blocks still take 64, 32 or 16 (equal times).
SIDES = (128, 64, 32, 16)
TILES = SIDES  # block sides chosen from, preferred first
# Blocks may be rows x columns of two TILES sides up to this many times apart; 1: squares only.
# Like TILES, a module setting that benchmarks/wgpu_gemm.py varies (--aspect) to measure.
MAX_ASPECT = 4
# Rectangles are for the problems that 64x64 blocks leave idle (batch 1): none is as large as
# one, so the large problems keep the squares measured on the H100.
MAX_RECTANGLE = 64 * 32
# Workgroups enough to occupy a large GPU (an H100 has 132 SMs); fewer and the block shrinks.
ENOUGH_WORKGROUPS = 256
MIN_SPLIT_K = 256  # no part of a split K shorter than this
MAX_SPLITS = 8
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


Block = tuple[int, int]  # rows (of A and C) by columns (of B and C)


def blocks() -> list[Block]:
    """The block shapes chosen from: squares of TILES sides, and rectangles of two of them at
    most MAX_ASPECT to one and MAX_RECTANGLE outputs."""
    return [
        (rows, columns)
        for rows in TILES
        for columns in TILES
        if rows == columns
        or (
            max(rows, columns) <= MAX_ASPECT * min(rows, columns)
            and rows * columns <= MAX_RECTANGLE
        )
    ]


def as_block(side: int | Block) -> Block:
    return (side, side) if isinstance(side, int) else side


def workgroup_count(problem: Gemm, side: int | Block) -> int:
    """Workgroups of one part of K: the blocks that cover C, per matrix of the batch."""
    rows, columns = as_block(side)
    return -(-problem.m // rows) * -(-problem.n // columns) * problem.batch


def block_shape(problem: Gemm) -> Block:
    """The block of the most outputs (the most reuse of each value staged) that still gives
    ENOUGH_WORKGROUPS; among those, the one computing the fewest outputs past C's edges, then
    the squarer, then the taller (a Conv's B is a gather of input windows, the dearer read, and
    a taller block reuses it more); the smallest square when none gives enough. A rectangle wins
    where C is far from square: a batch-1 ResNet's first stage (64 or 256 channels by 3136
    pixels) takes 32x16 or 64x32 blocks where squares give 16x16 or 32x32. With MAX_ASPECT 1,
    squares only (the choice before rectangles)."""
    enough = [block for block in blocks() if workgroup_count(problem, block) >= ENOUGH_WORKGROUPS]
    if not enough:
        return (TILES[-1], TILES[-1])

    def merit(block: Block) -> tuple[int, int, float, int]:
        rows, columns = block
        padded = -(-problem.m // rows) * rows * -(-problem.n // columns) * columns
        return (rows * columns, -padded, -max(block) / min(block), rows)

    return max(enough, key=merit)


def split_count(problem: Gemm, side: int | Block) -> int:
    """How many parts K is cut into (split-K) when blocks alone cannot fill the GPU: a
    batch-1 ResNet's last convolutions (512 x 49 outputs, K = 4608) would otherwise loop over
    K in 128 workgroups. Parts are summed by a second dispatch."""
    groups = workgroup_count(problem, side)
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


def _shape(side: int) -> tuple[int, int]:
    """The vector width w and the vectors per axis v of an invocation's part of a block's
    ``side``: its rows (columns) are v runs of w, 16 * w apart (so that the 16 invocations
    of a row read neighbouring vectors of a staged slice)."""
    width = min(side // THREADS, 4)
    return width, side // (THREADS * width)


def _stage(operand: str, side: int, along_k: bool, check_k: bool, edge: int | None) -> str:
    """WGSL staging this step's slice of ``operand`` ("a" or "b"): each invocation reads
    runs of w consecutive rows of A (columns of B) at one k, each stored as one vector at
    ``tile_<operand>[k][vector]``; ``edge`` is the row (column) count when the last block
    is ragged."""
    width, vectors = _shape(side)
    # The axis that walks k: local.x (consecutive invocations of a subgroup) when consecutive
    # k are neighbours in memory, so that neighbours read neighbouring addresses.
    k_axis, vector_axis = ("x", "y") if along_k else ("y", "x")
    lines = [f"        let {operand}_k = k0 + local.{k_axis};"]
    for v in range(vectors):
        vector = f"local.{vector_axis} + {THREADS * v}u"
        first = f"{operand}_first{v}"
        value = f"{operand}_value{v}"
        lines += [
            f"        let {first} = {operand}_block + ({vector}) * {width}u;",
            f"        var {value} = {_vector(width)}(0.0);",
        ]
        for index in range(width):
            conditions = [f"{operand}_k < k_end"] if check_k else []
            if edge is not None:
                conditions.append(f"{first} + {index}u < {edge}u")
            call = (
                f"load_a(batch, {first} + {index}u, a_k)"
                if operand == "a"
                else f"load_b(batch, b_k, {first} + {index}u)"
            )
            statement = f"{_component(value, width, index)} = {call};"
            lines.append("        " + _guarded(statement, conditions))
        lines.append(f"        tile_{operand}[local.{k_axis}][{vector}] = {value};")
    return "\n".join(lines)


def _step(kk: int, block: Block) -> str:
    """One of the unrolled steps over a staged slice: the invocation's vectors of A and of B
    at ``kk``, then one vector FMA per row and vector of columns."""
    (width_a, vectors_a), (width_b, vectors_b) = _shape(block[0]), _shape(block[1])
    reads = [f"let a{v} = tile_a[{kk}][local.y + {THREADS * v}u];" for v in range(vectors_a)]
    reads += [f"let b{v} = tile_b[{kk}][local.x + {THREADS * v}u];" for v in range(vectors_b)]
    fmas = [
        f"acc{va * width_a + i}_{vb} = fma({_vector(width_b)}"
        f"({_component(f'a{va}', width_a, i)}), b{vb}, acc{va * width_a + i}_{vb});"
        for va in range(vectors_a)
        for i in range(width_a)
        for vb in range(vectors_b)
    ]
    return "        { " + " ".join(reads + fmas) + " }"


def gemm_shader(problem: Gemm, side: int | Block, splits: int = 1) -> str:
    """The tiled kernel for blocks of ``side`` (a square's side, or rows by columns); with
    ``splits`` > 1 each workgroup sums one part of K into the ``partial`` scratch buffer
    instead of calling ``store_c``."""
    rows, columns = block = as_block(side)
    (width_a, vectors_a), (width_b, vectors_b) = _shape(rows), _shape(columns)
    per_part = -(-problem.k // splits)
    chunk = -(-per_part // TILE_K) * TILE_K  # whole K steps; a last part may be empty
    # Sizes are constants: a check whose answer the sizes fix is not written.
    check_m, check_n, check_k = problem.m % rows, problem.n % columns, problem.k % TILE_K
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
    # The invocation's rows, and its columns as vectors of width_b.
    row_count, column_count = vectors_a * width_a, vectors_b * width_b
    accumulators = [
        f"    var acc{r}_{vb} = {_vector(width_b)}(0.0);"
        for r in range(row_count)
        for vb in range(vectors_b)
    ]
    positions = [
        f"    let row{v * width_a + i} = a_block + (local.y + {THREADS * v}u) * {width_a}u + {i}u;"
        for v in range(vectors_a)
        for i in range(width_a)
    ] + [
        f"    let column{v * width_b + j} = b_block + (local.x + {THREADS * v}u) * {width_b}u"
        f" + {j}u;"
        for v in range(vectors_b)
        for j in range(width_b)
    ]
    stores = []
    for r in range(row_count):
        for c in range(column_count):
            conditions = [f"row{r} < {problem.m}u"] if check_m else []
            conditions += [f"column{c} < {problem.n}u"] if check_n else []
            value = _component(f"acc{r}_{c // width_b}", width_b, c % width_b)
            statement = keep.format(m=f"row{r}", n=f"column{c}", value=value)
            stores.append("    " + _guarded(statement, conditions))
    lines = "\n".join
    return f"""{problem.declarations}
{problem.functions}
var<workgroup> tile_a: array<array<{_vector(width_a)}, {THREADS * vectors_a + 1}>, {TILE_K}>;
var<workgroup> tile_b: array<array<{_vector(width_b)}, {THREADS * vectors_b + 1}>, {TILE_K}>;

@compute @workgroup_size({THREADS}, {THREADS})
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {{
{where}
    let a_block = group.y * {rows}u;
    let b_block = group.x * {columns}u;
{lines(accumulators)}
    for (var k0 = k_begin; k0 < k_end; k0 += {TILE_K}u) {{
{_stage("a", rows, problem.a_along_k, bool(check_k), problem.m if check_m else None)}
{_stage("b", columns, problem.b_along_k, bool(check_k), problem.n if check_n else None)}
        workgroupBarrier();
{lines(_step(kk, block) for kk in range(TILE_K))}
        workgroupBarrier();
    }}
{lines(positions)}
{lines(stores)}
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


# A tiling: None for the thin kernel, else a block and the parts K is cut into.
Tiling = tuple[Block, int] | None
# Lowerings offered to the executor's tuning (``Lowering.alternatives``), the heuristic's first.
MAX_CANDIDATES = 8
# The thin kernel is offered up to this many rows (it keeps one accumulator per row).
THIN_CANDIDATE_ROWS = 2 * THIN_ROWS


def heuristic_tiling(problem: Gemm) -> Tiling:
    """What the sizes alone choose: the thin kernel for a few rows, else ``block_shape`` with
    ``split_count``."""
    if problem.m <= THIN_ROWS:
        return None
    block = block_shape(problem)
    return (block, split_count(problem, block))


def candidate_tilings(problem: Gemm) -> list[Tiling]:
    """The tilings worth timing, at most MAX_CANDIDATES, the heuristic's first: the thin kernel
    for few rows, then every block of ``blocks()`` (largest first) not wider or taller than C
    rounded up to 16, with its split count, then the heuristic's block with K cut in twice as
    many parts. The heuristic is measured poor where reuse and parallelism pull apart: at
    batch 1, BERT-base's FFN down (128 x 3072 @ 3072 x 768) takes 16x16 blocks and reaches
    4.7 TFLOP/s on an H100 (docs/benchmarks.md)."""
    chosen = heuristic_tiling(problem)
    tilings: list[Tiling] = [chosen]
    if problem.m <= THIN_CANDIDATE_ROWS:
        tilings.append(None)
    rows_limit, columns_limit = -(-problem.m // TILE_K) * TILE_K, -(-problem.n // TILE_K) * TILE_K
    for block in blocks():
        if block[0] <= rows_limit and block[1] <= columns_limit:
            tilings.append((block, split_count(problem, block)))
    if chosen is not None:
        block, splits = chosen
        more = min(2 * splits, problem.k // MIN_SPLIT_K, MAX_SPLITS)
        if more > splits:
            tilings.append((block, more))
    unique = list(dict.fromkeys(tilings))
    return unique[:MAX_CANDIDATES]


def gemm_lowering(
    problem: Gemm, bindings: tuple[Binding, ...], side: int | Block | None = None
) -> Lowering:
    """The dispatches of ``problem`` with ``bindings`` (what its declarations bind): the thin
    kernel for a few rows, else blocks of ``side`` (chosen by size unless given), with
    split-K and a scratch buffer of partial sums when blocks alone leave the GPU idle. Without
    ``side``, the other tilings of ``candidate_tilings`` come as the lowering's
    ``alternatives`` (those whose grid passes the limits left out), for the executor to time."""
    if side is not None:
        return tiled_lowering(problem, bindings, (as_block(side), split_count(problem, side)))
    first, *others = candidate_tilings(problem)

    def alternatives() -> tuple[Lowering, ...]:
        offered = []
        for tiling in others:
            try:
                offered.append(tiled_lowering(problem, bindings, tiling))
            except Unsupported:
                continue
        return tuple(offered)

    chosen = tiled_lowering(problem, bindings, first)
    return replace(chosen, alternatives=alternatives if others else None)


def tiled_lowering(problem: Gemm, bindings: tuple[Binding, ...], tiling: Tiling) -> Lowering:
    """The dispatches of ``problem`` with ``tiling``: the thin kernel (None), or the tiled one
    with its blocks and, when K is cut in parts, a second dispatch summing them from scratch."""
    if tiling is None:
        groups = (-(-problem.n // THIN_WORKGROUP), 1, problem.batch)
        _check_groups(groups)
        return Lowering((Dispatch(thin_gemm_shader(problem), bindings, groups),))
    side, splits = tiling
    rows, columns = side
    groups = (-(-problem.n // columns), -(-problem.m // rows), problem.batch * splits)
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
