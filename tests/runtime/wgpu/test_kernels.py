"""Kernels at the sizes real models use, which ONNX's node tests (a few elements each) do not
reach: several GEMM tiles and K steps, ragged edges, grouped and strided convolutions, ResNet
and BERT shapes in small, float16. Expected values come from ONNX's reference evaluator."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("wgpu", reason="wgpu is not installed (the webgpu extra)")

import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

from gpux.runtime.wgpu import kernels  # noqa: F401  (registers the kernels)
from gpux.runtime.wgpu.device import Gpu, run_lowering
from gpux.runtime.wgpu.kernel import NodeContext, TensorInfo, lower
from gpux.runtime.wgpu.kernels import gemm

OPSET = 17


def run_node(
    gpu: Gpu,
    op: str,
    inputs: list[np.ndarray],
    constant: tuple[int, ...] = (),
    opset: int = OPSET,
    **attributes: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """The node's first output from the engine and from ONNX's reference evaluator."""
    names = [f"in{i}" for i in range(len(inputs))]
    node = helper.make_node(op, names, ["out"], **attributes)
    graph = helper.make_graph(
        [node],
        "node",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in zip(names, inputs, strict=True)
        ],
        [helper.make_tensor_value_info("out", onnx.TensorProto.UNDEFINED, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    (expected,) = ReferenceEvaluator(model).run(None, dict(zip(names, inputs, strict=True)))
    context = NodeContext(
        op_type=op,
        domain="",
        attributes=attributes,
        inputs=tuple(TensorInfo(a.shape, a.dtype) for a in inputs),
        outputs=(TensorInfo(expected.shape, expected.dtype),),
        constants={i: inputs[i] for i in constant},
        features=gpu.features,
        opset=opset,
    )
    (actual,) = run_lowering(gpu, lower(context), inputs, context.outputs)
    return actual, expected


def random(*shape: int, dtype: type = np.float32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(dtype)


def needs_f16(gpu: Gpu, dtype: type) -> None:
    if dtype == np.float16 and "shader-f16" not in gpu.features:
        pytest.skip("the adapter lacks shader-f16")


TOLERANCE = {np.float32: {"rtol": 1e-4, "atol": 1e-4}, np.float16: {"rtol": 2e-2, "atol": 2e-2}}


@pytest.fixture(params=gemm.SIDES, ids=lambda side: f"block{side}")
def block_side(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Every GEMM block size the template writes, whatever the problem's size."""
    monkeypatch.setattr(gemm, "TILES", (request.param,))
    return int(request.param)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(
    ("a_shape", "b_shape"),
    [
        ((130, 70), (70, 97)),  # ragged tiles in M, N and K
        ((2, 3, 65, 33), (33, 129)),  # batch broadcast of B
        ((1, 128, 64), (4, 64, 17)),  # batch broadcast of A
        ((200,), (200, 3)),  # 1-D operand
    ],
)
def test_matmul_across_tiles(
    gpu: Gpu, block_side: int, dtype: type, a_shape: tuple, b_shape: tuple
) -> None:
    needs_f16(gpu, dtype)
    actual, expected = run_node(
        gpu, "MatMul", [random(*a_shape, dtype=dtype), random(*b_shape, dtype=dtype)]
    )
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])


def test_gemm_transposed_with_row_bias(gpu: Gpu) -> None:
    a, b, c = random(100, 3), random(77, 100), random(77)
    actual, expected = run_node(gpu, "Gemm", [a, b, c], transA=1, transB=1, alpha=0.5, beta=2.0)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "attributes"),
    [
        # ResNet's stem in small: 7x7 stride 2 pad 3
        ((2, 3, 23, 23), (70, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
        # bottleneck 1x1 and 3x3 convolutions
        ((1, 80, 9, 9), (33, 80, 1, 1), {}),
        # 1x1 windows read a plain matrix (conv.load_b): a downsampling stride over an odd
        # size, two images of a grouped one, a 1-D one, and a padded one (the general gather)
        ((2, 24, 11, 9), (20, 24, 1, 1), {"strides": [2, 2]}),
        ((2, 12, 5, 7), (9, 4, 1, 1), {"group": 3}),
        ((2, 6, 17), (5, 6, 1), {"strides": [3]}),
        ((1, 5, 6, 6), (4, 5, 1, 1), {"pads": [1, 0, 0, 2]}),
        ((1, 16, 10, 12), (16, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
        # grouped, dilated, asymmetric padding
        ((1, 8, 11, 9), (12, 2, 3, 3), {"group": 4, "dilations": [2, 1], "pads": [0, 1, 2, 0]}),
        # depthwise with SAME_UPPER
        ((1, 6, 8, 8), (6, 1, 3, 3), {"group": 6, "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
        # 1-D
        ((2, 5, 40), (7, 5, 4), {"strides": [3]}),
    ],
)
def test_conv_shapes(
    gpu: Gpu, block_side: int, dtype: type, x_shape: tuple, w_shape: tuple, attributes: dict
) -> None:
    needs_f16(gpu, dtype)
    x, w = random(*x_shape, dtype=dtype), random(*w_shape, dtype=dtype, seed=1)
    bias = random(w_shape[0], dtype=dtype, seed=2)
    actual, expected = run_node(gpu, "Conv", [x, w, bias], **attributes)
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])


def test_pools_of_resnet(gpu: Gpu) -> None:
    x = random(2, 5, 17, 17)
    actual, expected = run_node(
        gpu, "MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
    )
    np.testing.assert_array_equal(actual, expected)
    actual, expected = run_node(gpu, "GlobalAveragePool", [x])
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_bert_rows(gpu: Gpu, dtype: type) -> None:
    """BERT's row ops at its sizes: attention softmax over 128 keys, layer norm over 768
    features (rows longer than a workgroup), and the reshuffle of heads."""
    needs_f16(gpu, dtype)
    scores = random(1, 12, 128, 128, dtype=dtype) * 4
    actual, expected = run_node(gpu, "Softmax", [scores], axis=-1)
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])
    actual, expected = run_node(gpu, "Softmax", [random(2, 300, 3, dtype=dtype)], axis=1)
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])
    hidden = random(1, 128, 768, dtype=dtype) + 3  # a large mean: the two-pass variance matters
    scale, bias = random(768, dtype=dtype, seed=1), random(768, dtype=dtype, seed=2)
    actual, expected = run_node(gpu, "LayerNormalization", [hidden, scale, bias], epsilon=1e-12)
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])
    heads = random(1, 128, 12, 64, dtype=dtype)
    actual, expected = run_node(gpu, "Transpose", [heads], perm=[0, 2, 3, 1])
    np.testing.assert_array_equal(actual, expected)


def test_embedding_gather_with_negative_ids(gpu: Gpu) -> None:
    table = random(1000, 64)
    ids = np.array([[0, 5, 999, -1, 17]], dtype=np.int64)
    actual, expected = run_node(gpu, "Gather", [table, ids])
    np.testing.assert_array_equal(actual, expected)


def test_conv_transpose_upsampling(gpu: Gpu) -> None:
    """A segmentation head's 2x upsampling (PP-OCR's detector): stride 2, grouped, biased.
    ONNX's reference has no groups for ConvTranspose: the expected value is each group's
    ConvTranspose, concatenated."""
    x, w, bias = random(2, 16, 10, 12), random(16, 4, 4, 4, seed=1), random(8, seed=2)
    attributes = {"strides": [2, 2], "pads": [1, 1, 1, 1]}
    halves = [
        run_node(
            gpu,
            "ConvTranspose",
            [x[:, 8 * g : 8 * (g + 1)], w[8 * g : 8 * (g + 1)], bias[4 * g : 4 * (g + 1)]],
            **attributes,
        )
        for g in range(2)
    ]
    for actual, expected in halves:
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    expected = np.concatenate([half[1] for half in halves], axis=1)
    context = NodeContext(
        op_type="ConvTranspose",
        domain="",
        attributes={**attributes, "group": 2},
        inputs=tuple(TensorInfo(a.shape, a.dtype) for a in (x, w, bias)),
        outputs=(TensorInfo(expected.shape, expected.dtype),),
        features=gpu.features,
        opset=OPSET,
    )
    (grouped,) = run_lowering(gpu, lower(context), [x, w, bias], context.outputs)
    np.testing.assert_allclose(grouped, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("scales", "attributes"),
    [
        (
            [1, 1, 2, 2],
            {
                "mode": "nearest",
                "coordinate_transformation_mode": "asymmetric",
                "nearest_mode": "floor",
            },
        ),
        ([1, 1, 1.75, 0.6], {"mode": "linear"}),
        ([1, 1, 3, 3], {"mode": "linear", "coordinate_transformation_mode": "align_corners"}),
    ],
)
def test_resize_feature_maps(gpu: Gpu, scales: list[float], attributes: dict) -> None:
    """Resizes of a feature pyramid (PP-OCR's detector: nearest 2x; bilinear elsewhere)."""
    x = random(2, 3, 20, 30)
    roi = np.zeros(0, dtype=np.float32)
    actual, expected = run_node(
        gpu, "Resize", [x, roi, np.array(scales, dtype=np.float32)], constant=(2,), **attributes
    )
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_slice_bounds_beyond_int32_stay_on_the_host(gpu: Gpu) -> None:
    """Exporters write "to the end" as INT64_MAX and reversal as INT64_MIN: the kernel reads
    them at load, and they never go to the device, whose integers are 32-bit."""
    x = random(4, 6, 5)
    starts = np.array([-1, 1], dtype=np.int64)
    ends = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max], dtype=np.int64)
    axes, steps = np.array([0, 2], dtype=np.int64), np.array([-1, 2], dtype=np.int64)
    actual, expected = run_node(gpu, "Slice", [x, starts, ends, axes, steps], constant=(1, 2, 3, 4))
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize(("exclusive", "reverse"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumulative_sum_along_an_inner_axis(gpu: Gpu, exclusive: int, reverse: int) -> None:
    x, axis = random(3, 50, 4), np.array(1, dtype=np.int64)
    actual, expected = run_node(
        gpu, "CumSum", [x, axis], constant=(1,), exclusive=exclusive, reverse=reverse
    )
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_attention_mask_broadcast_and_gelu(gpu: Gpu, dtype: type) -> None:
    """BERT's elementwise ops at size: the mask added to every head's scores (broadcast over
    heads and queries), Where on a bool mask, and the erf Gelu of the feed-forward layer."""
    needs_f16(gpu, dtype)
    scores, mask = random(2, 12, 64, 64, dtype=dtype), random(2, 1, 1, 64, dtype=dtype, seed=1)
    actual, expected = run_node(gpu, "Add", [scores, mask])
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])
    keep = np.random.default_rng(3).random((1, 1, 64, 64)) > 0.5
    actual, expected = run_node(gpu, "Where", [keep, scores, np.full((1,), -1e4, dtype=dtype)])
    np.testing.assert_array_equal(actual, expected)
    hidden = random(2, 64, 3072, dtype=dtype) * 3
    actual, expected = run_node(gpu, "Gelu", [hidden], opset=20)
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("op", ["MatMul", "Add", "Softmax", "Transpose"])
def test_float16_needs_the_adapter_feature(op: str) -> None:
    """Without shader-f16 a float16 node is refused (and runs on the CPU), never computed in
    another precision behind the caller's back."""
    from gpux.runtime.wgpu.kernel import Unsupported

    half = TensorInfo((4, 4), np.dtype(np.float16))
    inputs = (half, half) if op in ("MatMul", "Add") else (half,)
    context = NodeContext(op, "", {}, inputs, (half,), features=frozenset())
    with pytest.raises(Unsupported, match="shader-f16"):
        lower(context)


@pytest.mark.parametrize("rows", [1, 3])
def test_thin_gemm_of_a_classifier(gpu: Gpu, rows: int) -> None:
    """A batch-1 classifier head (PyTorch's Linear exports as Gemm with transB) and a few rows:
    the thin kernel, one invocation per output column."""
    assert rows <= gemm.THIN_ROWS
    a, b, c = random(rows, 2048), random(1000, 2048, seed=1), random(1000, seed=2)
    actual, expected = run_node(gpu, "Gemm", [a, b, c], transB=1)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    actual, expected = run_node(gpu, "MatMul", [a, random(2048, 77, seed=3)])
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_split_k_sums_its_parts(gpu: Gpu, block_side: int) -> None:
    """Few blocks over a deep K (a batch-1 ResNet's last convolutions) split K across
    workgroups and sum the parts in a second dispatch, epilogue (bias) included."""
    a, b = random(40, 1200), random(1200, 50, seed=1)
    problem = gemm.Gemm(1, 40, 50, 1200, "", "")
    assert gemm.split_count(problem, block_side) > 1
    actual, expected = run_node(gpu, "MatMul", [a, b])
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    x, w, bias = random(1, 64, 7, 7), random(48, 64, 3, 3, seed=1), random(48, seed=2)
    actual, expected = run_node(gpu, "Conv", [x, w, bias], pads=[1, 1, 1, 1])
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("m", "k", "n"),
    [
        (256, 64, 384),  # whole blocks at every side: no bounds check is written
        (128, 70, 64),  # a ragged K step only
        (67, 48, 130),  # ragged rows and columns, whole K steps
    ],
)
@pytest.mark.parametrize(("trans_a", "trans_b"), [(0, 0), (1, 1), (0, 1)])
def test_gemm_edges_and_layouts(
    gpu: Gpu, block_side: int, m: int, k: int, n: int, trans_a: int, trans_b: int
) -> None:
    """Every block side with and without ragged edges, and operands stored either way (the
    template stages each slice along the axis that is contiguous in memory)."""
    a = random(*((k, m) if trans_a else (m, k)))
    b = random(*((n, k) if trans_b else (k, n)), seed=1)
    bias = random(n, seed=2)
    actual, expected = run_node(
        gpu, "Gemm", [a, b, bias], transA=trans_a, transB=trans_b, alpha=0.5, beta=2.0
    )
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


RECTANGLES = [(16, 64), (64, 16), (32, 128), (128, 16), (16, 32)]


@pytest.fixture(params=RECTANGLES, ids=lambda block: f"block{block[0]}x{block[1]}")
def rectangle(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """A block of rows x columns, whatever the problem's size."""
    block = tuple(request.param)
    monkeypatch.setattr(gemm, "block_shape", lambda problem: block)
    return block


def test_rectangular_blocks(gpu: Gpu, rectangle: tuple) -> None:
    """Blocks longer one way: ragged edges both ways, operands stored either way, a batch,
    split K, a convolution."""
    a, b, bias = random(67, 48), random(130, 48, seed=1), random(130, seed=2)
    actual, expected = run_node(gpu, "Gemm", [a, b, bias], transB=1, alpha=0.5, beta=2.0)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    a, b = random(33, 130), random(33, 97, seed=1)
    actual, expected = run_node(gpu, "Gemm", [a, b], transA=1)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    a, b = random(2, 3, 65, 33), random(33, 129, seed=1)
    actual, expected = run_node(gpu, "MatMul", [a, b])
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    a, b = random(40, 1203), random(1203, 50, seed=1)
    assert gemm.split_count(gemm.Gemm(1, 40, 50, 1203, "", ""), rectangle) > 1
    actual, expected = run_node(gpu, "MatMul", [a, b])
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    x, w, bias = random(1, 80, 9, 9), random(33, 80, 3, 3, seed=1), random(33, seed=2)
    actual, expected = run_node(gpu, "Conv", [x, w, bias], pads=[1, 1, 1, 1])
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("m", "n", "k", "block"),
    [
        (256, 3136, 64, (64, 32)),  # ResNet-50 b1 stage 1, 64->256: squares give 32x32
        (64, 3136, 576, (32, 16)),  # its 3x3 64->64: squares give 16x16
        (4096, 3072, 768, (128, 128)),  # BERT b32 FFN up: the largest square, as before
        (4096, 768, 3072, (64, 64)),  # BERT b32 FFN down: no rectangle is as large as 64x64
        (128, 768, 768, (16, 16)),  # BERT b1: nothing larger gives 256 blocks
        (512, 49, 4608, (16, 16)),  # ResNet-50 b1 stage 4: none does; split K as before
    ],
)
def test_block_shape_prefers_the_most_reuse_that_fills_the_gpu(
    m: int, n: int, k: int, block: tuple
) -> None:
    problem = gemm.Gemm(1, m, n, k, "", "")
    assert gemm.block_shape(problem) == block
    assert gemm.workgroup_count(problem, block) >= min(
        gemm.ENOUGH_WORKGROUPS, gemm.workgroup_count(problem, 16)
    )


def test_block_shape_with_squares_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gemm, "MAX_ASPECT", 1)
    assert gemm.block_shape(gemm.Gemm(1, 256, 3136, 64, "", "")) == (32, 32)


def test_gemm_shader_keeps_no_local_arrays() -> None:
    """The reason for the template's shape: a function-local array indexed at run time is kept
    in local memory by NVIDIA's compiler (naga guards the indexes), so none may appear; and
    sizes that fill whole blocks and K steps get no bounds checks."""
    import re

    for side in [*gemm.SIDES, *RECTANGLES]:
        for problem in (gemm.Gemm(2, 130, 97, 70, "", ""), gemm.Gemm(1, 128, 128, 64, "", "")):
            for splits in (1, 3):
                shader = gemm.gemm_shader(problem, side, splits)
                assert not re.search(r"var \w+\s*:\s*array", shader), shader
        aligned = gemm.gemm_shader(gemm.Gemm(1, 256, 384, 64, "", ""), side)
        assert "if (" not in aligned
    assert "array" not in gemm.thin_gemm_shader(gemm.Gemm(1, 4, 10, 10, "", ""))


def test_batched_split_k_and_thin(gpu: Gpu) -> None:
    """Split-K over a batch of matrices with a K that is not a whole number of steps, and the
    thin kernel over a batch."""
    a, b = random(3, 40, 1203), random(1203, 50, seed=1)
    assert gemm.split_count(gemm.Gemm(3, 40, 50, 1203, "", ""), 16) > 1
    actual, expected = run_node(gpu, "MatMul", [a, b])
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    a, b = random(2, 3, 100), random(2, 100, 20, seed=1)
    actual, expected = run_node(gpu, "MatMul", [a, b])
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_conv_batch_with_every_window_attribute(gpu: Gpu, block_side: int) -> None:
    """Several images through a grouped, strided, dilated, asymmetrically padded window."""
    x, w, bias = random(3, 8, 13, 11), random(16, 4, 3, 3, seed=1), random(16, seed=2)
    attributes = {"group": 2, "strides": [2, 1], "dilations": [1, 2], "pads": [1, 2, 0, 1]}
    actual, expected = run_node(gpu, "Conv", [x, w, bias], **attributes)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("known_at_load", [True, False])
def test_trilu_diagonal_known_at_load_or_at_run(gpu: Gpu, known_at_load: bool) -> None:
    x, k = random(2, 5, 7), np.array(-1, dtype=np.int64)
    constant = (1,) if known_at_load else ()
    actual, expected = run_node(gpu, "Trilu", [x, k], constant=constant, upper=0)
    np.testing.assert_array_equal(actual, expected)
