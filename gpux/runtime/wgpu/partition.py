"""Which nodes run on wgpu and which on ONNX Runtime's CPU provider.

Every node a kernel lowers runs on the GPU; maximal runs of the others, in the graph's order,
become CPU segments (one ONNX Runtime session each), with host copies at the boundaries. The
split is the placement proof: nodes on wgpu against nodes on the CPU, by op, and why each op
was left out. A model none of whose nodes lowers is refused, naming the missing ops.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from gpux.errors import BackendError
from gpux.runtime.wgpu import kernel
from gpux.runtime.wgpu.graph import Graph, Node
from gpux.runtime.wgpu.kernel import Lowering, NodeContext, TensorInfo, Unsupported

CPU_PROVIDER = "CPUExecutionProvider"
WGPU_PROVIDER = "wgpu"
# int64 values live on the device as i32; a constant out of that range cannot be bound.
I32_RANGE = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class LoweredNode:
    node: Node
    context: NodeContext
    lowering: Lowering
    # The graph's nodes that one kernel computes (``fusion.py``); empty for a node of its own.
    fused: tuple[Node, ...] = ()


@dataclass
class Segment:
    on_gpu: bool
    nodes: list[Node] = field(default_factory=list)
    lowered: list[LoweredNode] = field(default_factory=list)  # the same nodes, on_gpu only


@dataclass
class Partition:
    segments: list[Segment]
    refused: dict[str, str]  # node name -> why it runs on the CPU

    @property
    def gpu_nodes(self) -> int:
        return sum(len(s.nodes) for s in self.segments if s.on_gpu)

    @property
    def cpu_nodes(self) -> int:
        return sum(len(s.nodes) for s in self.segments if not s.on_gpu)

    def assignment(self) -> dict[str, Any]:
        """The split in the shape of the ONNX Runtime backend's ``assignment`` (placement
        details), plus the segments and why each op left the GPU."""
        on_cpu: collections.Counter[str] = collections.Counter()
        why: dict[str, str] = {}
        for segment in self.segments:
            if segment.on_gpu:
                continue
            for node in segment.nodes:
                on_cpu[f"{node.qualified_op}@{CPU_PROVIDER}"] += 1
                why.setdefault(node.qualified_op, self.refused.get(node.name, ""))
        total = self.gpu_nodes + self.cpu_nodes
        return {
            "known": True,
            "nodes": total,
            "nodes_on_backend": self.gpu_nodes,
            "share": round(self.gpu_nodes / total, 4) if total else 0.0,
            "by_provider": {WGPU_PROVIDER: self.gpu_nodes, CPU_PROVIDER: self.cpu_nodes},
            "elsewhere": dict(on_cpu.most_common()),
            "why_elsewhere": why,
            "segments": [
                {"on": WGPU_PROVIDER if s.on_gpu else CPU_PROVIDER, "nodes": len(s.nodes)}
                for s in self.segments
            ],
        }

    @property
    def submits(self) -> int:
        """Command buffers one call submits: one per GPU segment."""
        return sum(1 for s in self.segments if s.on_gpu)


def node_context(graph: Graph, node: Node, features: frozenset[str]) -> NodeContext:
    inputs: list[TensorInfo | None] = []
    constants = {}
    for index, name in enumerate(node.inputs):
        if not name:
            inputs.append(None)
            continue
        info = graph.tensors.get(name)
        if info is None:
            raise Unsupported(f"the shape of input '{name}' is unknown at load")
        inputs.append(info)
        if name in graph.constants:
            constants[index] = graph.constants[name]
    outputs: list[TensorInfo | None] = []
    for name in node.outputs:
        info = graph.tensors.get(name) if name else None
        if info is None and name:
            raise Unsupported(f"the shape of output '{name}' is unknown at load")
        outputs.append(info)
    present = [info for info in outputs if info is not None]
    if not present:
        raise Unsupported("the node makes no output")
    # _check_bound refuses a kernel that binds an omitted output: the stand-in is never bound.
    stand_in = TensorInfo((0,), present[0].dtype)
    return NodeContext(
        op_type=node.op_type,
        domain="" if node.domain == "ai.onnx" else node.domain,
        attributes=node.attributes,
        inputs=tuple(inputs),
        outputs=tuple(stand_in if info is None else info for info in outputs),
        constants=constants,
        features=features,
        opset=graph.opset,
        omitted_outputs=frozenset(i for i, info in enumerate(outputs) if info is None),
    )


def _check_bound(graph: Graph, node: Node, lowering: Lowering, features: frozenset[str]) -> None:
    """Every tensor the dispatches bind must have a device form (and constants must fit)."""
    bound: set[tuple[str, int]] = {
        (b.kind, b.index)
        for dispatch in lowering.dispatches
        for b in dispatch.bindings
        if b.kind in ("input", "output")
    }
    if lowering.alias_input is not None:
        bound.add(("input", lowering.alias_input))
        bound.add(("output", 0))
    for kind, index in sorted(bound):
        names = node.inputs if kind == "input" else node.outputs
        if index >= len(names) or not names[index]:
            raise Unsupported(f"the kernel binds {kind} {index}, which the node does not have")
        info = graph.tensors[names[index]]
        kernel.wgsl_type(info.dtype)
        if info.dtype.kind == "f" and info.dtype.itemsize == 2 and "shader-f16" not in features:
            raise Unsupported("float16 needs the adapter's shader-f16 feature")
        constant = graph.constants.get(names[index])
        if (
            constant is not None
            and constant.dtype.itemsize == 8
            and constant.dtype.kind == "i"
            and constant.size
            and (constant.min() < I32_RANGE[0] or constant.max() > I32_RANGE[1])
        ):
            raise Unsupported(f"constant '{names[index]}' does not fit in i32")


def lower_node(graph: Graph, node: Node, features: frozenset[str]) -> LoweredNode:
    context = node_context(graph, node, features)
    lowering = kernel.lower(context)
    _check_bound(graph, node, lowering, features)
    return LoweredNode(node, context, lowering)


def register_kernels() -> None:
    """Import the kernel modules (``kernels/``), whose decorators register them."""
    import importlib

    try:
        importlib.import_module("gpux.runtime.wgpu.kernels")
    except ModuleNotFoundError as exc:
        if exc.name != "gpux.runtime.wgpu.kernels":
            raise


def partition(graph: Graph, features: frozenset[str]) -> Partition:
    """Lower every node that a kernel takes; group the rest into CPU segments."""
    register_kernels()
    segments: list[Segment] = []
    refused: dict[str, str] = {}
    for node in graph.nodes:
        try:
            lowered: LoweredNode | None = lower_node(graph, node, features)
        except Unsupported as exc:
            lowered = None
            refused[node.name] = str(exc)
        on_gpu = lowered is not None
        if not segments or segments[-1].on_gpu != on_gpu:
            segments.append(Segment(on_gpu))
        segments[-1].nodes.append(node)
        if lowered is not None:
            segments[-1].lowered.append(lowered)
    result = Partition(segments, refused)
    if graph.nodes and result.gpu_nodes == 0:
        missing = collections.Counter(node.qualified_op for node in graph.nodes)
        reasons = sorted({refused[node.name] for node in graph.nodes})
        raise BackendError(
            "the wgpu engine cannot run any node of this model (ops: "
            + ", ".join(f"{op} x{count}" for op, count in missing.most_common())
            + "; "
            + "; ".join(reasons[:5])
            + ")",
            "run it on another backend (--backend cpu, or auto); 'gpux doctor' lists the ops "
            "the wgpu engine claims",
        )
    return result
