"""What GPUX's numpy DB post-processing costs against the authors' OpenCV one, in one run.

``gpux.pipeline.text_detection.db_decode`` vs rapidocr-onnxruntime 1.4.4's ``DBPostProcess``
(PaddleOCR's, on cv2.findContours / minAreaRect / fillPoly, shapely and pyclipper), same map, same
parameters (thresh 0.3, box_thresh 0.5, unclip_ratio 1.6, score_mode fast, no dilation), the
reference called with the map's own size so it does not rescale. Maps:

1. ``page``: the real PP-OCRv4 det probability map of skimage's page.png resized to 736x736;
2. ``busy``: a synthetic 1024x1024 map with 200 blurred, slightly rotated text-line blobs;
3. ``page-poly``: the page map again with ``box_type="poly"`` against PaddleOCR's
   ``polygons_from_bitmap`` (which rapidocr lacks; transcribed onto its class).

Both sides are timed alternately, call by call, and medians are printed. Target: ratio <= 1.0
for quad mode.

    uv run python benchmarks/db_decode.py [--runs 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.timing import median_ms
from gpux.pipeline.text_detection import db_decode
from tools import zoo

PARAMETERS = {"thresh": 0.3, "box_thresh": 0.5, "unclip_ratio": 1.6, "max_candidates": 1000}


def _authors() -> Any:
    sys.path.insert(0, str(zoo.package("rapidocr_onnxruntime")))
    from rapidocr_onnxruntime.ch_ppocr_det import utils

    return utils


def page_map() -> np.ndarray:
    """PP-OCRv4 det on page.png resized to 736x736, normalised as rapidocr does."""
    import onnxruntime as ort
    from PIL import Image

    image = Image.open(zoo.fetch("page.png")).convert("RGB").resize((736, 736))
    pixels = (np.asarray(image, dtype=np.float32) / 255 - 0.5) / 0.5
    session = ort.InferenceSession(str(zoo.fetch("ppocr-det")), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: pixels[:, :, ::-1].transpose(2, 0, 1)[None].copy()}
    output: np.ndarray = session.run(None, feed)[0]
    return output[0, 0]


def busy_map(lines: int = 200, size: int = 1024, seed: int = 0) -> np.ndarray:
    """Text-line-like blobs: 40 rows of 5, each a rotated rectangle blurred like a DB map."""
    import cv2

    rng = np.random.default_rng(seed)
    canvas = np.zeros((size, size), dtype=np.float32)
    columns = 5
    rows = lines // columns
    cell_width, cell_height = size / columns, size / rows
    for index in range(lines):
        row, column = divmod(index, columns)
        centre = ((column + 0.5) * cell_width, (row + 0.5) * cell_height)
        length = rng.uniform(0.5, 0.85) * cell_width
        thickness = rng.uniform(0.35, 0.6) * cell_height
        angle = rng.uniform(-4, 4)
        corners = cv2.boxPoints((centre, (length, thickness), angle))
        cv2.fillPoly(canvas, [np.round(corners).astype(np.int32)], float(rng.uniform(0.7, 0.95)))
    blurred: np.ndarray = cv2.GaussianBlur(canvas, (0, 0), 1.5)
    return blurred


def _polygon_reference(utils: Any) -> Any:
    """PaddleOCR's polygons_from_bitmap on rapidocr's DBPostProcess (same helpers)."""
    import cv2
    import pyclipper
    from shapely.geometry import Polygon

    class Polygons(utils.DBPostProcess):  # type: ignore[misc, name-defined]
        def __call__(self, pred: np.ndarray, ori_shape: tuple[int, int]) -> Any:
            probability = pred[0, 0]
            bitmap = probability > self.thresh
            height, width = bitmap.shape
            boxes, scores = [], []
            contours, _ = cv2.findContours(
                (bitmap * 255).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE
            )
            for contour in contours[: self.max_candidates]:
                epsilon = 0.002 * cv2.arcLength(contour, True)
                points = cv2.approxPolyDP(contour, epsilon, True).reshape((-1, 2))
                if points.shape[0] < 4:
                    continue
                score = self.box_score_fast(probability, points.reshape(-1, 2))
                if self.box_thresh > score:
                    continue
                polygon = Polygon(points)
                offset = pyclipper.PyclipperOffset()
                offset.AddPath(points, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
                box = np.array(offset.Execute(polygon.area * self.unclip_ratio / polygon.length))
                if len(box) > 1:
                    continue
                box = box.reshape(-1, 2)
                _, short_side = self.get_mini_boxes(box.reshape((-1, 1, 2)))
                if short_side < self.min_size + 2:
                    continue
                box[:, 0] = np.clip(np.round(box[:, 0]), 0, width)
                box[:, 1] = np.clip(np.round(box[:, 1]), 0, height)
                boxes.append(box)
                scores.append(score)
            return boxes, scores

    return Polygons


def bench(runs: int) -> dict[str, dict[str, float]]:
    utils = _authors()
    maps = {"page": page_map(), "busy": busy_map()}
    results: dict[str, dict[str, float]] = {}
    cases: list[tuple[str, np.ndarray, str, Any]] = [
        ("page", maps["page"], "quad", utils.DBPostProcess),
        ("busy", maps["busy"], "quad", utils.DBPostProcess),
        ("page-poly", maps["page"], "poly", _polygon_reference(utils)),
    ]
    for name, probability, box_type, reference_class in cases:
        reference = reference_class(
            thresh=PARAMETERS["thresh"],
            box_thresh=PARAMETERS["box_thresh"],
            max_candidates=PARAMETERS["max_candidates"],
            unclip_ratio=PARAMETERS["unclip_ratio"],
            score_mode="fast",
            use_dilation=False,
        )
        batch = probability[None, None]
        size = probability.shape
        found = len(db_decode(probability, box_type=box_type))  # type: ignore[arg-type]
        expected = len(reference(batch, size)[0])
        timings = median_ms(
            {
                "ours": lambda p=probability, b=box_type: db_decode(p, box_type=b),
                "reference": lambda r=reference, b=batch, s=size: r(b, s),
            },
            runs,
        )
        ratio = timings["ours"] / timings["reference"]
        results[name] = {**timings, "ratio": ratio, "regions": found, "reference_regions": expected}
        height, width = size
        print(
            f"{name:10s} {width}x{height} {box_type}: ours {timings['ours']:7.2f} ms, "
            f"reference {timings['reference']:7.2f} ms, ratio {ratio:5.2f} "
            f"({found} regions, reference {expected})"
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import cv2

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, numpy {np.__version__}, OpenCV {cv2.__version__}\n"
    )
    results = bench(args.runs)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(results[name]["ratio"] <= 1.0 for name in ("page", "busy")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
