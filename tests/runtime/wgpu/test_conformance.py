"""ONNX backend node tests for every op the wgpu engine claims, one node at a time.

Each test builds the node's :class:`NodeContext` from the test model (shapes from the model's
typed outputs, every input known at load as an initializer would be), lowers it, runs it on
the test device (lavapipe on CI) and compares with ONNX's expected outputs at the backend
tests' tolerances. A claimed op whose kernel refuses a case (``Unsupported``: a dtype without a
device form, an attribute combination) skips with the reason; a wrong answer fails.

ONNX's expanded tests (``test_softmax_axis_0_expanded``, the attention decompositions ...)
whose nodes are all claimed run too, node after node on device buffers, Constant nodes folded
as the executor's optimizer would.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest

pytest.importorskip("wgpu", reason="wgpu is not installed (the webgpu extra)")

import onnx
from onnx import helper, numpy_helper

from gpux.errors import InputError
from gpux.runtime.wgpu import kernels  # noqa: F401  (registers the kernels)
from gpux.runtime.wgpu.device import Gpu, encode_lowering
from gpux.runtime.wgpu.kernel import (
    NodeContext,
    TensorInfo,
    Unsupported,
    claimed_ops,
    lower,
)

FP16_TOLERANCE = (1e-2, 1e-3)


@functools.cache
def node_cases() -> dict[str, Any]:
    """ONNX's node test cases whose model is one node of a claimed op, by test name."""
    from onnx.backend.test.loader import load_model_tests

    claimed = set(claimed_ops())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators overflow casts on purpose
        cases = load_model_tests(kind="node")
    selected = {}
    for case in cases:
        nodes = case.model.graph.node
        if len(nodes) != 1:
            continue
        node = nodes[0]
        name = (
            f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        )
        if name in claimed:
            selected[case.name] = case
    return selected


@functools.cache
def graph_cases() -> dict[str, Any]:
    """ONNX's node test cases of several nodes (function expansions such as
    ``test_softmax_axis_0_expanded``) whose every node is a claimed op or a Constant."""
    from onnx.backend.test.loader import load_model_tests

    claimed = set(claimed_ops()) | {"Constant"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = load_model_tests(kind="node")
    return {
        case.name: case
        for case in cases
        if len(case.model.graph.node) > 1
        and not case.model.functions
        and all(
            (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}") in claimed
            for n in case.model.graph.node
        )
    }


def op_of(case: Any) -> str:
    node = case.model.graph.node[0]
    return str(node.op_type)


def attribute_value(attribute: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def as_array(value: Any) -> np.ndarray:
    """A test datum as numpy (a few cases store TensorProtos: bfloat16, float8)."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return np.asarray(value)


def output_infos(case: Any, expected: list[np.ndarray]) -> tuple[TensorInfo, ...]:
    """The node's outputs as shape inference gives them (the test models carry them); the
    expected arrays fill dimensions a model leaves symbolic."""
    model = onnx.shape_inference.infer_shapes(case.model)
    infos = []
    for graph_output, array in zip(model.graph.output, expected, strict=False):
        tensor_type = graph_output.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
        shape = dims if all(d >= 0 for d in dims) and len(dims) == array.ndim else array.shape
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        infos.append(TensorInfo(tuple(int(d) for d in shape), dtype))
    return tuple(infos)


def constant_value(node: onnx.NodeProto) -> np.ndarray:
    """A Constant node's value, as the executor's constant folding would hold it."""
    (attribute,) = node.attribute
    value = attribute_value(attribute)
    if attribute.name in ("value_float", "value_floats"):
        return np.asarray(value, dtype=np.float32)
    if attribute.name in ("value_int", "value_ints"):
        return np.asarray(value, dtype=np.int64)
    if attribute.name == "value":
        return np.asarray(value)
    raise Unsupported(f"Constant {attribute.name}")


class DeviceValues(Mapping[int, np.ndarray]):
    """A node's inputs as constants, read back from the device only when a kernel asks (a
    Reshape's shape, a Slice's starts): what the executor's constant folding would know."""

    def __init__(self, gpu: Gpu, values: list[tuple[Any, TensorInfo] | None]) -> None:
        self._gpu, self._values = gpu, values
        self._read: dict[int, np.ndarray] = {}

    def __getitem__(self, index: int) -> np.ndarray:
        value = self._values[index] if 0 <= index < len(self._values) else None
        if value is None:
            raise KeyError(index)
        if index not in self._read:
            self._read[index] = self._gpu.download(*value)
        return self._read[index]

    def __iter__(self) -> Iterator[int]:
        return (i for i, value in enumerate(self._values) if value is not None)

    def __len__(self) -> int:
        return sum(value is not None for value in self._values)


def run_graph(
    case: Any, inputs: list[np.ndarray], expected: list[np.ndarray], gpu: Gpu
) -> list[np.ndarray]:
    """Every node of the test model in order, one lowering and one submit each, values kept
    on the device. Shapes of intermediate values come from ONNX's reference evaluator (the
    executor infers them)."""
    model = case.model
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    values: dict[str, tuple[Any, TensorInfo]] = {
        graph_input.name: (gpu.upload(array), TensorInfo(array.shape, array.dtype))
        for graph_input, array in zip(model.graph.input, inputs, strict=False)
    }
    if len(model.graph.node) == 1:
        shapes = dict(
            zip((o.name for o in model.graph.output), output_infos(case, expected), strict=False)
        )
    else:
        from onnx.reference import ReferenceEvaluator

        names = [name for node in model.graph.node for name in node.output if name]
        feeds = {i.name: a for i, a in zip(model.graph.input, inputs, strict=False)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = ReferenceEvaluator(model).run(names, feeds)
        shapes = {
            name: TensorInfo(np.asarray(array).shape, np.asarray(array).dtype)
            for name, array in zip(names, reference, strict=True)
        }
    for node in model.graph.node:
        if node.op_type == "Constant":
            array = constant_value(node)
            values[node.output[0]] = (gpu.upload(array), TensorInfo(array.shape, array.dtype))
            continue
        outputs = list(node.output)
        while outputs and not outputs[-1]:
            outputs.pop()
        if "" in outputs:
            raise Unsupported("an omitted output before a present one")
        present = [values[name] if name else None for name in node.input]
        context = NodeContext(
            op_type=node.op_type,
            domain=node.domain if node.domain != "ai.onnx" else "",
            attributes={a.name: attribute_value(a) for a in node.attribute},
            inputs=tuple(None if v is None else v[1] for v in present),
            outputs=tuple(shapes[name] for name in outputs),
            constants=DeviceValues(gpu, present),
            features=gpu.features,
            opset=opset,
        )
        buffers = encode_lowering(
            gpu, lower(context), [None if v is None else v[0] for v in present], context.outputs
        )
        values.update(
            (name, (buffer, info))
            for name, buffer, info in zip(outputs, buffers, context.outputs, strict=True)
        )
    return [gpu.download(*values[o.name]) for o in model.graph.output]


# Outcomes by test name: the coverage test reuses what test_node found in this process.
_OUTCOMES: dict[str, str | AssertionError | None] = {}


def outcome(name: str, gpu: Gpu) -> str | None:
    """None when the case passes, ``skip: reason`` when the kernel refuses it; raises
    AssertionError on a wrong answer."""
    if name not in _OUTCOMES:
        try:
            _OUTCOMES[name] = _run_case(name, gpu)
        except AssertionError as exc:
            _OUTCOMES[name] = exc
    result = _OUTCOMES[name]
    if isinstance(result, AssertionError):
        raise result
    return result


def _run_case(name: str, gpu: Gpu) -> str | None:
    case = node_cases().get(name) or graph_cases()[name]
    graph = case.model.graph
    if any(not v.type.HasField("tensor_type") for v in (*graph.input, *graph.output)):
        return "skip: sequences and optionals have no device form"
    inputs, expected = ([as_array(v) for v in values] for values in case.data_sets[0])
    try:
        actual = run_graph(case, inputs, expected, gpu)
    except Unsupported as exc:
        return f"skip: {exc}"
    except InputError as exc:
        return f"skip: {exc.message}"
    for got, want in zip(actual, expected, strict=False):
        assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
        if want.dtype == np.float16 or got.dtype == np.float16:
            rtol, atol = FP16_TOLERANCE
        else:
            rtol, atol = case.rtol, case.atol
        if want.dtype.kind in "fc":
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(got, want)
    return None


@pytest.mark.parametrize("name", sorted(node_cases()))
def test_node(name: str, gpu: Gpu) -> None:
    result = outcome(name, gpu)
    if result is not None:
        pytest.skip(result)


@pytest.mark.parametrize("name", sorted(graph_cases()))
def test_expanded_graph(name: str, gpu: Gpu) -> None:
    result = outcome(name, gpu)
    if result is not None:
        pytest.skip(result)


def test_every_claimed_op_passes_a_node_test(gpu: Gpu) -> None:
    # Ops ONNX does not define (ONNX Runtime's fused ops) are checked in test_contrib.py.
    by_op: dict[str, list[str]] = {op: [] for op in claimed_ops() if onnx.defs.has(op)}
    for name, case in node_cases().items():
        by_op[op_of(case)].append(name)
    unproven = []
    for op, names in sorted(by_op.items()):
        passed = False
        for name in sorted(names):
            try:
                passed = outcome(name, gpu) is None
            except AssertionError:
                break  # test_node reports the wrong answer itself
            if passed:
                break
        if not passed:
            unproven.append(op)
    assert not unproven, f"claimed ops with no passing ONNX node test: {unproven}"
