"""Validate an ONNX model and describe it: signature, opsets, operators, parameters."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from gpux.errors import ModelError
from gpux.runtime.tensors import ONNX_ELEMENT_TYPES, TensorSignature


def load_checked(path: Path, display: str, *, full_check: bool = True) -> Any:
    """Run the ONNX checker (with strict shape inference) and return the model with shapes inferred."""
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    try:
        onnx.checker.check_model(str(path), full_check=full_check)
    except onnx.checker.ValidationError as exc:
        raise ModelError(
            f"model '{display}' is not a valid ONNX model: {_first_line(exc)}",
            "re-export the model (e.g. torch.onnx.export) or check it with onnx.checker",
        ) from None
    except onnx.shape_inference.InferenceError as exc:
        raise ModelError(
            f"model '{display}' fails ONNX shape inference: {_first_line(exc)}",
            "the graph has inconsistent shapes or types; re-export the model",
        ) from None
    except (DecodeError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise ModelError(
            f"model '{display}' cannot be read as ONNX ({_first_line(exc)})",
            "is it really an .onnx file? It may be truncated or in another format",
        ) from None
    try:
        model = onnx.load(str(path), load_external_data=False)
        return onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # onnx raises several unrelated types here
        raise ModelError(
            f"model '{display}' cannot be loaded: {_first_line(exc)}", "re-export the model"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _signature(value_info: Any) -> TensorSignature:
    tensor_type = value_info.type.tensor_type
    dtype = ONNX_ELEMENT_TYPES.get(tensor_type.elem_type, f"onnx-type-{tensor_type.elem_type}")
    shape: list[int | str | None] | None = None
    if tensor_type.HasField("shape"):
        shape = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                shape.append(int(dim.dim_value))
            elif dim.HasField("dim_param") and dim.dim_param:
                shape.append(str(dim.dim_param))
            else:
                shape.append(None)
    return TensorSignature(name=value_info.name, dtype=dtype, shape=shape)


def refuse_external_data(model: Any, display: str) -> None:
    """Weights kept in side files are not stored in images yet: refuse at build, not at run."""
    from onnx.external_data_helper import uses_external_data

    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise ModelError(
                f"model '{display}' keeps its weights in a separate file ('{location}'), which "
                "GPUX images do not carry yet",
                "for models under 2 GB, merge the weights into the .onnx file: "
                "onnx.save(onnx.load(path), path, save_as_external_data=False)",
            )


def model_signature(model: Any) -> tuple[list[TensorSignature], list[TensorSignature]]:
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_signature(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_signature(v) for v in model.graph.output]
    for spec in inputs + outputs:
        if not spec.dtype.isidentifier() or spec.dtype.startswith("onnx-type"):
            raise ModelError(
                f"tensor '{spec.name}' is not a plain tensor (type {spec.dtype})",
                "GPUX serves models whose inputs and outputs are tensors; "
                "sequences and maps are not supported",
            )
    return inputs, outputs


def _walk_nodes(graph: Any) -> Any:
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                yield from _walk_nodes(attribute.g)
            for sub in attribute.graphs:
                yield from _walk_nodes(sub)


def model_info(model: Any, path: Path) -> dict[str, Any]:
    """Facts shown by ``gpux inspect``: computed once at build, stored in the image config."""
    import numpy as np

    ops: collections.Counter[str] = collections.Counter()
    for node in _walk_nodes(model.graph):
        ops[
            f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        ] += 1
    parameters = 0
    parameter_bytes = 0
    for init in model.graph.initializer:
        count = int(np.prod(init.dims)) if len(init.dims) else 1
        parameters += count
        parameter_bytes += len(init.raw_data) if init.raw_data else 0
    return {
        "ir_version": int(model.ir_version),
        "opsets": {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import},
        "producer": " ".join(p for p in (model.producer_name, model.producer_version) if p),
        "graph_name": model.graph.name,
        "nodes": sum(ops.values()),
        "operators": dict(ops.most_common()),
        "parameters": parameters,
        "parameter_bytes": parameter_bytes,
        "file_bytes": path.stat().st_size,
        "metadata": {p.key: p.value[:200] for p in model.metadata_props},
    }
