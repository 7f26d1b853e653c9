"""Epilogue fusion (``gpux/runtime/wgpu/fusion.py``, ``kernels/epilogue.py``): the elementwise
nodes after a MatMul, Gemm or Conv run in its store step, one kernel, and the outputs equal
ONNX Runtime CPU's; a product that anything else reads, that the caller reads, or that is
broadcast into a larger shape keeps its own kernel. Skipped where wgpu sees no adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.wgpu_dispatches import bert, resnet50
from gpux.runtime.wgpu.device import Gpu, run_lowering
from gpux.runtime.wgpu.kernel import NodeContext, TensorInfo
from gpux.runtime.wgpu.kernels.conv import lower_conv
from gpux.runtime.wgpu.kernels.elementwise import Step
from gpux.runtime.wgpu.kernels.epilogue import VALUE, Epilogue
from gpux.runtime.wgpu.kernels.matmul import lower_matmul
from tests.runtime.wgpu.graphs import checked_kernels, load_checked, save_graph

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

FLOAT = TensorProto.FLOAT


pytestmark = pytest.mark.usefixtures("software_adapter")


def _model(
    tmp_path: Path,
    nodes: list[Any],
    inputs: dict[str, list[int]],
    outputs: list[str],
    constants: dict[str, np.ndarray[Any, Any]],
) -> Path:
    return save_graph(
        tmp_path,
        nodes,
        [helper.make_tensor_value_info(n, FLOAT, shape) for n, shape in inputs.items()],
        [helper.make_tensor_value_info(n, FLOAT, None) for n in outputs],
        constants,
    )


def _random(*shape: int, seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(
    ("m", "k", "n"),
    [
        (6, 24, 40),  # a ragged block
        (2, 24, 40),  # the thin kernel (a few rows)
        (8, 1024, 16),  # split K: the epilogue runs in the dispatch that sums the parts
    ],
)
def test_matmul_bias_gelu_and_residual_are_one_kernel(
    tmp_path: Path, m: int, k: int, n: int
) -> None:
    """y = gelu(x @ w + bias) + r, GELU written out as torch exports it (erf)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["p"]),
        helper.make_node("Add", ["p", "bias"], ["u"]),
        helper.make_node("Div", ["u", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["f"]),
        helper.make_node("Mul", ["u", "f"], ["g"]),
        helper.make_node("Mul", ["g", "half"], ["h"]),
        helper.make_node("Add", ["h", "r"], ["y"]),
    ]
    constants = {
        "w": _random(k, n, seed=1) / np.float32(np.sqrt(k)),
        "bias": _random(n, seed=2),
        "sqrt2": np.array(np.sqrt(2.0), np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
    }
    path = _model(tmp_path, nodes, {"x": [m, k], "r": [m, n]}, ["y"], constants)
    kernels = checked_kernels(path, {"x": _random(m, k), "r": _random(m, n, seed=3)}, atol=1e-4)
    # ONNX Runtime's optimizer writes MatMul + Add as a Gemm with the bias.
    assert kernels == ["Gemm+Div+Erf+Add+Mul+Mul+Add"]


@pytest.mark.parametrize("op", ["MatMul", "Conv"])
def test_a_float16_product_and_epilogue_at_the_kernel(gpu: Gpu, op: str) -> None:
    """f16 in and out, f32 in between: the bias Add, the Relu and the residual Add see the f32
    value (the kernel's lowering with an Epilogue, as fusion builds it; ONNX Runtime's CPU
    optimizer would put Casts around an f16 MatMul)."""
    if "shader-f16" not in gpu.features:
        pytest.skip("the adapter lacks shader-f16")
    f16 = np.dtype(np.float16)
    if op == "MatMul":
        a, b = _random(3, 5, 16).astype(f16), (_random(16, 12, seed=1) / 4).astype(f16)
        product = a.astype(np.float32) @ b.astype(np.float32)
        bias = _random(12, seed=2).astype(f16)
    else:
        a, b = _random(1, 4, 6, 6).astype(f16), (_random(8, 4, 3, 3, seed=1) / 6).astype(f16)
        product = _conv_reference(a.astype(np.float32), b.astype(np.float32))
        bias = _random(8, 1, 1, seed=2).astype(f16)
    residual = _random(*product.shape, seed=3).astype(f16)
    shape = product.shape
    out = TensorInfo(shape, f16)

    def step(kind: str, *inputs: TensorInfo) -> NodeContext:
        return NodeContext(kind, "", {}, inputs, (out,), features=gpu.features)

    steps = (
        Step(step("Add", out, TensorInfo(bias.shape, f16)), (VALUE, 0)),
        Step(step("Relu", out), ("t0",)),
        Step(step("Add", out, out), ("t1", 1)),
    )
    epilogue = Epilogue(
        steps, (TensorInfo(bias.shape, f16), TensorInfo(shape, f16)), {}, first_input=2
    )
    attributes = {"pads": [1, 1, 1, 1]} if op == "Conv" else {}
    context = NodeContext(
        op,
        "",
        attributes,
        (TensorInfo(a.shape, f16), TensorInfo(b.shape, f16)),
        (out,),
        features=gpu.features,
    )
    lower = lower_matmul if op == "MatMul" else lower_conv
    (actual,) = run_lowering(gpu, lower(context, epilogue=epilogue), [a, b, bias, residual], [out])
    expected = np.maximum(product + bias.astype(np.float32), 0) + residual.astype(np.float32)
    assert actual.dtype == f16
    np.testing.assert_allclose(actual.astype(np.float32), expected, rtol=2e-2, atol=2e-2)


def _conv_reference(x: np.ndarray[Any, Any], w: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A 3x3 convolution, stride 1, pad 1, as numpy sums."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    height, width = x.shape[2:]
    out = np.zeros((x.shape[0], w.shape[0], height, width), np.float32)
    for i in range(3):
        for j in range(3):
            window = padded[:, :, i : i + height, j : j + width]
            out += np.einsum("nchw,oc->nohw", window, w[:, :, i, j])
    return out


def test_an_operand_broadcast_along_rows_or_whole_is_read_at_each_output(
    tmp_path: Path,
) -> None:
    """Not a per-column bias: a per-row one ([m, 1]), a full tensor and a batch-broadcast
    one, on a batched MatMul."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["p"]),
        helper.make_node("Add", ["p", "rows"], ["a"]),
        helper.make_node("Mul", ["a", "full"], ["b"]),
        helper.make_node("Sub", ["b", "per_batch"], ["y"]),
    ]
    constants = {"w": _random(16, 12, seed=1), "rows": _random(5, 1, seed=2)}
    inputs = {"x": [3, 5, 16], "full": [3, 5, 12], "per_batch": [3, 1, 1]}
    feed = {
        "x": _random(3, 5, 16),
        "full": _random(3, 5, 12, seed=3),
        "per_batch": _random(3, 1, 1, seed=4),
    }
    path = _model(tmp_path, nodes, inputs, ["y"], constants)
    assert checked_kernels(path, feed, atol=1e-4) == ["MatMul+Add+Mul+Sub"]


def test_a_product_read_elsewhere_or_by_the_caller_keeps_its_kernel(tmp_path: Path) -> None:
    """p feeds the Relu and a Tanh: neither may be folded (the other needs p as it is); q is
    a graph output: its Sigmoid must not be folded either."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["p"]),
        helper.make_node("Relu", ["p"], ["r"]),
        helper.make_node("Tanh", ["p"], ["s"]),
        helper.make_node("MatMul", ["x2", "w2"], ["q"]),
        helper.make_node("Sigmoid", ["q"], ["t"]),
    ]
    constants = {"w": _random(8, 8), "w2": _random(8, 8, seed=2)}
    path = _model(tmp_path, nodes, {"x": [4, 8], "x2": [4, 8]}, ["r", "s", "q", "t"], constants)
    kernels = checked_kernels(path, {"x": _random(4, 8, seed=1), "x2": _random(4, 8, seed=3)})
    assert sorted(kernels) == ["MatMul", "MatMul", "Relu", "Sigmoid", "Tanh"], kernels


def test_a_product_broadcast_into_a_larger_shape_is_not_folded(tmp_path: Path) -> None:
    """p is [1, 8]; the Add broadcasts it to [4, 8]: more outputs than the product has."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["p"]),
        helper.make_node("Add", ["p", "big"], ["y"]),
    ]
    path = _model(tmp_path, nodes, {"x": [1, 8], "big": [4, 8]}, ["y"], {"w": _random(8, 8)})
    kernels = checked_kernels(path, {"x": _random(1, 8, seed=1), "big": _random(4, 8, seed=2)})
    assert kernels == ["MatMul", "Add"]


def test_an_epilogue_past_the_binding_limit_stays_a_kernel_of_its_own(tmp_path: Path) -> None:
    """Six tensors to add: with the MatMul's three bindings, nine, past WebGPU's eight."""
    names = [f"e{k}" for k in range(6)]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["v0"])]
    nodes += [
        helper.make_node("Add", [f"v{k}", name], [f"v{k + 1}"]) for k, name in enumerate(names)
    ]
    inputs = {"x": [4, 8], **{name: [4, 8] for name in names}}
    feed = {name: _random(4, 8, seed=k) for k, name in enumerate(inputs)}
    path = _model(tmp_path, nodes, inputs, ["v6"], {"w": _random(8, 8)})
    product, *rest = checked_kernels(path, feed, atol=1e-4)
    # ONNX Runtime may take the first Add into a Gemm: still past the limit with the rest.
    assert product in ("MatMul", "Gemm") and rest and set(rest[0].split("+")) == {"Add"}, rest


def test_conv_with_folded_batchnorm_relu_and_a_residual_is_one_kernel(tmp_path: Path) -> None:
    """relu(bn(conv(x)) + x), and relu(bn(conv(x))) read by it: both convolutions fold."""
    channels = 8
    rng = np.random.default_rng(0)
    constants: dict[str, np.ndarray[Any, Any]] = {}
    nodes = []
    for n, source in ((0, "x"), (1, "r0")):
        constants[f"w{n}"] = _random(channels, channels, 3, 3, seed=n) / np.float32(9)
        for role in ("scale", "shift", "mean"):
            constants[f"{role}{n}"] = rng.uniform(-1, 1, channels).astype(np.float32)
        constants[f"var{n}"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
        nodes += [
            helper.make_node("Conv", [source, f"w{n}"], [f"c{n}"], pads=[1, 1, 1, 1]),
            helper.make_node(
                "BatchNormalization",
                [f"c{n}", f"scale{n}", f"shift{n}", f"mean{n}", f"var{n}"],
                [f"b{n}"],
            ),
        ]
        if n == 0:
            nodes.append(helper.make_node("Relu", ["b0"], ["r0"]))
    nodes += [
        helper.make_node("Add", ["b1", "x"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    path = _model(tmp_path, nodes, {"x": [1, channels, 6, 6]}, ["y"], constants)
    kernels = checked_kernels(path, {"x": _random(1, channels, 6, 6)}, atol=1e-4)
    assert kernels == ["Conv+Relu", "Conv+Add+Relu"]


def test_a_bert_like_graph_folds_every_bias_gelu_scale_and_residual(tmp_path: Path) -> None:
    """Two small layers of benchmarks/wgpu_dispatches.py's BERT: per layer Q, K, V (MatMul +
    bias, stored split into heads; one kernel for the three), the output projection (+ bias + residual), the FFN (Gemm +
    GELU through a Reshape; Gemm + residual) are one kernel each, and so is the attention:
    the scores (MatMul / sqrt(d) + mask), Softmax and the context (MatMul, stored with the
    heads merged), ``kernels/attention.py``."""
    path = bert(tmp_path / "bert.onnx", seq=16, layers=2, hidden=64, heads=4, vocab=100)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 100, (1, 16)).astype(np.int64)
    mask = np.ones((1, 16), np.int64)
    mask[0, 12:] = 0
    kernels = checked_kernels(path, {"input_ids": ids, "attention_mask": mask}, atol=1e-4)
    per_layer = {
        "|".join(["MatMul+Add+Reshape+Transpose"] * 3): 1,  # Q, K, V: one GEMM, three stores
        "MatMul+Div+Add+Softmax+MatMul+Transpose": 1,
        "MatMul+Add+Add": 1,
        "Gemm+Reshape+Div+Erf+Add+Mul+Mul": 1,
        "Gemm+Reshape+Add": 1,
    }
    for op, count in per_layer.items():
        assert kernels.count(op) == 2 * count, (op, kernels)
    assert "Gemm+Tanh" in kernels  # the pooler
    assert not {"Add", "Div+Erf+Add+Mul+Mul", "Div+Add", "Transpose", "Softmax"} & set(kernels)


@pytest.mark.parametrize(
    ("perm", "k"),
    [
        ((0, 2, 1, 3), 16),  # Q and V: heads split
        ((0, 2, 3, 1), 16),  # K: heads split, transposed for the scores
        (None, 1024),  # the default perm (reversed), after split K
    ],
)
def test_a_transpose_after_the_product_is_a_transposed_store(
    tmp_path: Path, perm: tuple[int, ...] | None, k: int
) -> None:
    """MatMul + bias, Reshape to heads, Transpose: one kernel, stored where the Transpose puts
    each value."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["p"]),
        helper.make_node("Add", ["p", "bias"], ["a"]),
        helper.make_node("Reshape", ["a", "heads"], ["h"]),
        helper.make_node("Transpose", ["h"], ["y"], **({"perm": list(perm)} if perm else {})),
    ]
    constants = {
        "w": _random(k, 24, seed=1) / np.float32(np.sqrt(k)),
        "bias": _random(24, seed=2),
        "heads": np.array([1, 6, 3, 8], np.int64),
    }
    path = _model(tmp_path, nodes, {"x": [1, 6, k]}, ["y"], constants)
    kernels = checked_kernels(path, {"x": _random(1, 6, k)}, atol=1e-4)
    assert len(kernels) == 1 and kernels[0].endswith("+Reshape+Transpose"), kernels


def test_a_transpose_of_a_value_read_elsewhere_keeps_its_kernel(tmp_path: Path) -> None:
    """p is read by two Transposes: neither may be folded (the other needs p as it is)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["p"]),
        helper.make_node("Transpose", ["p"], ["y"], perm=[0, 2, 1]),
        helper.make_node("Transpose", ["p"], ["z"], perm=[1, 0, 2]),
    ]
    path = _model(tmp_path, nodes, {"x": [2, 4, 8]}, ["y", "z"], {"w": _random(8, 6)})
    kernels = checked_kernels(path, {"x": _random(2, 4, 8, seed=1)})
    assert sorted(kernels) == ["MatMul", "Transpose", "Transpose"], kernels


@pytest.mark.slow  # ~10 s on lavapipe
def test_a_resnet_like_graph_folds_every_relu_and_residual(tmp_path: Path) -> None:
    """One bottleneck per stage of benchmarks/wgpu_dispatches.py's ResNet-50 at 32x32: every
    Relu and residual Add is in a Conv's kernel."""
    path = resnet50(tmp_path / "resnet.onnx", size=32, blocks=(1, 1, 1, 1))
    kernels = checked_kernels(path, {"pixels": _random(1, 3, 32, 32)}, rtol=1e-4, atol=1e-4)
    assert kernels.count("Conv+Relu") == 1 + 2 * 4
    assert kernels.count("Conv+Add+Relu") == 4
    assert not {"Relu", "Add+Relu"} & set(kernels), kernels


@pytest.mark.parametrize(
    ("m", "k"),
    [
        (6, 16),  # blocks
        (2, 16),  # the thin kernel
        (8, 1024),  # split K: the parts are summed, then each column goes to its part
    ],
)
def test_sibling_matmuls_of_one_input_are_one_kernel(tmp_path: Path, m: int, k: int) -> None:
    """Q, K and V projections of one x (each + bias, split into heads, K transposed its own
    way), of different widths, and a fourth product with no epilogue: one GEMM over their
    weights side by side, each column stored through its part's epilogue."""
    nodes = []
    constants: dict[str, np.ndarray[Any, Any]] = {}
    perms = {"q": [0, 2, 1, 3], "k": [0, 2, 3, 1], "v": [0, 2, 1, 3]}
    widths = {"q": 8, "k": 8, "v": 12}
    for seed, (name, perm) in enumerate(perms.items()):
        width = widths[name]
        constants[f"w_{name}"] = _random(k, width, seed=seed + 1) / np.float32(np.sqrt(k))
        constants[f"b_{name}"] = _random(width, seed=seed + 10)
        constants[f"shape_{name}"] = np.array([1, m, 2, width // 2], np.int64)
        nodes += [
            helper.make_node("MatMul", ["x", f"w_{name}"], [f"p_{name}"]),
            helper.make_node("Add", [f"p_{name}", f"b_{name}"], [f"a_{name}"]),
            helper.make_node("Reshape", [f"a_{name}", f"shape_{name}"], [f"h_{name}"]),
            helper.make_node("Transpose", [f"h_{name}"], [name], perm=perm),
        ]
    constants["w_plain"] = _random(k, 4, seed=20)
    nodes.append(helper.make_node("MatMul", ["x", "w_plain"], ["plain"]))
    path = _model(tmp_path, nodes, {"x": [1, m, k]}, ["q", "k", "v", "plain"], constants)
    kernels = checked_kernels(path, {"x": _random(1, m, k)}, atol=1e-4)
    assert len(kernels) == 1 and kernels[0].count("|") == 3, kernels


def test_a_sibling_whose_epilogue_reads_a_later_value_keeps_its_kernel(tmp_path: Path) -> None:
    """q = x @ w1; r = x @ w2 * tanh(q): q's kernel folds tanh and the Mul, reading p, which
    one kernel for both would never write; they stay two kernels."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["q"]),
        helper.make_node("Tanh", ["q"], ["t"]),
        helper.make_node("MatMul", ["x", "w2"], ["p"]),
        helper.make_node("Mul", ["p", "t"], ["r"]),
    ]
    constants = {"w1": _random(8, 6, seed=1), "w2": _random(8, 6, seed=2)}
    path = _model(tmp_path, nodes, {"x": [4, 8]}, ["r"], constants)
    kernels = checked_kernels(path, {"x": _random(4, 8)})
    assert sorted(kernels) == ["MatMul", "MatMul+Tanh+Mul"], kernels


def test_siblings_past_the_binding_limit_keep_their_kernels_and_add_no_weights(
    tmp_path: Path,
) -> None:
    """Three products of one x, each + two residuals read from the caller: one kernel would
    bind x, the weights, three outputs and six residuals, past WebGPU's 8; each keeps its own,
    and no concatenated weights are left in the graph."""
    nodes, constants, inputs = [], {}, {"x": [4, 8]}
    for part in range(3):
        constants[f"w{part}"] = _random(8, 6, seed=part + 1)
        inputs |= {f"r{part}": [4, 6], f"s{part}": [4, 6]}
        nodes += [
            helper.make_node("MatMul", ["x", f"w{part}"], [f"p{part}"]),
            helper.make_node("Mul", [f"p{part}", f"r{part}"], [f"m{part}"]),
            helper.make_node("Mul", [f"m{part}", f"s{part}"], [f"y{part}"]),
        ]
    path = _model(tmp_path, nodes, inputs, ["y0", "y1", "y2"], constants)
    feed = {name: _random(*shape, seed=n) for n, (name, shape) in enumerate(inputs.items())}
    backend, _ = load_checked(path, feed, 1e-5, 1e-5)
    try:
        kernels = [
            lowered.node.op_type
            for segment in backend.executor.partition.segments
            for lowered in segment.lowered
            if lowered.lowering.dispatches
        ]
        made = [name for name in backend.executor.graph.constants if "gpux-siblings" in name]
    finally:
        backend.close()
    assert kernels == ["MatMul+Mul+Mul"] * 3, kernels
    assert made == []
