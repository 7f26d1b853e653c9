"""Elementwise fusion: chains of elementwise nodes on the GPU become one kernel each.

An elementwise node reads and writes its whole tensor through device memory and costs a
dispatch to encode (~4.5 µs of CPU on an H100's host); BERT's GELU alone is six of them. A
*group* is computed per element in one kernel (``kernels/elementwise.chain_lowering``): its
values between nodes are WGSL ``let``s, never buffers, so the memory plan no longer sees them.

A group grows backwards from its *sink* (the one node whose output leaves the group) by
taking a producer when every reader of the producer's value is already in the group, the
value is no graph output, and it has the sink's shape. So nothing outside the group (a later
node, a CPU segment, the caller) ever needs a fused-away value, and the group can run where
its sink ran. Other inputs broadcast into the sink's shape (a bias along the last axis, a
scalar, which the kernel writes as a literal when known at load).

*Epilogue fusion*, first, folds a group into the GEMM kernel (MatMul, Gemm, Conv,
FusedMatMul: ``EPILOGUE_KERNELS``) whose output it reads, when the group is that output's only
reader (through any views, Reshape and the like, that move no data): BERT's MatMul + bias Add
(+ residual Add, + GELU), a ResNet's Conv + Relu and Conv + residual Add + Relu become one
kernel each, which applies the group per value in its store step (``kernels/epilogue.py``) at
the group's place in the segment, so the group's other operands (a residual made after the
product) are ready. The group's shape must be the product's (a product broadcast into a larger
shape is not folded) and its dtype the product's; the kernel must stay within WebGPU's 8
bindings. A Transpose that alone reads the result (through views) is folded as well: the
kernel stores each value where the Transpose would put it (BERT's heads, split after the Q, K
and V projections and merged after the context).

The placement proof is unchanged: a segment's ``nodes`` still lists every node by op; only its
``lowered`` list holds one :class:`~gpux.runtime.wgpu.partition.LoweredNode` per kernel, whose
``fused`` names the nodes it computes (the profile reports it as ``Add+Mul+Erf``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gpux.runtime.wgpu.graph import Graph, Node
from gpux.runtime.wgpu.kernel import Lowering, NodeContext, TensorInfo, Unsupported
from gpux.runtime.wgpu.kernels.attention import Attention, lower_attention
from gpux.runtime.wgpu.kernels.contrib import fused_matmul_options
from gpux.runtime.wgpu.kernels.conv import lower_conv
from gpux.runtime.wgpu.kernels.elementwise import Step, chain_lowering
from gpux.runtime.wgpu.kernels.epilogue import VALUE, Epilogue, Transpose
from gpux.runtime.wgpu.kernels.expressions import EXPRESSIONS
from gpux.runtime.wgpu.kernels.matmul import lower_gemm, lower_matmul, lower_sibling_matmuls
from gpux.runtime.wgpu.partition import LoweredNode, Partition, Segment

# WebGPU guarantees 8 storage buffers per shader stage: 7 inputs and the output.
MAX_INPUTS = 7
MAX_BINDINGS = 8

# The kernels whose store step takes an epilogue, by qualified op.
EPILOGUE_KERNELS: dict[str, Callable[[NodeContext, Epilogue], Lowering]] = {
    "MatMul": lambda context, epilogue: lower_matmul(context, epilogue=epilogue),
    "Gemm": lambda context, epilogue: lower_gemm(context, epilogue=epilogue),
    "Conv": lambda context, epilogue: lower_conv(context, epilogue=epilogue),
    "com.microsoft.FusedMatMul": lambda context, epilogue: lower_matmul(
        context, **fused_matmul_options(context), epilogue=epilogue
    ),
}
# Ops that move no data (``alias_input``): an epilogue reads through them.
VIEWS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}


def _fusable(lowered: LoweredNode) -> bool:
    node = lowered.node
    return (
        node.domain in ("", "ai.onnx")
        and node.op_type in EXPRESSIONS
        and len(node.outputs) == 1
        and bool(lowered.lowering.dispatches)  # not empty, not an alias
    )


def _external_inputs(members: list[LoweredNode]) -> list[str]:
    """Values the group reads that it does not make, in order of first use."""
    made = {lowered.node.outputs[0] for lowered in members}
    names: list[str] = []
    for lowered in members:
        for name in lowered.node.inputs:
            if name and name not in made and name not in names:
                names.append(name)
    return names


def _groups(
    graph: Graph, segment: Segment, readers: dict[str, list[int]], index_of: dict[int, int]
) -> list[list[LoweredNode]]:
    """The segment's fusable groups, single nodes included, members in graph order.
    ``readers``: graph.consumers(); ``index_of``: id(node) -> its index in the graph."""
    candidates = [lowered for lowered in segment.lowered if _fusable(lowered)]
    producer = {lowered.node.outputs[0]: lowered for lowered in candidates}
    outputs = set(graph.outputs)
    taken: set[int] = set()
    groups: list[list[LoweredNode]] = []
    for sink in reversed(candidates):
        if id(sink) in taken:
            continue
        shape = sink.context.outputs[0].shape
        members = {id(sink): sink}
        grown = True
        while grown:
            grown = False
            for member in list(members.values()):
                for name in member.node.inputs:
                    source = producer.get(name)
                    if source is None or id(source) in members or id(source) in taken:
                        continue
                    if name in outputs or graph.tensors[name].shape != shape:
                        continue
                    member_nodes = {index_of[id(m.node)] for m in members.values()}
                    if not set(readers.get(name, ())) <= member_nodes:
                        continue
                    trial = [*members.values(), source]
                    if len(_external_inputs(trial)) > MAX_INPUTS:
                        continue
                    members[id(source)] = source
                    grown = True
        taken.update(members)
        groups.append(sorted(members.values(), key=lambda m: index_of[id(m.node)]))
    return groups


def _fused(graph: Graph, members: list[LoweredNode]) -> LoweredNode:
    """One node computing ``members`` (graph order, the sink last) in one kernel."""
    inputs = _external_inputs(members)
    step_of = {lowered.node.outputs[0]: f"t{number}" for number, lowered in enumerate(members)}

    def operand(name: str) -> int | str | None:
        if not name:
            return None
        return step_of[name] if name in step_of else inputs.index(name)

    steps = [
        Step(lowered.context, tuple(operand(name) for name in lowered.node.inputs))
        for lowered in members
    ]
    infos: list[TensorInfo | None] = [graph.tensors[name] for name in inputs]
    constants = {
        k: graph.constants[name] for k, name in enumerate(inputs) if name in graph.constants
    }
    lowering = chain_lowering(steps, infos, constants)
    sink = members[-1]
    node = Node(
        name=", ".join(lowered.node.name for lowered in members),
        op_type="+".join(lowered.node.op_type for lowered in members),
        domain="",
        attributes={},
        inputs=tuple(inputs),
        outputs=sink.node.outputs,
        proto=None,
    )
    context = NodeContext(
        op_type=node.op_type,
        domain="",
        attributes={},
        inputs=tuple(infos),
        outputs=sink.context.outputs,
        constants=constants,
        features=sink.context.features,
        opset=sink.context.opset,
    )
    return LoweredNode(node, context, lowering, fused=tuple(m.node for m in members))


@dataclass(frozen=True)
class _Fold:
    """What a product's kernel may compute after the product: ``views`` (moving no data), an
    elementwise ``group`` reading ``value`` (the product, through views), and a
    ``transpose`` of the result (through views), at least one of the two."""

    product: LoweredNode
    views: tuple[LoweredNode, ...]
    value: str
    group: tuple[LoweredNode, ...]
    views_after: tuple[LoweredNode, ...]  # between the group and the transpose
    transpose: LoweredNode | None

    @property
    def last(self) -> LoweredNode:
        """The node whose place and output the fused kernel takes."""
        return self.transpose or self.group[-1]

    @property
    def computed(self) -> tuple[LoweredNode, ...]:
        """Every node the fused kernel computes."""
        last = (self.transpose,) if self.transpose else ()
        return (self.product, *self.views, *self.group, *self.views_after, *last)


def _through_views(
    graph: Graph, value: str, readers: dict[str, list[int]], lowered_at: dict[int, LoweredNode]
) -> tuple[list[LoweredNode], str, list[int]] | None:
    """The views (Reshape and the like) that ``value`` alone flows through, the value they
    end in and that value's readers; None when the caller, a CPU segment or another segment
    reads any of them."""
    views: list[LoweredNode] = []
    while True:
        reading = readers.get(value, [])
        if value in graph.outputs or not reading or any(i not in lowered_at for i in reading):
            return None
        reader = lowered_at[reading[0]]
        if len(reading) != 1 or reader.node.op_type not in VIEWS:
            return views, value, reading
        if reader.lowering.alias_input != 0 or reader.node.domain not in ("", "ai.onnx"):
            return None
        views.append(reader)
        value = reader.node.outputs[0]


def _epilogue_target(
    graph: Graph,
    product: LoweredNode,
    readers: dict[str, list[int]],
    lowered_at: dict[int, LoweredNode],
    group_of: dict[int, list[LoweredNode]],
) -> _Fold | None:
    """What ``product``'s kernel may compute after it, or None. ``lowered_at``: graph index
    -> the segment's lowered node; ``group_of``: id of a lowered node -> its group."""
    node = product.node
    dtype = product.context.outputs[0].dtype
    if (
        node.qualified_op not in EPILOGUE_KERNELS
        or product.fused
        or len(node.outputs) != 1
        or not product.lowering.dispatches
    ):
        return None
    found = _through_views(graph, node.outputs[0], readers, lowered_at)
    if found is None:
        return None
    views, value, reading = found
    group: list[LoweredNode] = []
    candidate = group_of.get(id(lowered_at[reading[0]]))
    if candidate is not None:
        members = {id(member.node) for member in candidate}
        sink = candidate[-1].context.outputs[0]
        if (
            all(id(lowered_at[i].node) in members for i in reading)  # nothing else reads it
            and graph.tensors[value].shape == sink.shape  # not broadcast into a larger shape
            and sink.dtype == dtype
        ):
            group = candidate
    # A Transpose of the result (through views) is stored transposed.
    transpose = None
    after: list[LoweredNode] = []
    result = group[-1].node.outputs[0] if group else value
    found = _through_views(graph, result, readers, lowered_at) if group else found
    if found is not None:
        more, _, reading = found
        reader = lowered_at[reading[0]]
        if (
            len(reading) == 1
            and reader.node.op_type == "Transpose"
            and reader.node.domain in ("", "ai.onnx")
            and reader.lowering.dispatches
        ):
            transpose = reader
            after = more if group else []
    if not group and transpose is None:
        return None
    return _Fold(product, tuple(views), value, tuple(group), tuple(after), transpose)


def _epilogue(
    graph: Graph,
    members: list[LoweredNode],
    value: str,
    first: int,
    transpose_node: LoweredNode | None = None,
) -> tuple[Epilogue, list[str]]:
    """The epilogue computing ``members`` (graph order) from a kernel's ``value``, its other
    inputs the fused node's inputs from ``first`` on, and the names of those inputs."""
    inputs = [name for name in _external_inputs(members) if name != value]
    step_of = {lowered.node.outputs[0]: f"t{number}" for number, lowered in enumerate(members)}

    def operand(name: str) -> int | str | None:
        if not name:
            return None
        if name == value:
            return VALUE
        return step_of[name] if name in step_of else inputs.index(name)

    steps = tuple(
        Step(lowered.context, tuple(operand(name) for name in lowered.node.inputs))
        for lowered in members
    )
    infos: list[TensorInfo | None] = [graph.tensors[name] for name in inputs]
    constants = {
        k: graph.constants[name] for k, name in enumerate(inputs) if name in graph.constants
    }
    transpose = None
    if transpose_node is not None:
        source = transpose_node.context.inputs[0]
        assert source is not None
        rank = len(source.shape)
        perm = transpose_node.context.attribute("perm", None) or range(rank - 1, -1, -1)
        transpose = Transpose(source.shape, tuple(int(axis) for axis in perm))
    return Epilogue(steps, tuple(infos), constants, first, transpose), inputs


def _within_bindings(lowering: Lowering) -> bool:
    return all(len(dispatch.bindings) <= MAX_BINDINGS for dispatch in lowering.dispatches)


def _bounded(lowering: Lowering, what: str) -> Lowering:
    """``lowering`` with only the alternatives that stay within MAX_BINDINGS (a split-K one
    binds one buffer more, its partial sums, than the kernel's own); Unsupported naming
    ``what`` when the kernel's own passes it."""
    if not _within_bindings(lowering):
        raise Unsupported(f"{what} passes {MAX_BINDINGS} bindings")
    offered = lowering.alternatives
    if offered is None:
        return lowering
    return replace(lowering, alternatives=lambda: tuple(filter(_within_bindings, offered())))


def _with_epilogue(graph: Graph, fold: _Fold) -> LoweredNode:
    """The product's kernel computing what ``fold`` names in its store step."""
    product = fold.product
    first = len(product.node.inputs)
    epilogue, inputs = _epilogue(graph, list(fold.group), fold.value, first, fold.transpose)
    infos, constants = epilogue.inputs, epilogue.constants
    lowering = EPILOGUE_KERNELS[product.node.qualified_op](product.context, epilogue)
    lowering = _bounded(lowering, f"an epilogue of {len(inputs)} inputs")
    last = fold.last
    node = Node(
        name=", ".join(lowered.node.name for lowered in fold.computed),
        op_type="+".join(lowered.node.op_type for lowered in fold.computed),
        domain="",
        attributes={},
        inputs=(*product.node.inputs, *inputs),
        outputs=last.node.outputs,
        proto=None,
    )
    context = replace(
        product.context,
        op_type=node.op_type,
        attributes={},
        inputs=(*product.context.inputs, *infos),
        outputs=last.context.outputs,
        constants={
            **product.context.constants,
            **{first + k: array for k, array in constants.items()},
        },
    )
    return LoweredNode(node, context, lowering, fused=tuple(m.node for m in fold.computed))


# The products whose scores an attention kernel may compute, and its one for P @ V.
SCORE_PRODUCTS = {"MatMul", "com.microsoft.FusedMatMul"}


def _sole_reader(
    graph: Graph, value: str, readers: dict[str, list[int]], lowered_at: dict[int, LoweredNode]
) -> tuple[list[LoweredNode], str, LoweredNode] | None:
    """The views ``value`` alone flows through, the value they end in, and its one reader."""
    found = _through_views(graph, value, readers, lowered_at)
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


def _attention(
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
    score_fold = _epilogue_target(graph, product, readers, lowered_at, group_of)
    if score_fold is not None and score_fold.transpose is not None:
        return None
    chain: list[LoweredNode] = list(score_fold.computed if score_fold else (product,))
    found = _sole_reader(graph, chain[-1].node.outputs[0], readers, lowered_at)
    if found is None or not _softmax_last_axis(found[2]):
        return None
    views, _, softmax = found
    chain += [*views, softmax]
    after_softmax = _through_views(graph, softmax.node.outputs[0], readers, lowered_at)
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
    result_fold = _epilogue_target(graph, context_product, readers, lowered_at, group_of)
    if result_fold is not None:
        chain += result_fold.computed[1:]

    q_name, k_name = node.inputs[:2]
    v_name = context_product.node.inputs[1]
    first = 3
    scores = probability = result = None
    inputs: list[str] = []
    if score_fold is not None and score_fold.group:
        scores, names = _epilogue(graph, list(score_fold.group), score_fold.value, first)
        inputs += names
    if probability_group:
        probability, names = _epilogue(graph, probability_group, probabilities, first + len(inputs))
        inputs += names
    if result_fold is not None:
        result, names = _epilogue(
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
    if not _within_bindings(lowering):
        raise Unsupported(
            f"attention with {len(inputs)} more inputs passes {MAX_BINDINGS} bindings"
        )
    epilogues = [e for e in (scores, probability, result) if e is not None]
    infos: list[TensorInfo | None] = [problem.q, problem.k, problem.v]
    constants: dict[int, Any] = {}
    for epilogue in epilogues:
        infos += epilogue.inputs
        constants.update({epilogue.first_input + k: a for k, a in epilogue.constants.items()})
    fused = Node(
        name=", ".join(lowered.node.name for lowered in chain),
        op_type="+".join(lowered.node.op_type for lowered in chain),
        domain="",
        attributes={},
        inputs=(q_name, k_name, v_name, *inputs),
        outputs=last.node.outputs,
        proto=None,
    )
    context = NodeContext(
        op_type=fused.op_type,
        domain="",
        attributes={},
        inputs=tuple(infos),
        outputs=last.context.outputs,
        constants=constants,
        features=product.context.features,
        opset=product.context.opset,
    )
    return tuple(chain), LoweredNode(fused, context, lowering, fused=tuple(m.node for m in chain))


def _sibling_groups(
    graph: Graph,
    segment: Segment,
    readers: dict[str, list[int]],
    lowered_at: dict[int, LoweredNode],
    group_of: dict[int, list[LoweredNode]],
    replaced: dict[int, LoweredNode | None],
) -> list[list[tuple[LoweredNode, _Fold | None]]]:
    """MatMuls (with what their kernels may fold) that read the same A by constant 2-D Bs of
    one K and dtype: BERT's Q, K and V projections. Two or more make a group."""
    by_a: dict[tuple[str, tuple[int, ...], str], list[tuple[LoweredNode, _Fold | None]]] = {}
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
        fold = _epilogue_target(graph, product, readers, lowered_at, group_of)
        if fold is not None and any(id(item) in replaced for item in fold.computed):
            continue
        a = graph.tensors[node.inputs[0]]
        rows = int(np.prod(a.shape[:-1], dtype=np.int64))  # [1, m, k] and [m, k] alike
        key = (_view_source(node.inputs[0], made_by), (rows, *a.shape[-1:]), str(a.dtype))
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


def _siblings(
    graph: Graph,
    segment: Segment,
    members: list[tuple[LoweredNode, _Fold | None]],
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
            epilogue, names = _epilogue(
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
    graph.constants[b_name] = np.concatenate(weights, axis=1)
    graph.tensors[b_name] = TensorInfo(graph.constants[b_name].shape, weights[0].dtype)
    bias_name = []
    if biased:
        bias_name = [f"gpux-siblings({label}).bias"]
        graph.constants[bias_name[0]] = np.concatenate(
            [
                np.zeros(w.shape[1], w.dtype) if b is None else b
                for w, b in zip(weights, biases, strict=True)
            ]
        )
        graph.tensors[bias_name[0]] = TensorInfo(
            graph.constants[bias_name[0]].shape, weights[0].dtype
        )
    a_name = members[0][0].node.inputs[0]  # each member's A is a view of one buffer
    a_info = graph.tensors[a_name]
    rows = int(np.prod(a_info.shape[:-1], dtype=np.int64))
    lowering = lower_sibling_matmuls(
        TensorInfo((rows, a_info.shape[-1]), a_info.dtype),
        graph.tensors[b_name],
        graph.tensors[bias_name[0]] if biased else None,
        parts,
    )
    lowering = _bounded(lowering, f"sibling MatMuls with {len(inputs)} epilogue inputs")
    every = [a_name, b_name, *bias_name, *inputs]
    constants = {
        index: graph.constants[name] for index, name in enumerate(every) if name in graph.constants
    }
    first_product = members[0][0]
    node = Node(
        name=", ".join(lowered.node.name for lowered in computed),
        op_type="|".join(
            "+".join(m.node.op_type for m in (f.computed if f else (p,))) for p, f in members
        ),
        domain="",
        attributes={},
        inputs=tuple(every),
        outputs=tuple(last.node.outputs[0] for last in lasts),
        proto=None,
    )
    context = NodeContext(
        op_type=node.op_type,
        domain="",
        attributes={},
        inputs=tuple(graph.tensors[name] for name in node.inputs),
        outputs=tuple(last.context.outputs[0] for last in lasts),
        constants=constants,
        features=first_product.context.features,
        opset=first_product.context.opset,
    )
    fused = LoweredNode(node, context, lowering, fused=tuple(m.node for m in computed))
    return computed, place, fused


def _fuse_segment(
    graph: Graph, segment: Segment, readers: dict[str, list[int]], index_of: dict[int, int]
) -> list[LoweredNode]:
    """The segment's kernels: epilogues folded into their products, then the other
    elementwise groups of two nodes or more as one kernel each."""
    groups = _groups(graph, segment, readers, index_of)
    group_of = {id(member): group for group in groups for member in group}
    lowered_at = {index_of[id(lowered.node)]: lowered for lowered in segment.lowered}
    replaced: dict[int, LoweredNode | None] = {}
    for product in segment.lowered:
        try:
            attention = _attention(graph, product, readers, lowered_at, group_of)
        except Unsupported:
            continue  # the chain keeps its kernels
        if attention is None or any(id(item) in replaced for item in attention[0]):
            continue
        for item in attention[0]:
            replaced[id(item)] = None
        replaced[id(attention[0][-1])] = attention[1]
    for family in _sibling_groups(graph, segment, readers, lowered_at, group_of, replaced):
        try:
            siblings = _siblings(graph, segment, family)
        except Unsupported:
            continue  # each keeps its kernel
        if siblings is None:
            continue
        computed, place, merged = siblings
        for item in computed:
            replaced[id(item)] = None
        replaced[id(place)] = merged
    for product in segment.lowered:
        if id(product) in replaced:
            continue  # an attention or sibling kernel computes it
        fold = _epilogue_target(graph, product, readers, lowered_at, group_of)
        if fold is None or any(id(item) in replaced for item in fold.computed[1:]):
            continue  # a group (or a view) another product took
        try:
            fused = _with_epilogue(graph, fold)
        except Unsupported:
            continue  # the group keeps its own kernel
        for item in fold.computed:
            replaced[id(item)] = None
        replaced[id(fold.last)] = fused
    for members in groups:
        if len(members) < 2 or any(id(member) in replaced for member in members):
            continue  # single, or computed by a product's kernel
        try:
            fused = _fused(graph, members)
        except Unsupported:
            continue  # each node keeps the kernel it had
        for member in members[:-1]:
            replaced[id(member)] = None
        replaced[id(members[-1])] = fused
    lowered = [replaced.get(id(item), item) for item in segment.lowered]
    return [item for item in lowered if item is not None]


def fuse(graph: Graph, partition: Partition) -> Partition:
    """``partition`` with each GPU segment's elementwise groups lowered as one kernel each,
    folded into the GEMM kernel they follow where they can be its epilogue."""
    readers = graph.consumers()
    index_of = {id(node): index for index, node in enumerate(graph.nodes)}
    segments = []
    for segment in partition.segments:
        if not segment.on_gpu:
            segments.append(segment)
            continue
        lowered = _fuse_segment(graph, segment, readers, index_of)
        segments.append(replace(segment, lowered=lowered))
    return replace(partition, segments=segments)
