"""YOLOv8 output decoding: gpux.pipeline.detection.decode_yolo against the reference recipe.

The output is a synthetic ``[N, 84, 8400]`` YOLOv8 head (640x640 input, 80 classes) shaped like a
real one: every anchor of the three grids (strides 8, 16, 32) scores low (sigmoid of logits around
-8) except near a few dozen objects, where anchors in the right grid score by distance from the
centre with jittered boxes, a few hundred above 0.25 in all; some objects also score a second
class. The reference is the ultralytics ONNX Runtime example's recipe (examples/YOLOv8-ONNXRuntime
``postprocess``: transpose, best class per anchor, threshold, ``cv2.dnn.NMSBoxes``), vectorised
with numpy instead of its loop over the 8400 rows, image by image; the class-aware variant calls
``cv2.dnn.NMSBoxesBatched``. The example as written (the Python loop per row) is timed too, for
scale. Both sides are checked to keep the same boxes, then timed alternately in rounds so they see
the same machine; medians are printed. Goal: ratio ours / reference <= 1.0.

    uv run python benchmarks/yolo_decode.py [--runs 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import median_ms
from gpux.pipeline.detection import Detections, decode_yolo

Array = np.ndarray[Any, Any]
CONFIDENCE, IOU = 0.25, 0.45
STRIDES = (8, 16, 32)
SIZE, CLASSES = 640, 80


# ------------------------------------------------------------------------- synthetic head
def _anchor_centres() -> tuple[Array, Array]:
    """Centre (x, y) and stride of each of the 8400 anchors, in ultralytics' order."""
    centres, strides = [], []
    for stride in STRIDES:
        cells = SIZE // stride
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        centres.append(np.stack([xs.ravel(), ys.ravel()], axis=1) * stride + stride / 2)
        strides.append(np.full(cells * cells, stride))
    return np.concatenate(centres).astype(np.float32), np.concatenate(strides)


def synthetic_output(batch: int, objects: int, seed: int = 0) -> Array:
    rng = np.random.default_rng(seed)
    centres, strides = _anchor_centres()
    anchors = centres.shape[0]
    output = np.empty((batch, 4 + CLASSES, anchors), dtype=np.float32)
    for item in range(batch):
        logits = rng.normal(-8.0, 1.5, (CLASSES, anchors))
        head = output[item]
        head[4:] = 1 / (1 + np.exp(-logits))
        # Background anchors still predict some box around themselves.
        sides = rng.uniform(8, 64, (anchors, 2)) * strides[:, None] / 8
        head[0:2] = (centres + rng.normal(0, 2, centres.shape)).T
        head[2:4] = sides.T
        for _ in range(objects):
            width, height = rng.uniform(24, 320, 2)
            cx, cy = (
                rng.uniform(width / 2, SIZE - width / 2),
                rng.uniform(height / 2, SIZE - height / 2),
            )
            label = rng.integers(CLASSES)
            # Small objects light up the fine grid, large ones the coarse grid.
            stride = 8 if max(width, height) < 96 else 16 if max(width, height) < 192 else 32
            near = np.flatnonzero(
                (strides == stride)
                & (np.abs(centres[:, 0] - cx) < width / 3)
                & (np.abs(centres[:, 1] - cy) < height / 3)
            )
            distance = np.hypot((centres[near, 0] - cx) / width, (centres[near, 1] - cy) / height)
            peak = rng.uniform(0.5, 0.95)
            head[4 + label, near] = peak * np.exp(-((distance / 0.25) ** 2))
            head[0, near] = cx + rng.normal(0, 2, near.size)
            head[1, near] = cy + rng.normal(0, 2, near.size)
            head[2, near] = width * rng.normal(1, 0.04, near.size)
            head[3, near] = height * rng.normal(1, 0.04, near.size)
            if rng.random() < 0.3:  # a look-alike class (car / truck)
                other = (label + 1) % CLASSES
                head[4 + other, near] = head[4 + label, near] * rng.uniform(0.5, 0.9)
    return output


# ------------------------------------------------------------------------------ reference
def reference(output: Array, aware: bool) -> list[tuple[Array, Array, Array]]:
    """The example's recipe, vectorised, image by image: (boxes xywh, scores, classes) kept."""
    results = []
    for item in output:
        rows = item.T  # [anchors, 84], the example's np.transpose(np.squeeze(output[0]))
        class_scores = rows[:, 4:]
        best = class_scores.max(axis=1)
        passing = np.flatnonzero(best >= CONFIDENCE)
        class_ids = class_scores[passing].argmax(axis=1)
        scores = best[passing]
        x, y, w, h = rows[passing, :4].T
        boxes = np.stack([x - w / 2, y - h / 2, w, h], axis=1)
        if aware:
            kept = cv2.dnn.NMSBoxesBatched(
                boxes.tolist(), scores.tolist(), class_ids.tolist(), CONFIDENCE, IOU
            )
        else:
            kept = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), CONFIDENCE, IOU)
        kept = np.asarray(kept, dtype=np.int64).reshape(-1)
        results.append((boxes[kept], scores[kept], class_ids[kept]))
    return results


def example_as_written(output: Array) -> list[tuple[list[list[int]], list[float], list[int]]]:
    """ultralytics' postprocess loop itself (gain 1, no pad), image by image."""
    results = []
    for item in output:
        outputs = np.transpose(item)
        boxes, scores, class_ids = [], [], []
        for i in range(outputs.shape[0]):
            classes_scores = outputs[i][4:]
            max_score = np.amax(classes_scores)
            if max_score >= CONFIDENCE:
                class_id = np.argmax(classes_scores)
                x, y, w, h = outputs[i][0], outputs[i][1], outputs[i][2], outputs[i][3]
                class_ids.append(int(class_id))
                scores.append(float(max_score))
                boxes.append([int(x - w / 2), int(y - h / 2), int(w), int(h)])
        kept = cv2.dnn.NMSBoxes(boxes, scores, CONFIDENCE, IOU)
        chosen = np.asarray(kept, dtype=np.int64).reshape(-1).tolist()
        results.append(([boxes[i] for i in chosen], [scores[i] for i in chosen], chosen))
    return results


def _same(ours: list[Detections], theirs: list[tuple[Array, Array, Array]]) -> None:
    for found, (boxes, scores, classes) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(found.scores, scores)
        np.testing.assert_array_equal(found.classes, classes)
        np.testing.assert_allclose(found.boxes[:, :2], boxes[:, :2], atol=1e-3)


# ---------------------------------------------------------------------------------- main
def bench(batch: int, objects: int, runs: int) -> dict[str, Any]:
    output = synthetic_output(batch, objects)
    best = output[:, 4:].max(axis=1)
    candidates = int((best > CONFIDENCE).sum())
    for aware in (True, False):  # same boxes, or the timing means nothing
        _same(decode_yolo(output, class_agnostic=not aware), reference(output, aware))
    kept = sum(len(found) for found in decode_yolo(output))
    print(
        f"batch {batch}: [{batch}, 84, 8400] float32, {candidates} anchors above {CONFIDENCE} "
        f"({candidates / batch:.0f} per image), {kept} kept class-aware"
    )
    timings = median_ms(
        {
            "ours, class-aware": lambda: decode_yolo(output),
            "reference, NMSBoxesBatched": lambda: reference(output, aware=True),
            "ours, class-agnostic": lambda: decode_yolo(output, class_agnostic=True),
            "reference, NMSBoxes": lambda: reference(output, aware=False),
        },
        runs,
    )
    loop = median_ms({"example as written": lambda: example_as_written(output)}, max(3, runs // 30))
    timings.update(loop)
    ratios = {
        "class-aware": timings["ours, class-aware"] / timings["reference, NMSBoxesBatched"],
        "class-agnostic": timings["ours, class-agnostic"] / timings["reference, NMSBoxes"],
        "class-agnostic vs example as written": (
            timings["ours, class-agnostic"] / timings["example as written"]
        ),
    }
    for name, value in timings.items():
        print(f"  {name:28s} {value:8.3f} ms")
    for name, value in ratios.items():
        print(f"  ratio ours/reference, {name}: {value:.2f}x")
    print()
    return {"candidates": candidates, "kept": kept, "ms": timings, "ratio": ratios}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--objects", type=int, default=25, help="objects per image")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, numpy {np.__version__}, OpenCV {cv2.__version__}\n"
    )
    report = {str(batch): bench(batch, args.objects, args.runs) for batch in (1, 8)}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
