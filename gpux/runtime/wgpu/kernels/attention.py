"""Attention as one kernel: ``softmax(epilogue(alpha * Q @ K)) @ V`` for each row of queries,
the scores never leaving workgroup memory.

A transformer's attention exports as a chain of nodes: the scores' MatMul (or ORT's FusedMatMul
with its scale and K transposed), a scale and a mask (Div, Add; a Where on torch's exports),
Softmax along the keys, sometimes a guard on the probabilities (IsNaN + Where), then the
MatMul with V and the Transpose that merges the heads. Lowered node by node that is three
dispatches or more per layer and two passes over a batch x heads x S x T tensor through
device memory; on BERT-base at batch 1 the two MatMuls took 2.11 ms of the 6.26 ms of GPU
time on an H100 (``docs/benchmarks.md``), 24 small batched GEMMs that fill few of its SMs.

``fusion.py`` finds the chain and hands it here with its elementwise parts as epilogues
(``epilogue.py``): ``scores`` applied to each score, ``probabilities`` to each probability,
``result`` to each output value, which it may also store transposed. One workgroup of
``THREADS`` invocations takes ``rows`` queries of one matrix of the batch:

1. stages their Q rows in workgroup memory;
2. computes their scores, each invocation a run of keys for every row (K read from storage
   once per workgroup, neighbouring invocations at neighbouring keys), applies ``scores`` and
   keeps them in workgroup memory;
3. takes each row's maximum and sum of exponentials with ``THREADS / rows`` invocations per
   row;
4. sums probabilities times V, each invocation a run of V's columns for every row, and
   stores each value through ``result``.

Rows of queries are chosen so that ``rows x (D + T)`` values fit WebGPU's guaranteed 16 KB of
workgroup memory; longer sequences (T above ~4000 at D = 64) are refused and keep their
separate kernels. Accumulators are WGSL ``let``/``var`` scalars unrolled from Python, never a
local array indexed at run time (see ``gemm.py`` for why).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gpux.runtime.wgpu.kernel import (
    MAX_WORKGROUPS_PER_DIMENSION,
    Binding,
    Dispatch,
    Lowering,
    TensorInfo,
    Unsupported,
)
from gpux.runtime.wgpu.kernels._wgsl import (
    FLOATS,
    MATH_FUNCTIONS,
    broadcast_index,
    enable_f16,
    literal,
    load,
    math_helpers,
    storage,
    store,
)
from gpux.runtime.wgpu.kernels.epilogue import (
    Epilogue,
    EpilogueCode,
    epilogue_code,
    input_dtypes,
)

THREADS = 64
# WebGPU guarantees 16 KB of workgroup memory: 4096 f32 values.
WORKGROUP_FLOATS = 4096
ROWS = (16, 8, 4, 2, 1)  # query rows per workgroup, preferred first
# Accumulators per invocation (rows x runs of keys, rows x runs of V's columns) past which
# the kernel would spill registers; fewer rows are taken instead.
MAX_ACCUMULATORS = 32
# Workgroups enough to occupy a large GPU (an H100 has 132 SMs), as in gemm.py.
ENOUGH_WORKGROUPS = 256
# Fewer rows than this only where more would not fit: each workgroup reads all of K and V.
MIN_ROWS = 4


@dataclass(frozen=True)
class Attention:
    """The problem: ``q`` [..., S, D], ``k`` [..., D, T] (``k_transposed``: [..., T, D]) and
    ``v`` [..., T, Dv], the fused node's inputs 0, 1 and 2, batches broadcasting into the
    scores' batch; ``output`` the node's output (``result``'s shape, or its transpose)."""

    q: TensorInfo
    k: TensorInfo
    v: TensorInfo
    output: TensorInfo
    alpha: float = 1.0
    k_transposed: bool = False
    scores: Epilogue | None = None
    probabilities: Epilogue | None = None
    result: Epilogue | None = None

    def sizes(self) -> tuple[tuple[int, ...], int, int, int, int]:
        """(batch shape, S, T, D, Dv), or Unsupported when the shapes do not chain."""
        shapes = (self.q.shape, self.k.shape, self.v.shape)
        if any(len(shape) < 2 for shape in shapes):
            raise Unsupported("attention over 1-D operands")
        s, d = self.q.shape[-2:]
        d_k, t = self.k.shape[-2:][::-1] if self.k_transposed else self.k.shape[-2:]
        t_v, dv = self.v.shape[-2:]
        if d != d_k or t != t_v:
            raise Unsupported(f"attention of {shapes}")
        try:
            batch = tuple(np.broadcast_shapes(self.q.shape[:-2], self.k.shape[:-2]))
            if tuple(np.broadcast_shapes(batch, self.v.shape[:-2])) != batch:
                raise Unsupported("V's batch is larger than the scores'")
        except ValueError as exc:
            raise Unsupported(f"attention of {shapes}") from exc
        if min(s, t, d, dv) == 0:
            raise Unsupported("attention over an empty axis")
        return batch, s, t, d, dv


def fitting_rows(t: int, d: int, dv: int) -> list[int]:
    """The query rows per workgroup whose values fit workgroup memory and registers."""
    runs = max(-(-t // THREADS), -(-dv // THREADS))
    return [
        rows
        for rows in ROWS
        if rows * (d + t) + THREADS + rows <= WORKGROUP_FLOATS
        and rows * runs <= MAX_ACCUMULATORS
        and THREADS % rows == 0
    ]


def rows_per_workgroup(batch: int, s: int, t: int, d: int, dv: int) -> int:
    """The query rows each workgroup takes: the most that fit in workgroup memory and keep
    enough workgroups, no fewer than MIN_ROWS where those fit."""
    fitting = fitting_rows(t, d, dv)
    if not fitting:
        raise Unsupported(f"attention over {t} keys of {d} values passes workgroup memory")
    for rows in fitting:
        if batch * -(-s // rows) >= ENOUGH_WORKGROUPS:
            return rows
    return max(min(fitting), min(MIN_ROWS, fitting[0]))


def _function(code: EpilogueCode, name: str) -> str:
    """``fn name(v, at) -> f32``: the epilogue's value for ``v`` at flat index ``at``."""
    return f"fn {name}(v: f32, at: u32) -> f32 {{\n{code.apply}    return {code.result};\n}}\n"


def _helpers(*codes: EpilogueCode) -> str:
    """The epilogues' functions with each shared math helper (erf_f32...) written once."""
    functions = "".join(code.functions for code in codes)
    for source in MATH_FUNCTIONS.values():
        functions = functions.replace(source, "")
    return math_helpers(functions) + functions


def lower_attention(
    problem: Attention,
    features: frozenset[str] = frozenset(),
    rows: int | None = None,
    vector: bool = True,
) -> Lowering:
    """The kernel at ``rows`` queries per workgroup, with ``vector`` loads (``_main``). By
    default, the size heuristic's rows and vector loads, with every other count of rows that
    fits, each with and without vector loads, offered to the executor's tuning
    (``Lowering.alternatives``): on an H100, BERT-base's attention took 0.05 ms a layer at b1
    and 0.68 ms at b32 with scalar loads and the heuristic's 4 and 16 rows; which variant is
    fastest depends on the adapter."""
    if rows is not None:
        return _lowered(problem, features, rows, vector)
    batch_shape, s, t, d, dv = problem.sizes()
    heuristic = rows_per_workgroup(int(np.prod(batch_shape, dtype=np.int64)), s, t, d, dv)
    vectors = (True, False) if d % 4 == 0 or t % 4 == 0 else (False,)
    default = (heuristic, vector and vectors[0])
    chosen = _lowered(problem, features, *default)
    others = [
        (count, vectored)
        for count in fitting_rows(t, d, dv)
        for vectored in vectors
        if (count, vectored) != default
    ]

    def alternatives() -> tuple[Lowering, ...]:
        offered = []
        for count, vectored in others:
            try:
                offered.append(_lowered(problem, features, count, vectored))
            except Unsupported:
                continue  # its grid passes the per-dimension limit
        return tuple(offered)

    return replace(chosen, alternatives=alternatives if others else None)


def _lowered(problem: Attention, features: frozenset[str], rows: int, vector: bool) -> Lowering:
    batch_shape, s, t, d, dv = problem.sizes()
    for info in (problem.q, problem.k, problem.v, problem.output):
        if info.dtype not in FLOATS:
            raise Unsupported(f"attention on {info.dtype}")
        if info.dtype == np.dtype(np.float16) and "shader-f16" not in features:
            raise Unsupported("float16 needs the adapter feature shader-f16")
    for epilogue in (problem.scores, problem.probabilities):
        if epilogue is not None and epilogue.transpose is not None:
            raise Unsupported("a transposed score")
    batch = int(np.prod(batch_shape, dtype=np.int64))
    groups = (-(-s // rows), batch, 1)
    if max(groups) > MAX_WORKGROUPS_PER_DIMENSION:
        raise Unsupported(f"attention of {groups} workgroups passes the per-dimension limit")

    first = 4  # q, k, v, y
    scores = epilogue_code(problem.scores, first, prefix="score_")
    first += len(scores.bindings)
    probabilities = epilogue_code(problem.probabilities, first, prefix="probability_")
    first += len(probabilities.bindings)
    result = epilogue_code(problem.result, first, prefix="result_")
    bindings = (
        Binding("input", 0),
        Binding("input", 1),
        Binding("input", 2),
        Binding("output", 0),
        *scores.bindings,
        *probabilities.bindings,
        *result.bindings,
    )
    dtypes: list[np.dtype[Any]] = [problem.q.dtype, problem.k.dtype, problem.v.dtype]
    dtypes.append(problem.output.dtype)
    for epilogue in (problem.scores, problem.probabilities, problem.result):
        dtypes += input_dtypes(epilogue)

    q_batch = broadcast_index("batch", problem.q.shape[:-2], batch_shape)
    k_batch = broadcast_index("batch", problem.k.shape[:-2], batch_shape)
    v_batch = broadcast_index("batch", problem.v.shape[:-2], batch_shape)
    k_at = "key * {d}u + i" if problem.k_transposed else "i * {t}u + key"
    declarations = "\n".join(
        [
            storage(0, "q", problem.q.dtype),
            storage(1, "k", problem.k.dtype),
            storage(2, "v", problem.v.dtype),
            storage(3, "y", problem.output.dtype, write=True),
        ]
    )
    functions = f"""
fn load_q(batch: u32, row: u32, i: u32) -> f32 {{
    return {load("q", f"{q_batch} * {s * d}u + row * {d}u + i", problem.q.dtype)};
}}
fn load_k(batch: u32, i: u32, key: u32) -> f32 {{
    return {load("k", f"{k_batch} * {t * d}u + " + k_at.format(d=d, t=t), problem.k.dtype)};
}}
fn load_v(batch: u32, key: u32, column: u32) -> f32 {{
    return {load("v", f"{v_batch} * {t * dv}u + key * {dv}u + column", problem.v.dtype)};
}}
{_function(scores, "score")}{_function(probabilities, "probability")}
fn store_y(at: u32, value: f32) {{
    let v = value;
{result.apply}    y[{result.store_at}] = {store(result.result, problem.output.dtype)};
}}
{_helpers(scores, probabilities, result)}"""
    shader = (
        enable_f16(*dtypes)
        + declarations
        + "\n"
        + scores.declarations
        + probabilities.declarations
        + result.declarations
        + functions
        + _main(rows, s, t, d, dv, problem.alpha, problem.probabilities is not None, vector)
    )
    return Lowering((Dispatch(shader, bindings, groups),))


def _products(
    rows: int,
    index: str,
    count: int,
    staged: str,
    length: int,
    vectored: bool,
    load: str,
    total: str,
) -> list[str]:
    """WGSL for steps 2 (queries by K) and 4 (weights by V): invocation ``local`` takes
    ``{index}`` local, local + THREADS, ... below ``count`` (keys or V's columns), and adds,
    for each row ``r`` and run ``c``, ``staged``'s row ``r`` (``length`` values in workgroup
    memory) times the values ``load`` reads from storage (its ``{i}``: the position along
    ``length``, ``{at}``: the run's index, clamped in range) into ``{total}{r}_{c}``.
    ``vectored``: ``staged`` holds vec4s, and each load of it feeds a ``dot`` of four."""
    runs = -(-count // THREADS)
    lines = []
    for c in range(runs):
        lines.append(f"    let {index}{c} = local + {c * THREADS}u;")
        lines.append(f"    let {index}_at{c} = min({index}{c}, {count - 1}u);")
        for r in range(rows):
            lines.append(f"    var {total}{r}_{c} = 0.0;")

    def loaded(i: str, c: int) -> str:
        return load.format(i=i, at=f"{index}_at{c}")

    if vectored:
        lines += [
            f"    for (var quad = 0u; quad < {length // 4}u; quad++) {{",
            "        let i = quad * 4u;",
        ]
        for c in range(runs):
            loads = ", ".join(loaded(f"i + {j}u" if j else "i", c) for j in range(4))
            lines.append(f"        let from_storage{c} = vec4<f32>({loads});")
        for r in range(rows):
            lines.append(f"        let staged{r} = {staged}[{r * length // 4}u + quad];")
            for c in range(runs):
                lines.append(f"        {total}{r}_{c} += dot(staged{r}, from_storage{c});")
    else:
        lines.append(f"    for (var i = 0u; i < {length}u; i++) {{")
        for c in range(runs):
            lines.append(f"        let from_storage{c} = {loaded('i', c)};")
        for r in range(rows):
            lines.append(f"        let staged{r} = {staged}[{r * length}u + i];")
            for c in range(runs):
                lines.append(
                    f"        {total}{r}_{c} = fma(staged{r}, from_storage{c}, {total}{r}_{c});"
                )
    lines.append("    }")
    return lines


def _main(
    rows: int,
    s: int,
    t: int,
    d: int,
    dv: int,
    alpha: float,
    guarded: bool,
    vector: bool,
) -> str:
    """The entry point for ``rows`` queries per workgroup (see the module's steps). With
    ``vector``, the queries (where D is a multiple of 4) and the weights (where T is) are held
    in workgroup memory as ``vec4``s, so that steps 2 and 4 read four values per load and
    compute a ``dot`` of four: scalar, each multiply-add needs a workgroup-memory load of its
    own, which bounds the kernel by that memory's bandwidth."""
    per_row = THREADS // rows
    key_runs = -(-t // THREADS)
    column_runs = -(-dv // THREADS)
    vq = vector and d % 4 == 0
    vw = vector and t % 4 == 0
    lines = [
        f"var<workgroup> queries: array<{'vec4<f32>' if vq else 'f32'}, {rows * d // (4 if vq else 1)}>;",
        f"var<workgroup> weights: array<{'vec4<f32>' if vw else 'f32'}, {rows * t // (4 if vw else 1)}>;",
        f"var<workgroup> partial: array<f32, {THREADS}>;",
        f"var<workgroup> inverse: array<f32, {rows}>;",
        "",
    ]
    if vw:
        lines += [
            "fn weight(i: u32) -> f32 { return weights[i >> 2u][i & 3u]; }",
            "fn set_weight(i: u32, value: f32) { weights[i >> 2u][i & 3u] = value; }",
        ]
    else:
        lines += [
            "fn weight(i: u32) -> f32 { return weights[i]; }",
            "fn set_weight(i: u32, value: f32) { weights[i] = value; }",
        ]
    lines += [
        "",
        f"@compute @workgroup_size({THREADS})",
        "fn main(@builtin(local_invocation_index) local: u32,"
        " @builtin(workgroup_id) group: vec3<u32>) {",
        "    let batch = group.y;",
        f"    let first_row = group.x * {rows}u;",
    ]
    # 1. this workgroup's queries (rows past S read as zeros and are never stored)
    if vq:
        quads = d // 4
        lines += [
            f"    for (var i = local; i < {rows * quads}u; i += {THREADS}u) {{",
            f"        let row = first_row + i / {quads}u;",
            f"        let at = min(row, {s - 1}u);",
            f"        let first = (i % {quads}u) * 4u;",
            "        let value = vec4<f32>(load_q(batch, at, first), load_q(batch, at, first + 1u),"
            " load_q(batch, at, first + 2u), load_q(batch, at, first + 3u));",
            f"        queries[i] = select(vec4<f32>(0.0), value, row < {s}u);",
            "    }",
        ]
    else:
        lines += [
            f"    for (var i = local; i < {rows * d}u; i += {THREADS}u) {{",
            f"        let row = first_row + i / {d}u;",
            f"        queries[i] = select(0.0, load_q(batch, min(row, {s - 1}u), i % {d}u),"
            f" row < {s}u);",
            "    }",
        ]
    lines.append("    workgroupBarrier();")
    # 2. scores: invocation `local` takes keys local, local + THREADS, ... for every row.
    lines += _products(rows, "key", t, "queries", d, vq, "load_k(batch, {i}, {at})", "score")
    for r in range(rows):
        row = f"min(first_row + {r}u, {s - 1}u)"
        for c in range(key_runs):
            statement = (
                f"set_weight({r * t}u + key{c}, score({literal(alpha)} * score{r}_{c},"
                f" (batch * {s}u + {row}) * {t}u + key{c}));"
            )
            lines.append(
                f"    {statement}"
                if (c + 1) * THREADS <= t
                else f"    if (key{c} < {t}u) {{ {statement} }}"
            )
    lines.append("    workgroupBarrier();")
    # 3. softmax along each row: per_row invocations a row, partial results in `partial`.
    lines += [
        f"    let row = local / {per_row}u;",
        f"    let lane = local % {per_row}u;",
        f"    let base = row * {t}u;",
        f"    var largest = {literal(float('-inf'))};",
        f"    for (var j = lane; j < {t}u; j += {per_row}u) {{ largest = max(largest, weight(base + j)); }}",
        "    partial[local] = largest;",
        "    workgroupBarrier();",
        f"    var row_max = {literal(float('-inf'))};",
        f"    for (var j = 0u; j < {per_row}u; j++) {{ row_max = max(row_max, partial[row * {per_row}u + j]); }}",
        "    workgroupBarrier();",
        "    var sum = 0.0;",
        f"    for (var j = lane; j < {t}u; j += {per_row}u) {{",
        "        let e = exp(weight(base + j) - row_max);",
        "        set_weight(base + j, e);",
        "        sum += e;",
        "    }",
        "    partial[local] = sum;",
        "    workgroupBarrier();",
        "    var total = 0.0;",
        f"    for (var j = 0u; j < {per_row}u; j++) {{ total += partial[row * {per_row}u + j]; }}",
    ]
    if guarded:
        # The probabilities' epilogue needs each normalised value: normalise in place.
        lines += [
            f"    let query = min(first_row + row, {s - 1}u);",
            f"    for (var j = lane; j < {t}u; j += {per_row}u) {{",
            "        set_weight(base + j, probability(weight(base + j) / total,"
            f" (batch * {s}u + query) * {t}u + j));",
            "    }",
            "    if (lane == 0u) { inverse[row] = 1.0; }",
        ]
    else:
        lines.append("    if (lane == 0u) { inverse[row] = 1.0 / total; }")
    lines.append("    workgroupBarrier();")
    # 4. weights @ V: invocation `local` takes columns local, local + THREADS, ... for every row.
    lines += _products(rows, "column", dv, "weights", t, vw, "load_v(batch, {i}, {at})", "out")
    for r in range(rows):
        for c in range(column_runs):
            conditions = [f"first_row + {r}u < {s}u"]
            if (c + 1) * THREADS > dv:
                conditions.append(f"column{c} < {dv}u")
            lines.append(
                f"    if ({' && '.join(conditions)}) {{ store_y((batch * {s}u + first_row + {r}u)"
                f" * {dv}u + column{c}, out{r}_{c} * inverse[{r}u]); }}"
            )
    lines.append("}")
    return "\n".join(lines) + "\n"
