"""CPU segments: runs of nodes no kernel takes, each as an ONNX Runtime CPU session.

A segment's sub-model holds its nodes, the constants they read and, as inputs, every value it
reads that an earlier segment (or the caller) makes; its outputs are the values it makes that
a later segment or the caller reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gpux.errors import BackendError, InputError
from gpux.runtime.wgpu.graph import Graph, Node


def segment_io(
    graph: Graph, nodes: Sequence[Node], needed_later: set[str]
) -> tuple[list[str], list[str]]:
    """(inputs, outputs) of a sub-model made of ``nodes``: inputs exclude constants;
    ``needed_later`` holds values read after the segment (and the graph's outputs)."""
    made: set[str] = set()
    inputs: list[str] = []
    for node in nodes:
        for name in node.reads:
            if name not in made and name not in graph.constants and name not in inputs:
                inputs.append(name)
        made |= {name for name in node.outputs if name}
    outputs = [name for node in nodes for name in node.outputs if name and name in needed_later]
    return inputs, outputs


class CpuSegment:
    """One ONNX Runtime CPU session for a run of nodes."""

    def __init__(
        self,
        graph: Graph,
        nodes: Sequence[Node],
        needed_later: set[str],
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort
        from onnx import helper, numpy_helper

        from gpux.runtime.onnxruntime_backend import ort_log_level

        self.inputs, self.outputs = segment_io(graph, nodes, needed_later)
        self.ops = [node.qualified_op for node in nodes]
        read = {n for node in nodes for n in node.reads}

        def value(name: str) -> Any:
            info = graph.tensors.get(name)
            if info is not None:
                elem = helper.np_dtype_to_tensor_dtype(info.dtype)
                return helper.make_tensor_value_info(name, elem, list(info.shape))
            if name in graph.elem_types:  # made on the CPU with a shape only known at run time
                return helper.make_tensor_value_info(name, graph.elem_types[name], None)
            raise BackendError(
                f"the wgpu engine does not know the type of '{name}'",
                "run the model on another backend (--backend cpu)",
            )

        body = helper.make_graph(
            [node.proto for node in nodes],
            "gpux_cpu_segment",
            [value(name) for name in self.inputs],
            [value(name) for name in self.outputs],
            [
                numpy_helper.from_array(graph.constants[n], n)
                for n in sorted(read & graph.constants.keys())
            ],
        )
        model = helper.make_model(body, opset_imports=list(graph.model.opset_import))
        model.ir_version = graph.model.ir_version
        options = ort.SessionOptions()
        options.log_severity_level = ort_log_level()
        # The whole model was optimised at load already.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                model.SerializeToString(),
                options,
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # ONNX Runtime raises its own pybind exception types
            raise BackendError(
                f"the CPU fallback for {', '.join(sorted(set(self.ops)))} failed to load: "
                + str(exc).splitlines()[0],
                "run the model on another backend (--backend cpu); rerun with --debug",
            ) from exc

    def run(self, values: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        try:
            results = self.session.run(self.outputs, {name: values[name] for name in self.inputs})
        except Exception as exc:  # ONNX Runtime raises its own pybind exception types
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            ops = ", ".join(sorted(set(self.ops)))
            if "INVALID_ARGUMENT" in text:
                # The feed matched the signature; a node refusing its values is the input's fault.
                raise InputError(
                    f"the model cannot run on this input ({ops} on the CPU): {text}",
                    "the shapes fit the model's declared inputs, but the model refuses these "
                    "values; check what it expects with 'gpux inspect'",
                ) from exc
            raise BackendError(
                f"the CPU fallback for {ops} failed: {text}",
                "rerun with --debug; --backend cpu runs the whole model on ONNX Runtime",
            ) from exc
        return dict(zip(self.outputs, results, strict=True))
