"""ONNX backend node tests for every op the wgpu engine claims, one node at a time.

Each test builds the node's :class:`NodeContext` from the test model (shapes from the model's
typed outputs, every input known at load as an initializer would be), lowers it, runs it on
the test device (lavapipe on CI) and compares with ONNX's expected outputs at the backend
tests' tolerances. A claimed op whose kernel refuses a case (``Unsupported``: a dtype without a
device form, an attribute combination) skips with the reason; a wrong answer fails.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import pytest

pytest.importorskip("wgpu", reason="wgpu is not installed (the webgpu extra)")

import onnx
from onnx import helper, numpy_helper

from gpux.errors import InputError
from gpux.runtime.wgpu import kernels  # noqa: F401  (registers the kernels)
from gpux.runtime.wgpu.device import Gpu, run_lowering
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


def node_context(
    case: Any, inputs: list[np.ndarray], expected: list[np.ndarray], gpu: Gpu
) -> tuple[NodeContext, list[np.ndarray | None]]:
    node = case.model.graph.node[0]
    opset = next((o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx")), 1)
    graph_inputs = [i.name for i in case.model.graph.input]
    arrays: list[np.ndarray | None] = []
    for name in node.input:
        arrays.append(inputs[graph_inputs.index(name)] if name else None)
    context = NodeContext(
        op_type=node.op_type,
        domain=node.domain if node.domain != "ai.onnx" else "",
        attributes={a.name: attribute_value(a) for a in node.attribute},
        inputs=tuple(None if a is None else TensorInfo(a.shape, a.dtype) for a in arrays),
        outputs=output_infos(case, expected),
        constants={i: a for i, a in enumerate(arrays) if a is not None},
        features=gpu.features,
        opset=opset,
    )
    return context, arrays


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
    case = node_cases()[name]
    graph = case.model.graph
    if any(not v.type.HasField("tensor_type") for v in (*graph.input, *graph.output)):
        return "skip: sequences and optionals have no device form"
    inputs, expected = ([as_array(v) for v in values] for values in case.data_sets[0])
    context, arrays = node_context(case, inputs, expected, gpu)
    try:
        lowering = lower(context)
        actual = run_lowering(gpu, lowering, arrays, context.outputs)
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
