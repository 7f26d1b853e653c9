"""How many kernels and dispatches the wgpu engine encodes per call, by op: a structural count
that needs no real GPU (lavapipe will do), for comparing fusion changes.

    python benchmarks/wgpu_dispatches.py                     # ResNet-50-like and BERT-base-like
    python benchmarks/wgpu_dispatches.py --model PATH.onnx   # any model with fixed sizes

Without ``--model`` it builds, with onnx.helper and random weights, the graphs that
``export_reference_models.py`` exports with torch (which a CPU machine may lack): ResNet-50
(batch 1, 224x224, Conv + BatchNormalization + Relu, bottlenecks with a residual Add + Relu)
and BERT-base (batch 1, seq 128, 12 layers: MatMul + bias Add, erf GELU as five nodes,
LayerNormalization, attention with a mask Add and Softmax). They follow torch's export node
for node in the parts that matter for fusion; they are not the same files. Each model goes
through the engine's own load path (ONNX Runtime's optimizer, partition, fusion), and the
script prints the kernels it encodes, counted by op.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _weight(rng: np.random.Generator, *shape: int) -> np.ndarray[Any, Any]:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def resnet50(
    path: Path, batch: int = 1, size: int = 224, blocks: tuple[int, ...] = (3, 4, 6, 3)
) -> Path:
    """ResNet-50 (v1.5: stride on the 3x3) as torchvision's export, random weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes: list[Any] = []
    weights: dict[str, np.ndarray[Any, Any]] = {}
    count = iter(range(10**6))

    def conv_bn(x: str, cin: int, cout: int, kernel: int, stride: int, relu: bool) -> str:
        n = next(count)
        weights[f"w{n}"] = _weight(rng, cout, cin, kernel, kernel)
        for role, value in (
            ("scale", rng.uniform(0.5, 1.5, cout)),
            ("shift", rng.uniform(-0.1, 0.1, cout)),
            ("mean", rng.uniform(-0.1, 0.1, cout)),
            ("var", rng.uniform(0.5, 1.5, cout)),
        ):
            weights[f"{role}{n}"] = value.astype(np.float32)
        pad = kernel // 2
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"w{n}"],
                [f"c{n}"],
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pad] * 4,
            )
        )
        nodes.append(
            helper.make_node(
                "BatchNormalization",
                [f"c{n}", f"scale{n}", f"shift{n}", f"mean{n}", f"var{n}"],
                [f"b{n}"],
            )
        )
        if not relu:
            return f"b{n}"
        nodes.append(helper.make_node("Relu", [f"b{n}"], [f"r{n}"]))
        return f"r{n}"

    x = conv_bn("pixels", 3, 64, 7, 2, relu=True)
    nodes.append(
        helper.make_node(
            "MaxPool", [x], ["pooled"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4
        )
    )
    x, channels = "pooled", 64
    for stage, repeat in enumerate(blocks):
        width = 64 * 2**stage
        for block in range(repeat):
            stride = 2 if stage > 0 and block == 0 else 1
            y = conv_bn(x, channels, width, 1, 1, relu=True)
            y = conv_bn(y, width, width, 3, stride, relu=True)
            y = conv_bn(y, width, 4 * width, 1, 1, relu=False)
            shortcut = x
            if block == 0:
                shortcut = conv_bn(x, channels, 4 * width, 1, stride, relu=False)
            n = next(count)
            nodes.append(helper.make_node("Add", [y, shortcut], [f"sum{n}"]))
            nodes.append(helper.make_node("Relu", [f"sum{n}"], [f"out{n}"]))
            x, channels = f"out{n}", 4 * width
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    weights["fc_w"] = _weight(rng, 1000, channels)
    weights["fc_b"] = np.zeros(1000, np.float32)
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,
        "resnet50",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 1000])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def bert(
    path: Path,
    batch: int = 1,
    seq: int = 128,
    layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    vocab: int = 30522,
) -> Path:
    """BERT-base as transformers' torch export at opset 17 (eager attention), random weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes: list[Any] = []
    weights: dict[str, np.ndarray[Any, Any]] = {}
    count = iter(range(10**6))
    head = hidden // heads

    def const(value: Any, dtype: Any = np.float32) -> str:
        name = f"k{next(count)}"
        weights[name] = np.asarray(value, dtype=dtype)
        return name

    def op(kind: str, inputs: list[str], **attributes: Any) -> str:
        name = f"v{next(count)}"
        nodes.append(helper.make_node(kind, inputs, [name], **attributes))
        return name

    def linear(x: str, cin: int, cout: int) -> str:
        w = const(_weight(rng, cin, cout))
        b = const(rng.uniform(-0.1, 0.1, cout))
        return op("Add", [op("MatMul", [x, w]), b])

    def layer_norm(x: str) -> str:
        return op(
            "LayerNormalization",
            [x, const(np.ones(hidden)), const(np.zeros(hidden))],
            axis=-1,
            epsilon=1e-12,
        )

    def split_heads(x: str) -> str:
        shaped = op("Reshape", [x, const([batch, seq, heads, head], np.int64)])
        return op("Transpose", [shaped], perm=[0, 2, 1, 3])

    embeddings = [
        op("Gather", [const(_weight(rng, vocab, hidden)), "input_ids"]),
        op("Gather", [const(_weight(rng, 512, hidden)), const(np.arange(seq)[None], np.int64)]),
        op("Gather", [const(_weight(rng, 2, hidden)), const(np.zeros((batch, seq)), np.int64)]),
    ]
    x = layer_norm(op("Add", [op("Add", embeddings[:2]), embeddings[2]]))
    mask = op("Cast", [op("Unsqueeze", ["attention_mask", const([1, 2], np.int64)])], to=1)
    mask = op("Mul", [op("Sub", [const(1.0), mask]), const(np.finfo(np.float32).min)])
    for _ in range(layers):
        q = split_heads(linear(x, hidden, hidden))
        k = op(
            "Transpose",
            [
                op(
                    "Reshape",
                    [linear(x, hidden, hidden), const([batch, seq, heads, head], np.int64)],
                )
            ],
            perm=[0, 2, 3, 1],
        )
        v = split_heads(linear(x, hidden, hidden))
        scores = op("Div", [op("MatMul", [q, k]), const(np.sqrt(head))])
        probabilities = op("Softmax", [op("Add", [scores, mask])], axis=-1)
        context = op("Transpose", [op("MatMul", [probabilities, v])], perm=[0, 2, 1, 3])
        context = op("Reshape", [context, const([batch, seq, hidden], np.int64)])
        x = layer_norm(op("Add", [linear(context, hidden, hidden), x]))
        up = linear(x, hidden, 4 * hidden)
        erf = op("Erf", [op("Div", [up, const(np.sqrt(2.0))])])
        gelu = op("Mul", [op("Mul", [up, op("Add", [erf, const(1.0)])]), const(0.5)])
        x = layer_norm(op("Add", [linear(gelu, 4 * hidden, hidden), x]))
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    first = op("Gather", [x, const(0, np.int64)], axis=1)
    pooled = op(
        "Gemm", [first, const(_weight(rng, hidden, hidden)), const(np.zeros(hidden))], transB=1
    )
    nodes.append(helper.make_node("Tanh", [pooled], ["pooler_output"]))
    graph = helper.make_graph(
        nodes,
        "bert",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [batch, seq]),
        ],
        [
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, [batch, seq, hidden]
            ),
            helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, [batch, hidden]),
        ],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _save(model: Any, path: Path) -> Path:
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def kernels(path: Path) -> tuple[collections.Counter[str], int, int, str]:
    """The kernels the engine encodes per call for ``path``, by op; the dispatch count; the
    graph's node count; the optimizer level it chose."""
    from gpux.config.schema import Runtime
    from gpux.runtime.wgpu.backend import WgpuBackend

    backend = WgpuBackend.load(path, Runtime(backend="wgpu"), dimensions={})
    try:
        by_op: collections.Counter[str] = collections.Counter(
            lowered.node.op_type
            for segment in backend.executor.partition.segments
            for lowered in segment.lowered
        )
        details = backend.placement.details
        return by_op, details["dispatches"], details["assignment"]["nodes"], details["optimizer"]
    finally:
        backend.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, action="append", default=[])
    parser.add_argument("--top", type=int, default=12, help="ops listed per model")
    args = parser.parse_args()
    os.environ.setdefault("GPUX_WGPU_ALLOW_SOFTWARE", "1")
    with tempfile.TemporaryDirectory(prefix="gpux-dispatches-") as folder:
        models = list(args.model) or [
            resnet50(Path(folder) / "resnet50_like_b1.onnx"),
            bert(Path(folder) / "bert_like_b1.onnx"),
        ]
        for model in models:
            by_op, dispatches, nodes, level = kernels(model)
            print(
                f"{model.name}: {nodes} nodes ({level}), {sum(by_op.values())} kernels, "
                f"{dispatches} dispatches"
            )
            for op, number in by_op.most_common(args.top):
                print(f"  {number:4d}  {op}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
