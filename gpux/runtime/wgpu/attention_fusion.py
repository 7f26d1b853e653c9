"""Attention fusion: a transformer's attention chain (the scores' product, a scale and mask
group, Softmax along the keys, a guard on the probabilities, the product with V and what its
kernel folds) as one kernel, ``kernels/attention.py``. A pass of ``fusion.py``."""

from __future__ import annotations

from typing import Any

from gpux.runtime.wgpu.folds import (
    MAX_BINDINGS,
    build_epilogue,
    epilogue_target,
    one_kernel,
    through_views,
    within_bindings,
)
from gpux.runtime.wgpu.graph import Graph
from gpux.runtime.wgpu.kernel import TensorInfo, Unsupported
from gpux.runtime.wgpu.kernels.attention import Attention, lower_attention
from gpux.runtime.wgpu.kernels.contrib import fused_matmul_options
from gpux.runtime.wgpu.partition import LoweredNode

# The products whose output an attention kernel may take as its scores (P @ V: MatMul only).
SCORE_PRODUCTS = {"MatMul", "com.microsoft.FusedMatMul"}


def _sole_reader(
    graph: Graph, value: str, readers: dict[str, list[int]], lowered_at: dict[int, LoweredNode]
) -> tuple[list[LoweredNode], str, LoweredNode] | None:
    """The views ``value`` alone flows through, the value they end in, and its one reader."""
    found = through_views(graph, value, readers, lowered_at)
    if found is None or len(found[2]) != 1:
        return None
    return found[0], found[1], lowered_at[found[2][0]]


def _softmax_last_axis(lowered: LoweredNode) -> bool:
    context = lowered.context
    source = context.inputs[0]
    if (
        lowered.node.qualified_op != "Softmax"
        or not lowered.lowering.dispatches
        or source is None
        or not source.shape
    ):
        return False
    rank = len(source.shape)
    axis = int(context.attribute("axis", 1 if context.opset < 13 else -1))
    return axis in (-1, rank - 1)


def attention(
    graph: Graph,
    product: LoweredNode,
    readers: dict[str, list[int]],
    lowered_at: dict[int, LoweredNode],
    group_of: dict[int, list[LoweredNode]],
) -> tuple[tuple[LoweredNode, ...], LoweredNode] | None:
    """When ``product`` computes attention scores (``kernels/attention.py``'s chain: the
    product, an elementwise group, Softmax along the keys, an elementwise group, the MatMul
    with V and what its kernel may fold), the nodes of the chain and the one kernel computing
    them; else None."""
    node = product.node
    if node.qualified_op not in SCORE_PRODUCTS or product.fused or not product.lowering.dispatches:
        return None
    alpha, k_transposed = 1.0, False
    if node.domain not in ("", "ai.onnx"):
        options = fused_matmul_options(product.context)
        if options["trans_a"]:
            return None
        alpha, k_transposed = options["alpha"], options["trans_b"]
    score_fold = epilogue_target(graph, product, readers, lowered_at, group_of)
    if score_fold is not None and score_fold.transpose is not None:
        return None
    chain: list[LoweredNode] = list(score_fold.computed if score_fold else (product,))
    found = _sole_reader(graph, chain[-1].node.outputs[0], readers, lowered_at)
    if found is None or not _softmax_last_axis(found[2]):
        return None
    views, _, softmax = found
    chain += [*views, softmax]
    after_softmax = through_views(graph, softmax.node.outputs[0], readers, lowered_at)
    if after_softmax is None:
        return None
    views, probabilities, reading = after_softmax
    reader = lowered_at[reading[0]]
    chain += views
    probability_group = group_of.get(id(reader), [])
    if not probability_group and len(reading) != 1:
        return None
    if probability_group:
        # An elementwise group on the probabilities (torch's IsNaN + Where guard).
        sink = probability_group[-1]
        members = {id(member.node) for member in probability_group}
        if (
            sink.context.outputs[0].shape != graph.tensors[probabilities].shape
            or sink.context.outputs[0].dtype != softmax.context.outputs[0].dtype
            or not all(id(lowered_at[i].node) in members for i in readers[probabilities])
        ):
            return None
        chain += probability_group
        found = _sole_reader(graph, sink.node.outputs[0], readers, lowered_at)
        if found is None:
            return None
        views, weights, reader = found
        chain += views
    else:
        weights = probabilities
    context_product = reader
    if (
        context_product.node.qualified_op != "MatMul"
        or context_product.fused
        or not context_product.lowering.dispatches
        or tuple(context_product.node.inputs[:2]) == (weights, weights)
        or context_product.node.inputs[0] != weights
    ):
        return None
    chain.append(context_product)
    result_fold = epilogue_target(graph, context_product, readers, lowered_at, group_of)
    if result_fold is not None:
        chain += result_fold.computed[1:]

    q_name, k_name = node.inputs[:2]
    v_name = context_product.node.inputs[1]
    first = 3
    scores = probability = result = None
    inputs: list[str] = []
    if score_fold is not None and score_fold.group:
        scores, names = build_epilogue(graph, list(score_fold.group), score_fold.value, first)
        inputs += names
    if probability_group:
        probability, names = build_epilogue(
            graph, probability_group, probabilities, first + len(inputs)
        )
        inputs += names
    if result_fold is not None:
        result, names = build_epilogue(
            graph,
            list(result_fold.group),
            result_fold.value,
            first + len(inputs),
            result_fold.transpose,
        )
        inputs += names
    last = chain[-1]
    problem = Attention(
        q=graph.tensors[q_name],
        k=graph.tensors[k_name],
        v=graph.tensors[v_name],
        output=last.context.outputs[0],
        alpha=alpha,
        k_transposed=k_transposed,
        scores=scores,
        probabilities=probability,
        result=result,
    )
    batch, s, t, _, dv = problem.sizes()
    if graph.tensors[context_product.node.inputs[0]].shape != (
        *batch,
        s,
        t,
    ) or context_product.context.outputs[0].shape != (*batch, s, dv):
        return None
    lowering = lower_attention(problem, product.context.features)
    if not within_bindings(lowering):
        raise Unsupported(
            f"attention with {len(inputs)} more inputs passes {MAX_BINDINGS} bindings"
        )
    epilogues = [e for e in (scores, probability, result) if e is not None]
    infos: list[TensorInfo | None] = [problem.q, problem.k, problem.v]
    constants: dict[int, Any] = {}
    for epilogue in epilogues:
        infos += epilogue.inputs
        constants.update({epilogue.first_input + k: a for k, a in epilogue.constants.items()})
    kernel = one_kernel(
        chain, lowering, (q_name, k_name, v_name, *inputs), infos, [last], constants
    )
    return tuple(chain), kernel
