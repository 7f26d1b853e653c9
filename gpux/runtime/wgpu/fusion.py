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

Before the epilogues, two passes take larger chains: a transformer's attention
(``attention_fusion.py``) and sibling products of one input (``sibling_fusion.py``); the folds
they and the epilogues share are ``folds.py``.

The placement proof is unchanged: a segment's ``nodes`` still lists every node by op; only its
``lowered`` list holds one :class:`~gpux.runtime.wgpu.partition.LoweredNode` per kernel, whose
``fused`` names the nodes it computes (the profile reports it as ``Add+Mul+Erf``).
"""

from __future__ import annotations

from dataclasses import replace

from gpux.runtime.wgpu.attention_fusion import attention
from gpux.runtime.wgpu.folds import (
    MAX_INPUTS,
    epilogue_target,
    external_inputs,
    one_kernel,
    with_epilogue,
)
from gpux.runtime.wgpu.graph import Graph
from gpux.runtime.wgpu.kernel import TensorInfo, Unsupported
from gpux.runtime.wgpu.kernels.elementwise import Step, chain_lowering
from gpux.runtime.wgpu.kernels.expressions import EXPRESSIONS
from gpux.runtime.wgpu.partition import LoweredNode, Partition, Segment
from gpux.runtime.wgpu.sibling_fusion import sibling_groups, siblings


def _fusable(lowered: LoweredNode) -> bool:
    node = lowered.node
    return (
        node.domain in ("", "ai.onnx")
        and node.op_type in EXPRESSIONS
        and len(node.outputs) == 1
        and bool(lowered.lowering.dispatches)  # not empty, not an alias
    )


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
                    if len(external_inputs(trial)) > MAX_INPUTS:
                        continue
                    members[id(source)] = source
                    grown = True
        taken.update(members)
        groups.append(sorted(members.values(), key=lambda m: index_of[id(m.node)]))
    return groups


def _fused(graph: Graph, members: list[LoweredNode]) -> LoweredNode:
    """One node computing ``members`` (graph order, the sink last) in one kernel."""
    inputs = external_inputs(members)
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
    return one_kernel(members, lowering, inputs, infos, [members[-1]], constants)


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
            chain = attention(graph, product, readers, lowered_at, group_of)
        except Unsupported:
            continue  # the chain keeps its kernels
        if chain is None or any(id(item) in replaced for item in chain[0]):
            continue
        for item in chain[0]:
            replaced[id(item)] = None
        replaced[id(chain[0][-1])] = chain[1]
    for family in sibling_groups(graph, segment, readers, lowered_at, group_of, replaced):
        try:
            merged = siblings(graph, segment, family)
        except Unsupported:
            continue  # each keeps its kernel
        if merged is None:
            continue
        computed, place, kernel = merged
        for item in computed:
            replaced[id(item)] = None
        replaced[id(place)] = kernel
    for product in segment.lowered:
        if id(product) in replaced:
            continue  # an attention or sibling kernel computes it
        fold = epilogue_target(graph, product, readers, lowered_at, group_of)
        if fold is None or any(id(item) in replaced for item in fold.computed[1:]):
            continue  # a group (or a view) another product took
        try:
            fused = with_epilogue(graph, fold)
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
