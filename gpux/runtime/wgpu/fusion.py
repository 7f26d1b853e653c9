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

The placement proof is unchanged: a segment's ``nodes`` still lists every node by op; only its
``lowered`` list holds one :class:`~gpux.runtime.wgpu.partition.LoweredNode` per kernel, whose
``fused`` names the nodes it computes (the profile reports it as ``Add+Mul+Erf``).
"""

from __future__ import annotations

from dataclasses import replace

from gpux.runtime.wgpu.graph import Graph, Node
from gpux.runtime.wgpu.kernel import NodeContext, TensorInfo, Unsupported
from gpux.runtime.wgpu.kernels.elementwise import Step, chain_lowering
from gpux.runtime.wgpu.kernels.expressions import EXPRESSIONS
from gpux.runtime.wgpu.partition import LoweredNode, Partition, Segment

# WebGPU guarantees 8 storage buffers per shader stage: 7 inputs and the output.
MAX_INPUTS = 7


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
    """The segment's fusable groups of two nodes or more, members in graph order.
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
        if len(members) > 1:
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


def fuse(graph: Graph, partition: Partition) -> Partition:
    """``partition`` with each GPU segment's elementwise groups lowered as one kernel each."""
    readers = graph.consumers()
    index_of = {id(node): index for index, node in enumerate(graph.nodes)}
    segments = []
    for segment in partition.segments:
        if not segment.on_gpu:
            segments.append(segment)
            continue
        replaced: dict[int, LoweredNode | None] = {}
        for members in _groups(graph, segment, readers, index_of):
            try:
                fused = _fused(graph, members)
            except Unsupported:
                continue  # each node keeps the kernel it had
            for member in members[:-1]:
                replaced[id(member)] = None
            replaced[id(members[-1])] = fused
        lowered = [replaced.get(id(item), item) for item in segment.lowered]
        segments.append(replace(segment, lowered=[item for item in lowered if item is not None]))
    return replace(partition, segments=segments)
