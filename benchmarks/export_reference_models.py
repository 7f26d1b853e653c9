"""Export the reference models of shared/GPU.md: ResNet-50 (224x224) and BERT-base (seq 128).

Random weights (for speed, not accuracy), fp32, ``torch.onnx.export(..., opset_version=17)``,
fixed batch sizes so that CUDA graphs can apply, plus ``resnet50_dyn.onnx`` and ``bert_dyn.onnx``
with a symbolic batch (what a batching server runs). Needs torch, torchvision and transformers:
run it on the GPU machine, which has them.

    python benchmarks/export_reference_models.py OUTDIR [--dynamic-only]

``--dynamic-only`` writes just the symbolic-batch files (what the serving runs need), which
saves the fixed-size exports' time on a machine whose minutes are counted; they include
``resnet50_io.onnx`` and ``bert_io.onnx``, ResNet-50's and BERT-base's inputs and outputs with
almost no arithmetic.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def export_all(folder: Path, batches: tuple[int, ...] = (1, 32), fixed: bool = True) -> list[Path]:
    import torch
    import torchvision
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    written = []
    resnet = torchvision.models.resnet50(weights=None).eval()

    class Bert(torch.nn.Module):
        """Keyword call: transformers 5 changed BertModel.forward's positional parameters."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(BertConfig())  # bert-base: 12 layers, hidden 768

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple:
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)
            return out[0], out[1]

    bert = Bert().eval()
    for batch in batches if fixed else ():
        path = folder / f"resnet50_b{batch}.onnx"
        if not path.exists():
            torch.onnx.export(
                resnet,
                (torch.randn(batch, 3, 224, 224),),
                str(path),
                opset_version=17,
                input_names=["pixels"],
                output_names=["logits"],
                dynamo=False,
            )
        written.append(path)
        path = folder / f"bert_b{batch}.onnx"
        if not path.exists():
            ids = torch.randint(0, 30522, (batch, 128))
            torch.onnx.export(
                bert,
                (ids, torch.ones_like(ids)),
                str(path),
                opset_version=17,
                input_names=["input_ids", "attention_mask"],
                output_names=["last_hidden_state", "pooler_output"],
                dynamo=False,
            )
        written.append(path)
    written += _dynamic(folder, resnet, bert)
    return written


def _dynamic(folder: Path, resnet: object, bert: object) -> list[Path]:
    import torch

    path = folder / "resnet50_dyn.onnx"
    if not path.exists():
        torch.onnx.export(
            resnet,  # type: ignore[arg-type]
            (torch.randn(1, 3, 224, 224),),
            str(path),
            opset_version=17,
            input_names=["pixels"],
            output_names=["logits"],
            dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    bert_path = folder / "bert_dyn.onnx"
    if not bert_path.exists():
        ids = torch.randint(0, 30522, (1, 128))
        torch.onnx.export(
            bert,  # type: ignore[arg-type]
            (ids, torch.ones_like(ids)),
            str(bert_path),
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state", "pooler_output"],
            dynamic_axes={
                "input_ids": {0: "batch"},
                "attention_mask": {0: "batch"},
                "last_hidden_state": {0: "batch"},
                "pooler_output": {0: "batch"},
            },
            dynamo=False,
        )
    return [path, bert_path, io_model(folder), bert_io_model(folder)]


def io_model(folder: Path) -> Path:
    """``resnet50_io.onnx``: ResNet-50's input and output (pixels [N,3,224,224] -> logits
    [N,1000]) with almost no arithmetic (a mean per channel times a 3x1000 matrix). Served,
    it measures what the request path and the batching cost on their own, at the same bytes."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    path = folder / "resnet50_io.onnx"
    if path.exists():
        return path
    weight = np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["pixels", "axes"], ["means"], keepdims=0),
            helper.make_node("MatMul", ["means", "weight"], ["logits"]),
        ],
        "resnet50_io",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])],
        [
            numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
            numpy_helper.from_array(weight, "weight"),
        ],
    )
    return _saved(graph, path)


def bert_io_model(folder: Path, sequence: int = 128, hidden: int = 768) -> Path:
    """``bert_io.onnx``: BERT-base's inputs and outputs (input_ids and attention_mask [N,128]
    int64 -> last_hidden_state [N,128,768] and pooler_output [N,768] fp32: 2 KB in, 396 KB
    out per row) with almost no arithmetic (the ids times a vector; their mean). Served, it
    measures what answers of that size cost on their own."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    path = folder / "bert_io.onnx"
    if path.exists():
        return path
    scale = np.random.default_rng(0).standard_normal((hidden,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"]),
            helper.make_node("Cast", ["masked"], ["ids"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["ids", "last"], ["column"]),
            helper.make_node("Mul", ["column", "scale"], ["last_hidden_state"]),
            helper.make_node(
                "ReduceMean", ["last_hidden_state", "middle"], ["pooler_output"], keepdims=0
            ),
        ],
        "bert_io",
        [
            helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", sequence])
            for name in ("input_ids", "attention_mask")
        ],
        [
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, ["batch", sequence, hidden]
            ),
            helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, ["batch", hidden]),
        ],
        [
            numpy_helper.from_array(np.array([2], np.int64), "last"),
            numpy_helper.from_array(np.array([1], np.int64), "middle"),
            numpy_helper.from_array(scale, "scale"),
        ],
    )
    return _saved(graph, path)


def _saved(graph: Any, path: Path) -> Path:
    """``graph`` as a checked opset-18 model at ``path``, at IR 9 (the installed onnx writes a
    newer IR than onnxruntime-gpu 1.31 reads)."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


if __name__ == "__main__":
    for written in export_all(Path(sys.argv[1]), fixed="--dynamic-only" not in sys.argv[2:]):
        print(written)
