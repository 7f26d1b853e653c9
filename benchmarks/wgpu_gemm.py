"""The wgpu engine's GEMM and Conv kernels against a naive WGSL kernel, on one device.

Per problem: a one-node ONNX model loaded with ``gpux.load(path, backend="wgpu")``, timed on
the GPU with timestamp queries (``Executor.profile``), and the same problem through a naive
kernel written here with wgpu-py (one invocation per output, no tiling) on the same device;
the line gives both times, their TFLOP/s and ``ours_over_naive`` (above 1: the engine is
faster). The largest difference between the two outputs is printed as a check.

    python benchmarks/wgpu_gemm.py [--repeats 5] [--only conv] [--divide 4] [--allow-software]
                                   [--tiles 64,32,16 --tiles 128,64,32,16] [--aspect 1 --aspect 4]

Problems: MatMul 2048^3; BERT-base's feed-forward Gemms at batch 32 (4096 tokens: 4096x768 @
768x3072 and 4096x3072 @ 3072x768) and batch 1 (128 tokens); a ResNet-50 stage-4 Conv (256 ->
256 channels, 3x3, pad 1, 14x14) at batch 32 and 1, and a stage-1 one (64 -> 64, 56x56) at
batch 1, which blocks of 32 rows by 16 columns fill where squares take 16x16. ``--divide D`` divides every size but the
spatial ones by D (a quick run on lavapipe); ``--allow-software`` lets the engine run on
lavapipe (GPUX_WGPU_ALLOW_SOFTWARE=1), where only the ratio means anything. Each ``--tiles``
(block sides the engine may choose, preferred first; default: the engine's own) measures every
problem once more: how a block side is tried before it becomes the default; so does each
``--aspect`` (how many times longer than wide a block may be: 1 for squares only; default: the
engine's own, ``gemm.MAX_ASPECT``), crossed with the ``--tiles``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@dataclass(frozen=True)
class Problem:
    """``op`` "MatMul", "Gemm" (with a bias) or "Conv" (3x3, pad 1, stride 1, with a bias):
    for a GEMM ``C[m, n] = A[m, k] @ B[k, n]``; for a Conv ``m`` output channels, ``k`` input
    channels, ``batch`` images of ``side`` x ``side``."""

    name: str
    op: str
    m: int
    n: int
    k: int
    batch: int = 1
    side: int = 14

    @property
    def flops(self) -> int:
        if self.op == "Conv":
            return 2 * self.batch * self.m * self.side * self.side * self.k * 9
        return 2 * self.m * self.n * self.k


def problems(divide: int) -> list[Problem]:
    def d(size: int) -> int:
        return max(1, size // divide)

    return [
        Problem("matmul_2048", "MatMul", d(2048), d(2048), d(2048)),
        Problem("bert_b32_ffn_up", "Gemm", d(4096), d(3072), d(768)),
        Problem("bert_b32_ffn_down", "Gemm", d(4096), d(768), d(3072)),
        Problem("bert_b1_ffn_up", "Gemm", d(128), d(3072), d(768)),
        Problem("bert_b1_ffn_down", "Gemm", d(128), d(768), d(3072)),
        Problem("resnet_b32_conv3x3", "Conv", d(256), 0, d(256), batch=d(32)),
        Problem("resnet_b1_conv3x3", "Conv", d(256), 0, d(256), batch=1),
        Problem("resnet_b1_stage1_conv3x3", "Conv", d(64), 0, d(64), batch=1, side=56),
    ]


def build_model(problem: Problem, weights: dict[str, np.ndarray[Any, Any]]) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    initializers = [numpy_helper.from_array(array, name) for name, array in weights.items()]
    if problem.op == "Conv":
        shape = [problem.batch, problem.k, problem.side, problem.side]
        out = [problem.batch, problem.m, problem.side, problem.side]
        node = helper.make_node("Conv", ["x", "w", "bias"], ["y"], pads=[1, 1, 1, 1])
    else:
        shape, out = [problem.m, problem.k], [problem.m, problem.n]
        inputs = ["x", "w", "bias"] if problem.op == "Gemm" else ["x", "w"]
        node = helper.make_node(problem.op, inputs, ["y"])
    graph = helper.make_graph(
        [node],
        problem.name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def arrays(problem: Problem) -> tuple[np.ndarray[Any, Any], dict[str, np.ndarray[Any, Any]]]:
    """The input and the weights (scaled so that outputs stay near 1)."""
    rng = np.random.default_rng(0)
    if problem.op == "Conv":
        x = rng.standard_normal((problem.batch, problem.k, problem.side, problem.side))
        w = rng.standard_normal((problem.m, problem.k, 3, 3)) / np.sqrt(9 * problem.k)
        weights = {"w": w, "bias": rng.standard_normal(problem.m)}
    else:
        x = rng.standard_normal((problem.m, problem.k))
        weights = {"w": rng.standard_normal((problem.k, problem.n)) / np.sqrt(problem.k)}
        if problem.op == "Gemm":
            weights["bias"] = rng.standard_normal(problem.n)
    return x.astype(np.float32), {k: v.astype(np.float32) for k, v in weights.items()}


NAIVE_MATMUL = """
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    let m = gid.y;
    if (m >= {M}u || n >= {N}u) { return; }
    var total = 0.0;
    for (var k = 0u; k < {K}u; k++) { total = fma(x[m * {K}u + k], w[k * {N}u + n], total); }
    y[m * {N}u + n] = total + {BIAS};
}
"""

NAIVE_CONV = """
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 256u;
    if (i >= {OUTPUTS}u) { return; }
    let ow = i32(i % {S}u);
    let oh = i32((i / {S}u) % {S}u);
    let co = (i / {S2}u) % {CO}u;
    let image = i / ({S2}u * {CO}u);
    var total = bias[co];
    for (var c = 0u; c < {CI}u; c++) {
        for (var kh = 0; kh < 3; kh++) {
            let ih = oh + kh - 1;
            if (ih < 0 || ih >= {S}) { continue; }
            for (var kw = 0; kw < 3; kw++) {
                let iw = ow + kw - 1;
                if (iw < 0 || iw >= {S}) { continue; }
                let xv = x[((image * {CI}u + c) * {S}u + u32(ih)) * {S}u + u32(iw)];
                total = fma(xv, w[(co * {CI}u + c) * 9u + u32(kh * 3 + kw)], total);
            }
        }
    }
    y[i] = total;
}
"""


def naive_source(problem: Problem) -> tuple[str, tuple[int, int, int]]:
    """The naive kernel's WGSL and workgroup counts."""
    if problem.op == "Conv":
        outputs = problem.batch * problem.m * problem.side**2
        groups = -(-outputs // 256)
        source = (
            NAIVE_CONV.replace("{OUTPUTS}", str(outputs))
            .replace("{S2}", str(problem.side**2))
            .replace("{S}", str(problem.side))
            .replace("{CO}", str(problem.m))
            .replace("{CI}", str(problem.k))
        )
        return source, (min(groups, 65535), -(-groups // 65535), 1)
    source = (
        NAIVE_MATMUL.replace("{M}", str(problem.m))
        .replace("{N}", str(problem.n))
        .replace("{K}", str(problem.k))
        .replace("{BIAS}", "bias[n]" if problem.op == "Gemm" else "0.0 * bias[0]")
    )
    return source, (-(-problem.n // 16), -(-problem.m // 16), 1)


def naive_run(
    gpu: Any,
    problem: Problem,
    x: np.ndarray[Any, Any],
    weights: dict[str, np.ndarray[Any, Any]],
    repeats: int,
) -> tuple[list[float], np.ndarray[Any, Any]]:
    """GPU milliseconds of each of ``repeats`` runs of the naive kernel, and its output."""
    import wgpu

    device = gpu.device
    source, groups = naive_source(problem)
    pipeline = device.create_compute_pipeline(
        layout="auto",
        compute={"module": device.create_shader_module(code=source), "entry_point": "main"},
    )
    bias = weights.get("bias", np.zeros(1, np.float32))
    outputs = problem.batch * problem.m * (problem.side**2 if problem.op == "Conv" else problem.n)
    buffers = [gpu.upload(np.ascontiguousarray(a)) for a in (x, weights["w"], bias)]
    buffers.append(gpu.storage_buffer(4 * outputs))
    bind_group = device.create_bind_group(
        layout=pipeline.get_bind_group_layout(0),
        entries=[
            {"binding": i, "resource": {"buffer": b, "offset": 0, "size": b.size}}
            for i, b in enumerate(buffers)
        ],
    )
    times = []
    for _ in range(repeats + 1):  # the first run warms the driver's caches
        queries = device.create_query_set(type=wgpu.QueryType.timestamp, count=2)
        encoder = device.create_command_encoder()
        compute_pass = encoder.begin_compute_pass(
            timestamp_writes={
                "query_set": queries,
                "beginning_of_pass_write_index": 0,
                "end_of_pass_write_index": 1,
            }
        )
        compute_pass.set_pipeline(pipeline)
        compute_pass.set_bind_group(0, bind_group)
        compute_pass.dispatch_workgroups(*groups)
        compute_pass.end()
        resolved = device.create_buffer(
            size=16, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC
        )
        encoder.resolve_query_set(queries, 0, 2, resolved, 0)
        stamps = gpu.readback_buffer(16)
        encoder.copy_buffer_to_buffer(resolved, 0, stamps, 0, 16)
        device.queue.submit([encoder.finish()])
        stamps.map_sync(wgpu.MapMode.READ)
        ticks = np.frombuffer(stamps.read_mapped(), dtype=np.uint64).astype(np.int64)
        stamps.unmap()
        times.append((ticks[1] - ticks[0]) / 1e6)  # WebGPU timestamps count nanoseconds
    result = np.frombuffer(device.queue.read_buffer(buffers[3]), dtype=np.float32)
    return times[1:], result.copy()


def ours_run(
    path: Path, x: np.ndarray[Any, Any], repeats: int
) -> tuple[list[float], np.ndarray[Any, Any], Any]:
    """GPU milliseconds (summed over the model's wgpu nodes) of each of ``repeats`` profiled
    runs of the engine, its output, and the loaded model."""
    import gpux

    loaded = gpux.load(path, backend="wgpu")
    feed = {"x": x}
    executor = loaded.backend.executor_for(feed)
    outputs, _ = executor.profile(feed)  # warm-up: the driver may compile on first use
    times = []
    for _ in range(repeats):
        _, entries = executor.profile(feed)
        times.append(sum(e["ms"] for e in entries if e["on"] == "wgpu"))
    return times, np.asarray(next(iter(outputs.values()))), loaded


def measure(
    problem: Problem,
    folder: Path,
    repeats: int,
    tiles: tuple[int, ...] | None,
    aspect: int | None = None,
) -> dict[str, Any]:
    import onnx

    from gpux.runtime.wgpu.backend import shared_device
    from gpux.runtime.wgpu.kernels import gemm

    default, default_aspect = gemm.TILES, gemm.MAX_ASPECT
    if tiles is not None:
        gemm.TILES = tiles  # read when the model is lowered, at load
    if aspect is not None:
        gemm.MAX_ASPECT = aspect

    x, weights = arrays(problem)
    path = folder / f"{problem.name}.onnx"
    onnx.save(build_model(problem, weights), str(path))
    row: dict[str, Any] = {"problem": problem.name, "op": problem.op}
    row["shape"] = (
        f"N={problem.batch} {problem.k}->{problem.m} 3x3 {problem.side}x{problem.side}"
        if problem.op == "Conv"
        else f"{problem.m}x{problem.k} @ {problem.k}x{problem.n}"
    )
    try:
        ours, ours_out, loaded = ours_run(path, x, repeats)
    finally:
        gemm.TILES, gemm.MAX_ASPECT = default, default_aspect
    row["tiles"] = ",".join(str(side) for side in tiles or default)
    row["aspect"] = aspect or default_aspect
    try:
        row["device"] = loaded.placement.device
        row["nodes_on_wgpu"] = loaded.placement.details.get("assignment", {}).get(
            "nodes_on_backend"
        )
        naive, naive_out = naive_run(shared_device(), problem, x, weights, repeats)
    finally:
        loaded.close()
    ours_ms, naive_ms = statistics.median(ours), statistics.median(naive)
    row.update(
        {
            "gflop": round(problem.flops / 1e9, 3),
            "ours_ms": round(ours_ms, 3),
            "naive_ms": round(naive_ms, 3),
            "ours_tflops": round(problem.flops / ours_ms / 1e9, 4),
            "naive_tflops": round(problem.flops / naive_ms / 1e9, 4),
            "ours_over_naive": round(naive_ms / ours_ms, 3),
            "max_abs_diff": float(np.max(np.abs(ours_out.reshape(-1) - naive_out))),
        }
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--divide", type=int, default=1, help="divide the sizes by this")
    parser.add_argument("--only", action="append", default=[], help="problems containing this")
    parser.add_argument("--allow-software", action="store_true")
    parser.add_argument("--tiles", action="append", default=[], help="block sides, e.g. 128,64")
    parser.add_argument("--aspect", action="append", type=int, default=[], help="e.g. 1 or 4")
    args = parser.parse_args()
    if args.allow_software:
        os.environ["GPUX_WGPU_ALLOW_SOFTWARE"] = "1"
    chosen = [
        p for p in problems(args.divide) if not args.only or any(s in p.name for s in args.only)
    ]
    variants = [tuple(int(s) for s in t.split(",")) for t in args.tiles] or [None]
    aspects: list[int | None] = list(args.aspect) or [None]
    with tempfile.TemporaryDirectory() as folder:
        for problem in chosen:
            for tiles, aspect in ((t, a) for t in variants for a in aspects):
                try:
                    row = measure(problem, Path(folder), args.repeats, tiles, aspect)
                except Exception as exc:  # one failing problem should not hide the others
                    row = {"problem": problem.name, "error": f"{type(exc).__name__}: {exc}"}
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
