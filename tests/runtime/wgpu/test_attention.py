"""Attention fusion (``gpux/runtime/wgpu/kernels/attention.py``, found by ``fusion.py``): the
scores' product, its scale and mask, Softmax, a guard on the probabilities and the product with
V (and the Transpose merging the heads) run as one kernel, with outputs equal to ONNX Runtime
CPU's; a chain the kernel cannot take keeps its kernels, and still answers the same. Skipped
where wgpu sees no adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpux.runtime.wgpu.kernels.attention import rows_per_workgroup
from tests.runtime.wgpu.graphs import checked_kernels, load_checked, save_graph

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

FLOAT = TensorProto.FLOAT

pytestmark = pytest.mark.usefixtures("software_adapter")


def _random(*shape: int, seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _kernels(path: Path, feed: dict[str, np.ndarray[Any, Any]]) -> list[str]:
    """The engine's kernels (views left out) after checking its outputs against ORT CPU's."""
    return checked_kernels(path, feed, rtol=1e-4, atol=1e-5)


def _model(
    tmp_path: Path,
    nodes: list[Any],
    inputs: dict[str, tuple[int, ...]],
    outputs: list[str],
    constants: dict[str, np.ndarray[Any, Any]],
    domains: tuple[str, ...] = (),
) -> Path:
    path = save_graph(
        tmp_path,
        nodes,
        [helper.make_tensor_value_info(n, FLOAT, list(shape)) for n, shape in inputs.items()],
        [helper.make_tensor_value_info(n, FLOAT, None) for n in outputs],
        constants,
    )
    if domains:
        model = onnx.load(str(path))
        model.opset_import.extend(helper.make_opsetid(domain, 1) for domain in domains)
        path.write_bytes(model.SerializeToString())
    return path


def _bert_attention(
    tmp_path: Path,
    batch: int,
    heads: int,
    s: int,
    t: int,
    d: int,
    dv: int,
    k_batch: tuple[int, ...] | None = None,
) -> tuple[Path, dict[str, np.ndarray[Any, Any]]]:
    """BERT's export: (Q @ K^T) / sqrt(d) + mask, Softmax, @ V, Transpose to [b, s, h, dv]."""
    k_batch = k_batch or (batch, heads)
    nodes = [
        helper.make_node("MatMul", ["q", "k"], ["scores"]),
        helper.make_node("Div", ["scores", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["context"]),
        helper.make_node("Transpose", ["context"], ["y"], perm=[0, 2, 1, 3]),
    ]
    mask = np.zeros((batch, 1, 1, t), np.float32)
    mask[:, :, :, t - max(1, t // 4) :] = -10000.0  # padding keys
    shapes = {
        "q": (batch, heads, s, d),
        "k": (*k_batch, d, t),
        "v": (*k_batch, t, dv),
        "mask": mask.shape,
    }
    path = _model(tmp_path, nodes, shapes, ["y"], {"scale": np.array(np.sqrt(d), np.float32)})
    feed = {name: _random(*shape, seed=i) for i, (name, shape) in enumerate(shapes.items())}
    feed["mask"] = mask
    return path, feed


@pytest.mark.parametrize(
    ("batch", "heads", "s", "t", "d", "dv", "k_batch"),
    [
        (1, 4, 16, 16, 8, 8, None),  # the BERT-like test's sizes
        (2, 3, 5, 70, 24, 80, None),  # ragged: runs of 64 keys and columns, rows past S
        (1, 2, 9, 130, 16, 16, (1, 1)),  # K and V shared by the heads (broadcast batch)
        (1, 1, 3, 600, 64, 32, None),  # long: fewer rows per workgroup to fit its memory
        (1, 2, 5, 12, 6, 10, None),  # D not a multiple of 4: scalar queries, vec4 weights
    ],
)
def test_bert_attention_is_one_kernel(
    tmp_path: Path,
    batch: int,
    heads: int,
    s: int,
    t: int,
    d: int,
    dv: int,
    k_batch: tuple[int, ...] | None,
) -> None:
    path, feed = _bert_attention(tmp_path, batch, heads, s, t, d, dv, k_batch)
    assert _kernels(path, feed) == ["MatMul+Div+Add+Softmax+MatMul+Transpose"]


def test_torch_sdpa_export_with_its_nan_guard_is_one_kernel(tmp_path: Path) -> None:
    """torch's scaled_dot_product_attention export: Q scaled, K transposed by a node of its
    own, a boolean mask through Where, Softmax, IsNaN + Where on the probabilities, @ V."""
    s, t, d = 6, 10, 8
    nodes = [
        helper.make_node("Mul", ["q", "scale"], ["qs"]),
        helper.make_node("MatMul", ["qs", "kt"], ["scores"]),
        helper.make_node("Where", ["keep", "scores", "minus_inf"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("IsNaN", ["p"], ["nan"]),
        helper.make_node("Where", ["nan", "zero", "p"], ["guarded"]),
        helper.make_node("MatMul", ["guarded", "v"], ["y"]),
    ]
    keep = np.ones((1, 1, s, t), bool)
    keep[..., 7:] = False
    keep[0, 0, 2, :] = False  # a row with every key masked: its softmax is NaN, guarded to 0
    constants = {
        "scale": np.array(1 / np.sqrt(d), np.float32),
        "minus_inf": np.array(-np.inf, np.float32),
        "zero": np.array(0.0, np.float32),
        "keep": keep,
    }
    shapes = {"q": (1, 2, s, d), "kt": (1, 2, d, t), "v": (1, 2, t, d)}
    path = _model(tmp_path, nodes, shapes, ["y"], constants)
    feed = {name: _random(*shape, seed=i) for i, (name, shape) in enumerate(shapes.items())}
    kernels = _kernels(path, feed)
    assert kernels == ["Mul", "MatMul+Where+Softmax+IsNaN+Where+MatMul"], kernels


def test_fused_matmul_scores_with_k_transposed_are_one_kernel(tmp_path: Path) -> None:
    """ORT's extended optimizer writes Q @ Transpose(K) * scale as com.microsoft.FusedMatMul
    (the scale as alpha, K read transposed; MiniLM's zoo file has them): the kernel reads K
    as [T, D]."""
    s, t, d = 7, 33, 16
    nodes = [
        helper.make_node(
            "FusedMatMul", ["q", "k"], ["scores"], domain="com.microsoft", alpha=0.25, transB=1
        ),
        helper.make_node("Add", ["scores", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=3),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    shapes = {"q": (1, 3, s, d), "k": (1, 3, t, d), "v": (1, 3, t, d), "mask": (1, 1, s, t)}
    path = _model(tmp_path, nodes, shapes, ["y"], {}, domains=("com.microsoft",))
    model = onnx.load(str(path))  # onnx's shape inference does not know FusedMatMul
    model.graph.value_info.extend(
        helper.make_tensor_value_info(name, FLOAT, [1, 3, s, t])
        for name in ("scores", "masked", "p")
    )
    path.write_bytes(model.SerializeToString())
    feed = {name: _random(*shape, seed=i) for i, (name, shape) in enumerate(shapes.items())}
    assert _kernels(path, feed) == ["FusedMatMul+Add+Softmax+MatMul"]


def test_a_scale_after_the_product_and_k_transposed_by_a_node(tmp_path: Path) -> None:
    """Q @ Transpose(K) * scale + mask as written before ORT's optimizer: the Transpose has its
    own kernel (K's layout), the rest is one."""
    s, t, d = 7, 33, 16
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=3),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    shapes = {"q": (1, 3, s, d), "k": (1, 3, t, d), "v": (1, 3, t, d), "mask": (1, 1, s, t)}
    path = _model(tmp_path, nodes, shapes, ["y"], {"scale": np.array(0.25, np.float32)})
    feed = {name: _random(*shape, seed=i) for i, (name, shape) in enumerate(shapes.items())}
    assert _kernels(path, feed) == ["Transpose", "MatMul+Mul+Add+Softmax+MatMul"]


def test_a_chain_the_kernel_cannot_take_keeps_its_kernels(tmp_path: Path) -> None:
    """The scores are read by the caller too; a Softmax along another axis; keys past what
    workgroup memory holds: each keeps separate kernels, with the same answers."""
    nodes = [
        helper.make_node("MatMul", ["q", "k"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    shapes = {"q": (2, 4, 8), "k": (2, 8, 12), "v": (2, 12, 8)}
    feed = {name: _random(*shape, seed=i) for i, (name, shape) in enumerate(shapes.items())}
    read_twice = _model(tmp_path, nodes, shapes, ["y", "scores"], {})
    assert _kernels(read_twice, feed) == ["MatMul", "Softmax", "MatMul"]

    nodes[1] = helper.make_node("Softmax", ["scores"], ["p"], axis=1)
    other_axis = tmp_path / "axis"
    other_axis.mkdir()
    shapes = {"q": (2, 4, 8), "k": (2, 8, 4), "v": (2, 4, 8)}
    path = _model(other_axis, nodes, shapes, ["y"], {})
    feed_axis = {name: _random(*shape, seed=i) for i, (name, shape) in enumerate(shapes.items())}
    assert _kernels(path, feed_axis) == ["MatMul", "Softmax", "MatMul"]

    with pytest.raises(Exception, match="workgroup memory"):
        rows_per_workgroup(1, 2, 4096, 64, 8)
    nodes[1] = helper.make_node("Softmax", ["scores"], ["p"], axis=-1)
    long = tmp_path / "long"
    long.mkdir()
    shapes = {"q": (1, 2, 64), "k": (1, 64, 4096), "v": (1, 4096, 8)}
    feed = {name: _random(*shape, seed=i) for i, (name, shape) in enumerate(shapes.items())}
    path = _model(long, nodes, shapes, ["y"], {})
    assert _kernels(path, feed) == ["MatMul", "Softmax", "MatMul"]


@pytest.mark.parametrize("winner", range(10))
def test_whichever_variant_tuning_picks_the_outputs_are_onnx_runtimes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, winner: int
) -> None:
    """The kernel offers every count of query rows per workgroup that fits, each with vec4 and
    scalar workgroup-memory loads (the heuristic's 4 rows with vec4 first, then 16, 8, 4, 2, 1
    rows), to the executor's tuning; each, made the fastest, answers alike."""
    from gpux.runtime.wgpu import tuning

    monkeypatch.setenv("GPUX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GPUX_WGPU_TUNE", "1")
    monkeypatch.setattr(tuning, "_process_choices", {})
    offered: list[int] = []

    def times(_: Any, candidates: tuple[Any, ...], __: Any) -> list[float]:
        offered.append(len(candidates))
        return [0.5 if number == winner else 1.0 for number in range(len(candidates))]

    monkeypatch.setattr(tuning, "time_candidates", times)
    path, feed = _bert_attention(tmp_path, 1, 4, 16, 16, 8, 8)
    backend, _ = load_checked(path, feed, rtol=1e-4, atol=1e-5)
    try:
        details = backend.placement.details["tuning"]
        workgroups = [
            dispatch.workgroups
            for segment in backend.executor.partition.segments
            for lowered in segment.lowered
            for dispatch in lowered.lowering.dispatches
        ]
    finally:
        backend.close()
    assert offered == [10]
    assert details["changed"] == (winner != 0)
    rows = (4, 16, 16, 8, 8, 4, 2, 2, 1, 1)[winner]
    assert workgroups == [(16 // rows, 4, 1)]
