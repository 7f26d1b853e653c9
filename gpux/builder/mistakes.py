"""Build warnings for pipelines that run but are probably wrong.

None of these stops a build (each can be meant), but each has cost someone a day:

* ``normalize`` with a mean (or std) above 1 while ``scale`` puts pixels in [0, 1]: the values
  were copied from a recipe that works on 0-255 pixels;
* ``softmax`` on an output the model's graph already ends with Softmax: probabilities squashed
  a second time, every score near 1 / classes;
* ``labels`` that no step uses, or whose count differs from the class axis the smoke run saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpux.config.pipeline import Step
from gpux.config.schema import GPUXfile
from gpux.runtime.tensors import TensorSignature

# Ops that move or reshape values without changing them: a Softmax before them still ends
# the graph as far as the scores are concerned.
_PASS_THROUGH = {
    "Identity",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Cast",
    "Gather",
    "Slice",
}
# Steps that only select or move values: a softmax after them still squashes probabilities.
_SELECTING = {"pick", "slice", "transpose", "squeeze"}
# Steps that read the GPUXfile's labels when they have none of their own.
_LABELLED = {"argmax", "top_k", "yolo", "nms", "detections"}


def pipeline_warnings(
    config: GPUXfile, model_path: Path, outputs: list[TensorSignature], smoke: dict[str, Any]
) -> list[str]:
    """Messages for ``reporter.warn``, in the GPUXfile's order."""
    messages = _normalize_warnings(config)
    messages += _softmax_warnings(config, model_path)
    messages += _label_warnings(config, smoke.get("output_shapes", {}))
    return messages


def _normalize_warnings(config: GPUXfile) -> list[str]:
    messages = []
    for entry in config.preprocess:
        image = entry.image
        if image is None:
            continue
        normalize = image.normalize
        if normalize.scale * 255 > 1.0 + 1e-6:  # pixels are not scaled into [0, 1]
            continue
        for field in ("mean", "std"):
            values = getattr(normalize, field)
            if any(abs(v) > 1 for v in values):
                messages.append(
                    f"preprocess '{entry.name}': normalize {field} {_numbers(values)} is above "
                    f"1, but scale {_numbers([normalize.scale])} puts pixels in [0, 1]: these "
                    "look like values for 0-255 pixels; divide them by 255, or set scale: 1"
                )
    return messages


def _softmax_warnings(config: GPUXfile, model_path: Path) -> list[str]:
    sources = {
        str(result.source): result.name
        for result in config.postprocess
        if _softmax_first(result.steps) and result.source is not None
    }
    if not sources:
        return []
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    producers = {output: node for node in graph.node for output in node.output}
    messages = []
    for source, result in sources.items():
        node = producers.get(source)
        while node is not None and node.op_type in _PASS_THROUGH and node.input:
            node = producers.get(node.input[0])
        if node is not None and node.op_type in ("Softmax", "LogSoftmax"):
            messages.append(
                f"postprocess '{result}': softmax on output '{source}', which the model "
                f"already computes with {node.op_type} (node '{node.name or '?'}'): the "
                "scores are squashed twice; remove the softmax step"
            )
    return messages


def _softmax_first(steps: list[Step]) -> bool:
    for step in steps:
        if step.name == "softmax":
            return True
        if step.name not in _SELECTING:
            return False
    return False


def _label_warnings(config: GPUXfile, output_shapes: dict[str, list[int]]) -> list[str]:
    labels = config.labels
    if not isinstance(labels, list):
        return []
    users = [
        (result, step)
        for result in config.postprocess
        for step in result.steps
        if step.name in _LABELLED
        and getattr(step.options, "labels", None) is None
        and getattr(step.options, "axis", None) is None
    ]
    if not users:
        return [
            f"labels: {len(labels)} labels, but no postprocess step uses them (argmax, top_k, "
            "yolo, nms and detections read them when they have no labels of their own); "
            "remove them, or add a step that names the classes"
        ]
    messages = []
    for result, step in users:
        shape = output_shapes.get(
            step.options.scores if step.name == "nms" else str(result.source), []
        )
        classes = _classes(step, shape, result.steps)
        if classes is not None and classes != len(labels):
            messages.append(
                f"labels: {len(labels)} labels, but the smoke run saw {classes} classes in "
                f"postprocess '{result.name}' ({step.name} on shape {shape}): give one label "
                "per class, in the model's order"
            )
    return messages


def _classes(step: Step, shape: list[int], steps: list[Step]) -> int | None:
    """The class count ``step`` sees in an output of ``shape`` (None when unclear)."""
    if len(shape) < 2:
        return None
    if step.name in ("argmax", "top_k"):
        before = steps[: steps.index(step)]
        return shape[-1] if all(s.name in ("softmax", "sigmoid") for s in before) else None
    if step.name == "yolo" and len(shape) == 3:
        first, second = shape[1], shape[2]
        style = step.options.style
        if style == "auto":
            style = "v8" if first < second else "v5"
        return first - 4 if style == "v8" else second - 5
    if step.name == "nms" and len(shape) == 3:
        return min(shape[1], shape[2])  # [N, boxes, C] or [N, C, boxes]: fewer classes
    return None


def _numbers(values: list[float]) -> str:
    shown = [f"{v:.6g}" for v in values]
    return shown[0] if len(shown) == 1 else "[" + ", ".join(shown) + "]"
