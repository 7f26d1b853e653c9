"""Detectors declared in a GPUXfile, with no code, against their authors' own post-processing:
PP-OCRv4's DB text detector against rapidocr 1.4.4's TextDetector, and a YOLOv8-style face
detector (faceghost 0.1.5) against the recipe its package and ultralytics' ONNX example use
(cv2 resize or letterbox, transpose, argmax, cv2.dnn.NMSBoxes, scale back). Boxes come back in
the pixels of the image the user sent."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image
from shapely.geometry import Polygon

from tests.conftest import make_project
from tools import zoo

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

DB = """
name: det
model: ./{model}
preprocess:
  - name: page
    image:
      color: BGR
      interpolation: opencv-linear
      resize: {{limit_side: 736, limit_type: min, multiple_of: 32}}
      normalize: "[-1,1]"
postprocess:
  - name: lines
    steps: [{{db: {{use_dilation: true}}}}]   # rapidocr's config.yaml turns dilation on
"""


def rapidocr() -> Any:
    folder = str(zoo.package("rapidocr_onnxruntime"))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import rapidocr_onnxruntime

    return rapidocr_onnxruntime


@pytest.fixture(scope="module")
def pages(zoo_file: Callable[[str], Path]) -> list[np.ndarray]:
    page = Image.open(zoo_file("page.png")).convert("RGB")
    turned = page.rotate(10, expand=True, fillcolor=(255, 255, 255))
    return [np.asarray(page), np.asarray(turned), np.asarray(page.rotate(90, expand=True))]


def iou(a: list[list[float]], b: list[list[float]]) -> float:
    first, second = Polygon(a), Polygon(b)
    union = first.union(second).area
    return float(first.intersection(second).area / union) if union else 0.0


def test_db_text_regions_match_rapidocrs_detector(
    pages: list[np.ndarray], tmp_path: Path, gpux_home: Path
) -> None:
    import gpux

    rapidocr()
    from rapidocr_onnxruntime.ch_ppocr_det.text_detect import TextDetector

    det = zoo.fetch("ppocr-det")
    model = gpux.load(str(make_project(tmp_path / "det", det, DB.format(model=det.name))))
    config = {
        "model_path": str(det),
        "limit_side_len": 736,
        "limit_type": "min",
        "thresh": 0.3,
        "box_thresh": 0.5,
        "max_candidates": 1000,
        "unclip_ratio": 1.6,
        "use_dilation": True,
        "score_mode": "fast",
        "use_cuda": False,
        "use_dml": False,
        "intra_op_num_threads": -1,
        "inter_op_num_threads": -1,
    }
    detector = TextDetector(config)
    for page in pages:
        theirs, _ = detector(np.ascontiguousarray(page[:, :, ::-1]))  # rapidocr reads BGR
        ours = [region["box"] for region in model.predict(page)["lines"]]
        assert len(theirs) >= 3 and abs(len(ours) - len(theirs)) <= 1
        best = [max(iou(box.tolist(), found) for found in ours) for box in theirs]
        share = sum(overlap >= 0.9 for overlap in best) / len(best)
        print(f"\n{len(theirs)} regions, {len(ours)} found, lowest IoU {min(best):.3f}")
        assert share >= 0.95, sorted(best)[:5]


FACES = """
name: faces
model: ./{model}
preprocess:
  - image:
      {placement}
      interpolation: opencv-linear
      normalize: "[0,1]"
postprocess:
  - name: faces
    steps: [{{yolo: {{labels: model, score_threshold: 0.25, iou_threshold: 0.45}}}}]
"""


def reference_faces(image: np.ndarray, placement: str, session: Any) -> np.ndarray:
    """faceghost's yolo_infer.py (plain resize) or ultralytics' letterbox, then its decode:
    transpose, best class, threshold, cv2.dnn.NMSBoxes, and back to the photo's pixels."""
    height, width = image.shape[:2]
    if placement == "resize":
        tensor = cv2.resize(image, (640, 640))
        scale, pad = np.array([640 / width, 640 / height]), np.zeros(2)
    else:
        ratio = min(640 / height, 640 / width)
        size = round(width * ratio), round(height * ratio)
        dw, dh = 640 - size[0], 640 - size[1]
        left = round(dw / 2 - 0.1) if placement == "center" else 0
        top = round(dh / 2 - 0.1) if placement == "center" else 0
        resized = cv2.resize(image, size)
        tensor = cv2.copyMakeBorder(
            resized, top, dh - top, left, dw - left, cv2.BORDER_CONSTANT, value=(114,) * 3
        )
        scale, pad = np.array([size[0] / width, size[1] / height]), np.array([left, top])
    blob = tensor.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    rows = session.run(None, {"images": blob})[0][0].T  # [anchors, 4 + classes]
    scores = rows[:, 4:].max(axis=1)
    keep = scores > 0.25
    boxes, scores = rows[keep, :4], scores[keep]
    xywh = np.column_stack([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, 2:]])
    kept = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.25, 0.45)
    found = []
    for index in np.asarray(kept).reshape(-1):
        x, y, w, h = xywh[index]
        corners = (np.array([[x, y], [x + w, y + h]]) - pad) / scale
        found.append(np.clip(corners, 0, [width, height]).ravel())
    return np.array(found).reshape(-1, 4)


@pytest.mark.parametrize(
    ("placement", "spec"),
    [
        ("resize", "resize: [640, 640]"),
        ("center", "letterbox: {size: [640, 640]}"),
        ("top-left", "letterbox: {size: [640, 640], anchor: top-left}"),
    ],
)
def test_yolo_faces_match_the_reference_recipe(
    placement: str, spec: str, tmp_path: Path, gpux_home: Path
) -> None:
    import onnxruntime as ort

    import gpux

    weights = zoo.fetch("yolo-face")
    project = make_project(
        tmp_path / "faces", weights, FACES.format(model=weights.name, placement=spec)
    )
    model = gpux.load(str(project))
    session = ort.InferenceSession(str(weights), providers=["CPUExecutionProvider"])
    photos = [
        np.asarray(Image.open(zoo.fetch(name)).convert("RGB"))
        for name in ("astronaut.png", "chelsea.png")
    ]
    for photo in photos:
        expected = reference_faces(photo, placement, session)
        found = model.predict(photo)["faces"]
        assert len(found) == len(expected)
        for face, box in zip(found, expected, strict=True):
            assert face["label"] == "face"
            np.testing.assert_allclose(face["box"], box, atol=1.0)
    astronaut = model.predict(photos[0])["faces"]
    assert len(astronaut) == 1 and astronaut[0]["score"] > 0.5  # one face, found
    assert model.predict(photos[1])["faces"] == []  # a cat is not a face


def test_a_folder_of_images_of_different_sizes_runs_in_input_order(
    pages: list[np.ndarray], zoo_file: Callable[[str], Path], tmp_path: Path, gpux_home: Path
) -> None:
    """``limit_side`` gives each shape its own tensor size: the folder runs one batch per size,
    and each image's regions are those it gets alone, in the folder's order."""
    import json

    import gpux
    from tests.conftest import run_cli

    det = zoo.fetch("ppocr-det")
    project = make_project(tmp_path / "det", det, DB.format(model=det.name))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("page.png", "chelsea.png", "astronaut.png"):
        (folder / name).write_bytes(zoo_file(name).read_bytes())
    Image.fromarray(pages[2]).save(folder / "page-turned.png")  # landscape becomes portrait
    files = sorted(folder.iterdir())
    with gpux.load(str(project)) as model:
        alone = [model.predict(str(path)) for path in files]
        together = model.predict_batch([str(path) for path in files])
        sizes = {model.pipeline._processors["page"].batch([str(p)])[1][0].target for p in files}
    assert len(sizes) == 4  # four different tensor sizes, so four batches
    assert together == alone
    assert len(alone[files.index(folder / "page.png")]["lines"]) >= 3

    run_cli("build", str(project), home=gpux_home)
    result = run_cli("run", "det", "--input", str(folder), home=gpux_home)
    assert result.code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(line["input"]).name for line in lines] == [path.name for path in files]
    for line, expected in zip(lines, alone, strict=True):
        assert [r["box"] for r in line["lines"]] == [
            np.asarray(r["box"]).tolist() for r in expected["lines"]
        ]
