"""The kernels of ONNX Runtime's fused ops (what its EXTENDED optimizer writes), against ONNX
Runtime's CPU provider: ONNX's node tests do not cover ops outside the standard."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

pytest.importorskip("wgpu", reason="wgpu is not installed (the webgpu extra)")
ort = pytest.importorskip("onnxruntime")

from gpux.runtime.wgpu import kernels  # noqa: E402, F401  (registers the kernels)
from gpux.runtime.wgpu.device import Gpu, run_lowering  # noqa: E402
from gpux.runtime.wgpu.kernel import NodeContext, TensorInfo, claimed_ops, lower  # noqa: E402

MICROSOFT = "com.microsoft"


def rng_array(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def run_both(
    gpu: Gpu,
    op: str,
    domain: str,
    inputs: list[np.ndarray | None],
    outputs: int = 1,
    **attributes: Any,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The node's outputs from the engine and from ONNX Runtime's CPU provider."""
    names = [f"in{i}" if a is not None else "" for i, a in enumerate(inputs)]
    out_names = [f"out{i}" for i in range(outputs)]
    node = helper.make_node(op, names, out_names, domain=domain, **attributes)
    present = [(n, a) for n, a in zip(names, inputs, strict=True) if a is not None]
    graph = helper.make_graph(
        [node],
        "node",
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, a.shape) for n, a in present],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in out_names],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MICROSOFT, 1)],
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    expected = session.run(None, dict(present))
    context = NodeContext(
        op_type=op,
        domain="" if domain == "ai.onnx" else domain,
        attributes=attributes,
        inputs=tuple(None if a is None else TensorInfo(a.shape, a.dtype) for a in inputs),
        outputs=tuple(TensorInfo(e.shape, e.dtype) for e in expected),
        features=gpu.features,
    )
    actual = run_lowering(gpu, lower(context), inputs, context.outputs)
    return actual, expected


CASES: list[tuple[str, str, list[np.ndarray | None], int, dict[str, Any]]] = [
    (
        "FusedConv",
        MICROSOFT,
        [
            rng_array(1, 8, 9, 9),
            rng_array(16, 8, 3, 3, seed=1),
            rng_array(16, seed=2),
            rng_array(1, 16, 9, 9, seed=3),
        ],
        1,
        {"activation": "Relu", "pads": [1, 1, 1, 1]},
    ),
    (
        "FusedConv",
        MICROSOFT,
        [rng_array(2, 4, 10, 10), rng_array(6, 2, 3, 3, seed=1), None],
        1,
        {"activation": "LeakyRelu", "activation_params": [0.2], "group": 2, "strides": [2, 2]},
    ),
    (
        "FusedConv",
        MICROSOFT,
        [rng_array(1, 3, 6, 6), rng_array(4, 3, 1, 1, seed=1), rng_array(4, seed=2)],
        1,
        {"activation": "Clip", "activation_params": [-0.5, 0.5]},
    ),
    (  # split K (576 deep, few blocks): the residual and activation after the parts' sum
        "FusedConv",
        MICROSOFT,
        [
            rng_array(1, 64, 7, 7),
            rng_array(32, 64, 3, 3, seed=1),
            rng_array(32, seed=2),
            rng_array(1, 32, 7, 7, seed=3),
        ],
        1,
        {"activation": "Relu", "pads": [1, 1, 1, 1]},
    ),
    (
        "FusedGemm",
        MICROSOFT,
        [rng_array(5, 70), rng_array(33, 70, seed=1), rng_array(33, seed=2)],
        1,
        {"transB": 1, "activation": "Relu"},
    ),
    (
        "FusedGemm",
        MICROSOFT,
        [rng_array(5, 7), rng_array(7, 3, seed=1), rng_array(5, 3, seed=2)],
        1,
        {"activation": "LeakyRelu", "activation_alpha": 0.1, "alpha": 0.5},
    ),
    (
        "FusedMatMul",
        MICROSOFT,
        [rng_array(2, 12, 40, 64), rng_array(2, 12, 50, 64, seed=1)],
        1,
        {"transB": 1, "alpha": 0.125},
    ),
    ("FusedMatMul", MICROSOFT, [rng_array(30, 20), rng_array(30, 10, seed=1)], 1, {"transA": 1}),
    ("Gelu", MICROSOFT, [rng_array(3, 50) * 3], 1, {}),
    ("BiasGelu", MICROSOFT, [rng_array(2, 4, 48) * 3, rng_array(48, seed=1)], 1, {}),
    ("FastGelu", MICROSOFT, [rng_array(2, 4, 48) * 3, rng_array(48, seed=1)], 1, {}),
    ("FastGelu", MICROSOFT, [rng_array(2, 48) * 3], 1, {}),
    ("QuickGelu", MICROSOFT, [rng_array(2, 48) * 3], 1, {"alpha": 1.5}),
    (
        "SkipLayerNormalization",
        MICROSOFT,
        [
            rng_array(2, 16, 768) + 2,
            rng_array(2, 16, 768, seed=1),
            rng_array(768, seed=2),
            rng_array(768, seed=3),
            rng_array(768, seed=4),
        ],
        4,
        {"epsilon": 1e-12},
    ),
    (
        "SkipLayerNormalization",
        MICROSOFT,
        [rng_array(2, 5, 32), rng_array(2, 5, 32, seed=1), rng_array(32, seed=2)],
        1,
        {},
    ),
    (
        "SkipSimplifiedLayerNormalization",
        MICROSOFT,
        [rng_array(2, 5, 64), rng_array(2, 5, 64, seed=1), rng_array(64, seed=2)],
        1,
        {"epsilon": 1e-6},
    ),
    (
        "SimplifiedLayerNormalization",
        "ai.onnx",
        [rng_array(3, 7, 200), rng_array(200, seed=1)],
        1,
        {"epsilon": 1e-6, "axis": -1},
    ),
]


@pytest.mark.parametrize(
    ("op", "domain", "inputs", "outputs", "attributes"),
    CASES,
    ids=[f"{case[0]}-{n}" for n, case in enumerate(CASES)],
)
def test_fused_op_matches_onnxruntime(
    gpu: Gpu, op: str, domain: str, inputs: list, outputs: int, attributes: dict
) -> None:
    actual, expected = run_both(gpu, op, domain, inputs, outputs, **attributes)
    for got, want in zip(actual, expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_every_claimed_op_outside_onnx_has_a_case_here() -> None:
    outside = {
        op
        for op in claimed_ops()
        if not onnx.defs.has(op.rsplit(".", 1)[-1], op.rsplit(".", 1)[0] if "." in op else "")
    }
    tested = {f"{domain}.{op}" if domain != "ai.onnx" else op for op, domain, *_ in CASES}
    assert outside <= tested, f"untested ops outside ONNX: {sorted(outside - tested)}"
