"""DB text-detection post-processing against the authors' own code, on a real detector's maps.

The reference is rapidocr-onnxruntime 1.4.4's ``DBPostProcess`` (PaddleOCR's, on OpenCV, shapely
and pyclipper), plus PaddleOCR's ``polygons_from_bitmap`` for poly mode, transcribed below onto the
same class since rapidocr dropped it. The maps come from the real PP-OCRv4 det model, fed by
rapidocr's own ``DetPreProcess``, so only the post-processing is compared. The reference is called
with the map's own size, so it does not rescale (it still rounds to whole pixels).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from gpux.errors import ModelError
from gpux.pipeline import text_detection
from gpux.pipeline.text_detection import db_decode
from tools import zoo

Array = np.ndarray[Any, Any]


@pytest.fixture(scope="module")
def authors() -> Any:
    sys.path.insert(0, str(zoo.package("rapidocr_onnxruntime")))
    from rapidocr_onnxruntime.ch_ppocr_det import utils

    return utils


def _images() -> dict[str, Any]:
    from PIL import Image, ImageDraw, ImageFont

    page = Image.open(zoo.fetch("page.png")).convert("RGB")
    rendered = Image.new("RGB", (900, 700), "white")
    draw = ImageDraw.Draw(rendered)
    font = ImageFont.load_default(size=22)
    for index, sentence in enumerate(zoo.SENTENCES):
        draw.text((20 + (index % 3) * 15, 10 + index * 33), sentence, fill="black", font=font)
    return {
        "page": page,
        "page-rotated-12": page.rotate(
            12, resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white"
        ),
        "page-rotated-90": page.transpose(Image.Transpose.ROTATE_90),
        "sentences-rotated-8": rendered.rotate(
            -8, resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white"
        ),
    }


IMAGES = ["page", "page-rotated-12", "page-rotated-90", "sentences-rotated-8"]


@pytest.fixture(scope="module")
def maps(authors: Any) -> dict[str, Array]:
    """Probability maps [H, W] of the real detector, input made by rapidocr's preprocessing."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(zoo.fetch("ppocr-det")), providers=["CPUExecutionProvider"])
    prepare = authors.DetPreProcess(736, "min", [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    result = {}
    for name, image in _images().items():
        bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])  # rapidocr reads with OpenCV
        output = session.run(None, {session.get_inputs()[0].name: prepare(bgr)})[0]
        result[name] = output[0, 0]
    return result


def _iou(first: Array, second: Array) -> float:
    from shapely.geometry import Polygon

    a, b = Polygon(first).buffer(0), Polygon(second).buffer(0)
    return float(a.intersection(b).area / a.union(b).area)


def _assert_matches(
    ours: list[tuple[Array, float]], boxes: list[Array], scores: list[float]
) -> float:
    """>= 95% of the reference regions have one of ours with IoU >= 0.9 and a score within
    0.02; counts within 1; with equal counts, the same order. Returns the least IoU."""
    assert abs(len(ours) - len(boxes)) <= 1, (len(ours), len(boxes))
    matched, least = 0, 1.0
    for position, (box, score) in enumerate(zip(boxes, scores, strict=True)):
        overlaps = [_iou(np.asarray(box, dtype=np.float64), points) for points, _ in ours]
        best = int(np.argmax(overlaps))
        least = min(least, overlaps[best])
        if overlaps[best] >= 0.9 and abs(ours[best][1] - score) <= 0.02:
            matched += 1
        if len(ours) == len(boxes):
            assert best == position, "not in the reference's order"
    assert matched >= 0.95 * len(boxes), (matched, len(boxes))
    return least


# ------------------------------------------------------------------------------- quad mode
@pytest.mark.zoo
@pytest.mark.parametrize("use_dilation", [False, True])
@pytest.mark.parametrize("score_mode", ["fast", "slow"])
@pytest.mark.parametrize("image", IMAGES)
def test_quads_match_the_authors(
    image: str, score_mode: str, use_dilation: bool, maps: dict[str, Array], authors: Any
) -> None:
    probability = maps[image]
    height, width = probability.shape
    reference = authors.DBPostProcess(
        thresh=0.3,
        box_thresh=0.5,
        max_candidates=1000,
        unclip_ratio=1.6,
        score_mode=score_mode,
        use_dilation=use_dilation,
    )
    boxes, scores = reference(probability[None, None], (height, width))
    assert len(boxes) >= 3  # a real page, not an empty comparison
    ours = db_decode(
        probability[None, None],
        score_mode=score_mode,
        use_dilation=use_dilation,  # type: ignore[arg-type]
    )
    _assert_matches(ours, list(boxes), scores)
    for points, _ in ours:
        assert points.shape == (4, 2)
        assert points[:, 0].min() >= 0 and points[:, 0].max() <= width
        assert points[:, 1].min() >= 0 and points[:, 1].max() <= height
        top_left, top_right, bottom_right, bottom_left = points
        assert top_left[0] < top_right[0] and bottom_left[0] < bottom_right[0]
        assert top_left[1] < bottom_left[1] and top_right[1] < bottom_right[1]


@pytest.mark.zoo
def test_max_candidates_cuts_the_same_contours(maps: dict[str, Array], authors: Any) -> None:
    probability = maps["sentences-rotated-8"]
    reference = authors.DBPostProcess(0.3, 0.5, 6, 1.6, "fast", False)
    boxes, scores = reference(probability[None, None], probability.shape)
    ours = db_decode(probability, max_candidates=6)
    assert 3 <= len(ours) == len(boxes) < len(db_decode(probability))
    _assert_matches(ours, list(boxes), scores)


@pytest.mark.zoo
def test_box_thresh_and_min_size_filter_like_the_authors(
    maps: dict[str, Array], authors: Any
) -> None:
    probability = maps["page-rotated-12"]
    for box_thresh in (0.55, 0.6, 0.7):
        reference = authors.DBPostProcess(0.3, box_thresh, 1000, 2.0, "fast", False)
        boxes, scores = reference(probability[None, None], probability.shape)
        ours = db_decode(probability, box_thresh=box_thresh, unclip_ratio=2.0)
        assert len(ours) == len(boxes)
        _assert_matches(ours, list(boxes), scores)


# ---------------------------------------------------------------------------- building blocks
@pytest.mark.zoo
def test_fast_score_rasterises_quads_like_fill_poly(authors: Any) -> None:
    rng = np.random.default_rng(3)
    scores = rng.random((120, 160)).astype(np.float32)
    quads = []
    for _ in range(500):
        centre = rng.uniform([0, 0], [159, 119])
        length, width, angle = rng.uniform(1, 60), rng.uniform(1, 25), rng.uniform(0, np.pi)
        along = np.array([np.cos(angle), np.sin(angle)])
        across = np.array([-along[1], along[0]])
        signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]])
        quad = centre + signs[:, :1] * length / 2 * along + signs[:, 1:] * width / 2 * across
        if quad.min() >= -1 and quad[:, 0].max() <= 160 and quad[:, 1].max() <= 120:
            quads.append(quad)
    ordered = text_detection._order_like_get_mini_boxes(np.array(quads))
    ours = text_detection._quad_means(scores, ordered)
    expected = [authors.DBPostProcess.box_score_fast(scores, quad) for quad in ordered]
    assert len(quads) > 300
    np.testing.assert_allclose(ours, expected, atol=1e-6)


@pytest.mark.zoo
def test_unclip_of_a_rectangle_is_the_rectangle_grown(authors: Any) -> None:
    """pyclipper's round offset by d, then minAreaRect, is the rectangle grown by d per side,
    up to pyclipper's whole-pixel coordinates (it truncates its input and rounds its output,
    which can also tie two x and reorder the authors' corners: corners are matched, not indexed)."""
    rng = np.random.default_rng(11)
    reference = authors.DBPostProcess(unclip_ratio=1.6)
    errors = []
    for _ in range(200):
        centre = rng.uniform(50, 450, 2)
        length, width = rng.uniform(4, 300), rng.uniform(3, 40)
        angle = rng.uniform(-np.pi / 2, np.pi / 2)
        rectangle = text_detection._Rectangles(
            centre[None],
            np.array([[np.cos(angle), np.sin(angle)]]),
            np.array([length]),
            np.array([width]),
        )
        box = text_detection._order_like_get_mini_boxes(rectangle.corners())[0]
        expected, short_side = reference.get_mini_boxes(reference.unclip(box.astype(np.float32)))
        distance = length * width * 1.6 / (2 * (length + width))
        grown = rectangle.corners(distance)[0]
        gaps = np.linalg.norm(grown[:, None, :] - np.asarray(expected)[None, :, :], axis=2)
        errors.append(gaps.min(axis=1))
        assert abs(short_side - (min(length, width) + 2 * distance)) <= 2.0
    errors_px = np.concatenate(errors)
    assert errors_px.max() <= 2.5
    assert errors_px.mean() <= 1.0


@pytest.mark.zoo
def test_rotated_rectangles_give_one_quad_each_at_their_angle(authors: Any) -> None:
    import cv2

    probability = np.full((420, 520), 0.05, dtype=np.float32)
    drawn = {(130.0, 90.0): 0.0, (380.0, 100.0): 17.0, (140.0, 300.0): -33.0, (380, 310): 60.0}
    for centre, angle in drawn.items():
        corners = cv2.boxPoints((centre, (160.0, 36.0), angle))
        cv2.fillPoly(probability, [np.round(corners).astype(np.int32)], 0.9)
    ours = db_decode(probability)
    assert len(ours) == 4
    for (centre, angle), (points, score) in zip(
        sorted(drawn.items(), key=lambda item: item[0]),
        sorted(ours, key=lambda region: tuple(region[0].mean(axis=0))),
        strict=True,
    ):
        np.testing.assert_allclose(points.mean(axis=0), centre, atol=1.0)
        top_left, top_right = points[0], points[1]
        long_side = np.degrees(np.arctan2(*(top_right - top_left)[::-1]))
        # 60 degrees comes out as its short side on top: compare modulo 90.
        assert abs((long_side - angle + 45) % 90 - 45) <= 1.5
        assert score > 0.85
    boxes, scores = authors.DBPostProcess(0.3, 0.5, 1000, 1.6)(
        probability[None, None], probability.shape
    )
    _assert_matches(ours, list(boxes), scores)


@pytest.mark.zoo
def test_holes_are_contours_too_as_find_contours_lists_them(authors: Any) -> None:
    """RETR_LIST returns a hole's border as a contour of its own; with a small hole its box
    passes the score filter and the authors return it beside the outer one. So do we."""
    probability = np.full((90, 90), 0.05, dtype=np.float32)
    probability[20:60, 20:60] = 0.95
    probability[37:43, 37:43] = 0.2  # a 6x6 hole
    boxes, scores = authors.DBPostProcess(0.3, 0.5, 1000, 1.6)(
        probability[None, None], probability.shape
    )
    ours = db_decode(probability)
    assert len(boxes) == len(ours) == 2
    _assert_matches(ours, list(boxes), scores)


def test_decodes_nothing_from_an_empty_map() -> None:
    assert db_decode(np.zeros((1, 1, 64, 96), dtype=np.float32)) == []
    assert db_decode(np.zeros((64, 96), dtype=np.float32), box_type="poly") == []


def test_refuses_what_is_not_one_map() -> None:
    with pytest.raises(ModelError, match=r"one \[H, W\] probability map"):
        db_decode(np.zeros((2, 1, 8, 8), dtype=np.float32))
    with pytest.raises(ModelError, match="score_mode"):
        db_decode(np.zeros((8, 8)), score_mode="mean")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="box_type"):
        db_decode(np.zeros((8, 8)), box_type="rect")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- poly mode
def _paddle_polygons(authors: Any, probability: Array, box_thresh: float) -> Any:
    """PaddleOCR's ``DBPostProcess.polygons_from_bitmap`` (ppocr/postprocess/db_postprocess.py),
    with rapidocr's identical helpers, without rescaling."""
    import cv2
    import pyclipper
    from shapely.geometry import Polygon

    helper = authors.DBPostProcess(0.3, box_thresh, 1000, 1.6)
    bitmap = probability > helper.thresh
    height, width = bitmap.shape
    boxes, scores = [], []
    contours, _ = cv2.findContours(
        (bitmap * 255).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE
    )
    for contour in contours[: helper.max_candidates]:
        epsilon = 0.002 * cv2.arcLength(contour, True)
        points = cv2.approxPolyDP(contour, epsilon, True).reshape((-1, 2))
        if points.shape[0] < 4:
            continue
        score = helper.box_score_fast(probability, points.reshape(-1, 2))
        if helper.box_thresh > score:
            continue
        polygon = Polygon(points)
        offset = pyclipper.PyclipperOffset()
        offset.AddPath(points, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
        box = np.array(offset.Execute(polygon.area * helper.unclip_ratio / polygon.length))
        if len(box) > 1:
            continue
        box = box.reshape(-1, 2)
        _, short_side = helper.get_mini_boxes(box.reshape((-1, 1, 2)))
        if short_side < helper.min_size + 2:
            continue
        box[:, 0] = np.clip(np.round(box[:, 0]), 0, width)
        box[:, 1] = np.clip(np.round(box[:, 1]), 0, height)
        boxes.append(box)
        scores.append(score)
    return boxes, scores


@pytest.mark.zoo
@pytest.mark.parametrize("image", IMAGES)
def test_polygons_match_paddleocr(image: str, maps: dict[str, Array], authors: Any) -> None:
    probability = maps[image]
    boxes, scores = _paddle_polygons(authors, probability, box_thresh=0.5)
    assert len(boxes) >= 3
    ours = db_decode(probability, box_type="poly")
    least = _assert_matches(ours, boxes, scores)
    assert least >= 0.9
    for points, _ in ours:
        assert points.ndim == 2 and points.shape[1] == 2 and points.shape[0] >= 4
