"""Folds: what a product's kernel (MatMul, Gemm, Conv, FusedMatMul) may compute after the
product, shared by the fusion passes (``fusion.py``, ``attention_fusion.py``,
``sibling_fusion.py``).

A *fold* is an elementwise group that alone reads the product (through views that move no
data), and a Transpose that alone reads the result: the kernel applies the group per value in
its store step (``kernels/epilogue.py``) and stores each value where the Transpose puts it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gpux.runtime.wgpu.graph import Graph, Node
from gpux.runtime.wgpu.kernel import Lowering, NodeContext, TensorInfo, Unsupported
from gpux.runtime.wgpu.kernels.contrib import fused_matmul_options
from gpux.runtime.wgpu.kernels.conv import lower_conv
from gpux.runtime.wgpu.kernels.elementwise import Step
from gpux.runtime.wgpu.kernels.epilogue import VALUE, Epilogue, Transpose
from gpux.runtime.wgpu.kernels.matmul import lower_gemm, lower_matmul
from gpux.runtime.wgpu.partition import LoweredNode

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


def external_inputs(members: list[LoweredNode]) -> list[str]:
    """Values the group reads that it does not make, in order of first use."""
    made = {lowered.node.outputs[0] for lowered in members}
    names: list[str] = []
    for lowered in members:
        for name in lowered.node.inputs:
            if name and name not in made and name not in names:
                names.append(name)
    return names


@dataclass(frozen=True)
class Fold:
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


def through_views(
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


def epilogue_target(
    graph: Graph,
    product: LoweredNode,
    readers: dict[str, list[int]],
    lowered_at: dict[int, LoweredNode],
    group_of: dict[int, list[LoweredNode]],
) -> Fold | None:
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
    found = through_views(graph, node.outputs[0], readers, lowered_at)
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
    found = through_views(graph, result, readers, lowered_at) if group else found
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
    return Fold(product, tuple(views), value, tuple(group), tuple(after), transpose)


def build_epilogue(
    graph: Graph,
    members: list[LoweredNode],
    value: str,
    first: int,
    transpose_node: LoweredNode | None = None,
) -> tuple[Epilogue, list[str]]:
    """The epilogue computing ``members`` (graph order) from a kernel's ``value``, its other
    inputs the fused node's inputs from ``first`` on, and the names of those inputs."""
    inputs = [name for name in external_inputs(members) if name != value]
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


def within_bindings(lowering: Lowering) -> bool:
    return all(len(dispatch.bindings) <= MAX_BINDINGS for dispatch in lowering.dispatches)


def bounded(lowering: Lowering, what: str) -> Lowering:
    """``lowering`` with only the alternatives that stay within MAX_BINDINGS (a split-K one
    binds one buffer more, its partial sums, than the kernel's own); Unsupported naming
    ``what`` when the kernel's own passes it."""
    if not within_bindings(lowering):
        raise Unsupported(f"{what} passes {MAX_BINDINGS} bindings")
    offered = lowering.alternatives
    if offered is None:
        return lowering
    return replace(lowering, alternatives=lambda: tuple(filter(within_bindings, offered())))


def with_epilogue(graph: Graph, fold: Fold) -> LoweredNode:
    """The product's kernel computing what ``fold`` names in its store step."""
    product = fold.product
    first = len(product.node.inputs)
    epilogue, inputs = build_epilogue(graph, list(fold.group), fold.value, first, fold.transpose)
    infos, constants = epilogue.inputs, epilogue.constants
    lowering = EPILOGUE_KERNELS[product.node.qualified_op](product.context, epilogue)
    lowering = bounded(lowering, f"an epilogue of {len(inputs)} inputs")
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


def one_kernel(
    computed: Sequence[LoweredNode],
    lowering: Lowering,
    inputs: Sequence[str],
    infos: Sequence[TensorInfo | None],
    outputs: Sequence[LoweredNode],
    constants: Mapping[int, Any],
    op_type: str | None = None,
) -> LoweredNode:
    """The lowered node of a kernel computing ``computed`` (graph order): it reads ``inputs``
    (``infos``; ``constants`` by input number) and makes the outputs of ``outputs`` (their
    first, or all of one). ``op_type`` defaults to the computed ops joined (``Add+Mul+Erf``,
    what the profile reports); features and opset are the first computed node's."""
    made = (
        tuple(o.node.outputs[0] for o in outputs) if len(outputs) > 1 else outputs[0].node.outputs
    )
    made_infos = (
        tuple(o.context.outputs[0] for o in outputs)
        if len(outputs) > 1
        else outputs[0].context.outputs
    )
    op = op_type or "+".join(lowered.node.op_type for lowered in computed)
    node = Node(
        name=", ".join(lowered.node.name for lowered in computed),
        op_type=op,
        domain="",
        attributes={},
        inputs=tuple(inputs),
        outputs=made,
        proto=None,
    )
    first = computed[0].context
    context = NodeContext(
        op_type=op,
        domain="",
        attributes={},
        inputs=tuple(infos),
        outputs=made_infos,
        constants=dict(constants),
        features=first.features,
        opset=first.opset,
    )
    return LoweredNode(node, context, lowering, fused=tuple(m.node for m in computed))
