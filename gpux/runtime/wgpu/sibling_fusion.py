"""Sibling products: MatMuls and Gemms that read one A by constant weights (a transformer's
Q, K and V projections) as one GEMM over their weights side by side, each column stored through
its part's fold (``kernels/matmul.lower_sibling_matmuls``). A pass of ``fusion.py``."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpux.runtime.wgpu.folds import (
    VIEWS,
    Fold,
    bounded,
    build_epilogue,
    epilogue_target,
    one_kernel,
)
from gpux.runtime.wgpu.graph import Graph
from gpux.runtime.wgpu.kernel import TensorInfo
from gpux.runtime.wgpu.kernels.matmul import lower_sibling_matmuls
from gpux.runtime.wgpu.partition import LoweredNode, Segment


def sibling_groups(
    graph: Graph,
    segment: Segment,
    readers: dict[str, list[int]],
    lowered_at: dict[int, LoweredNode],
    group_of: dict[int, list[LoweredNode]],
    replaced: dict[int, LoweredNode | None],
) -> list[list[tuple[LoweredNode, Fold | None]]]:
    """MatMuls (with what their kernels may fold) that read the same A by constant 2-D Bs of
    one K and dtype: BERT's Q, K and V projections. Two or more make a group."""
    by_a: dict[tuple[str, tuple[int, ...], str], list[tuple[LoweredNode, Fold | None]]] = {}
    # Keyed by A's source, its rows and width, and the dtypes of A and B (weights of two
    # dtypes would not concatenate into one).
    made_by = {name: lowered for lowered in segment.lowered for name in lowered.node.outputs}
    for product in segment.lowered:
        node = product.node
        if (
            id(product) in replaced
            or product.fused
            or not product.lowering.dispatches
            or _sibling_weights(graph, product) is None
        ):
            continue
        fold = epilogue_target(graph, product, readers, lowered_at, group_of)
        if fold is not None and any(id(item) in replaced for item in fold.computed):
            continue
        a, b = graph.tensors[node.inputs[0]], graph.tensors[node.inputs[1]]
        rows = int(np.prod(a.shape[:-1], dtype=np.int64))  # [1, m, k] and [m, k] alike
        key = (
            _view_source(node.inputs[0], made_by),
            (rows, *a.shape[-1:]),
            f"{a.dtype}/{b.dtype}",
        )
        by_a.setdefault(key, []).append((product, fold))
    return [members for members in by_a.values() if len(members) > 1]


def _view_source(name: str, made_by: dict[str, LoweredNode]) -> str:
    """The value ``name`` is a view of (through Reshape and the like), or ``name``: ORT's
    optimizer flattens one A into a Reshape per Gemm that reads it."""
    producer = made_by.get(name)
    while (
        producer is not None
        and producer.node.op_type in VIEWS
        and producer.lowering.alias_input == 0
        and not producer.lowering.dispatches
    ):
        name = producer.node.inputs[0]
        producer = made_by.get(name)
    return name


def _sibling_weights(
    graph: Graph, product: LoweredNode
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None] | None:
    """A MatMul's or Gemm's B as ``[K, N]`` (alpha and transB applied) and its bias as
    ``[N]`` (beta applied; None for none), when both are constants and the bias is the same
    for every row; else None."""
    node, context = product.node, product.context
    if node.qualified_op not in ("MatMul", "Gemm") or node.inputs[1] not in graph.constants:
        return None
    b = np.asarray(graph.constants[node.inputs[1]])
    if b.ndim != 2 or b.dtype.kind != "f":
        return None
    if node.op_type == "MatMul":
        return b, None
    if context.attribute("transA", 0):
        return None
    if context.attribute("transB", 0):
        b = b.T
    b = b * b.dtype.type(context.attribute("alpha", 1.0))
    beta = float(context.attribute("beta", 1.0))
    if len(node.inputs) < 3 or not node.inputs[2] or beta == 0.0:
        return np.ascontiguousarray(b), None
    if node.inputs[2] not in graph.constants:
        return None
    c = np.asarray(graph.constants[node.inputs[2]])
    if c.size not in (1, b.shape[1]) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
        return None
    bias = np.broadcast_to(c.reshape(-1), (b.shape[1],)) * b.dtype.type(beta)
    return np.ascontiguousarray(b), bias.astype(b.dtype)


def siblings(
    graph: Graph,
    segment: Segment,
    members: list[tuple[LoweredNode, Fold | None]],
) -> tuple[list[LoweredNode], LoweredNode, LoweredNode] | None:
    """One kernel for sibling MatMuls (``kernels.matmul.lower_sibling_matmuls``): the nodes it
    computes, the node whose place it takes, and the kernel; None when a part's epilogue
    reads a value made after that place."""
    position = {id(lowered): index for index, lowered in enumerate(segment.lowered)}
    made_at = {
        name: index
        for index, lowered in enumerate(segment.lowered)
        for name in lowered.node.outputs
    }
    lasts = [fold.last if fold else product for product, fold in members]
    place = min(lasts, key=lambda lowered: position[id(lowered)])
    every_computed = [item for p, f in members for item in (f.computed if f else (p,))]
    if len({id(item) for item in every_computed}) != len(every_computed):
        return None  # two products folding one group (it reads both)
    # Values that only exist inside the one kernel: no part's epilogue may read them.
    internal = {name for item in every_computed for name in item.node.outputs}
    inputs: list[str] = []
    parts = []
    computed: list[LoweredNode] = []
    weights, biases = [], []
    for product, _ in members:
        found = _sibling_weights(graph, product)
        assert found is not None
        weights.append(found[0])
        biases.append(found[1])
    biased = any(bias is not None for bias in biases)
    first = 3 if biased else 2
    for (product, fold), last, b in zip(members, lasts, weights, strict=True):
        n = b.shape[1]
        epilogue = None
        if fold is not None:
            epilogue, names = build_epilogue(
                graph, list(fold.group), fold.value, first + len(inputs), fold.transpose
            )
            if any(
                name in internal or made_at.get(name, -1) >= position[id(place)] for name in names
            ):
                return None
            inputs += names
        parts.append((last.context.outputs[0], n, epilogue))
        computed += fold.computed if fold else (product,)
    label = ",".join(p.node.name or p.node.outputs[0] for p, _ in members)
    b_name = f"gpux-siblings({label}).weights"
    made = {b_name: np.concatenate(weights, axis=1)}
    bias_name = []
    if biased:
        bias_name = [f"gpux-siblings({label}).bias"]
        made[bias_name[0]] = np.concatenate(
            [
                np.zeros(w.shape[1], w.dtype) if b is None else b
                for w, b in zip(weights, biases, strict=True)
            ]
        )
    infos = {name: TensorInfo(value.shape, value.dtype) for name, value in made.items()}
    a_name = members[0][0].node.inputs[0]  # each member's A is a view of one buffer
    a_info = graph.tensors[a_name]
    rows = int(np.prod(a_info.shape[:-1], dtype=np.int64))
    lowering = lower_sibling_matmuls(
        TensorInfo((rows, a_info.shape[-1]), a_info.dtype),
        infos[b_name],
        infos[bias_name[0]] if biased else None,
        parts,
    )
    lowering = bounded(lowering, f"sibling MatMuls with {len(inputs)} epilogue inputs")
    # The kernel holds: only now do its weights become constants of the graph.
    graph.constants.update(made)
    graph.tensors.update(infos)
    every = [a_name, b_name, *bias_name, *inputs]
    constants = {
        index: graph.constants[name] for index, name in enumerate(every) if name in graph.constants
    }
    op_type = "|".join(
        "+".join(m.node.op_type for m in (f.computed if f else (p,))) for p, f in members
    )
    bound = [graph.tensors[name] for name in every]
    fused = one_kernel(computed, lowering, every, bound, lasts, constants, op_type)
    return computed, place, fused
