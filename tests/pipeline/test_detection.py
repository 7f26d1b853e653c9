"""gpux.pipeline.detection against OpenCV's NMS and the model authors' reference decoding.

``cv2.dnn.NMSBoxes`` / ``NMSBoxesBatched`` are the reference for NMS; the YOLO references below
are the ultralytics ONNX Runtime example's ``postprocess`` (examples/YOLOv8-ONNXRuntime/main.py)
and the usual YOLOv5 equivalent, written out row by row as their authors do. The synthetic outputs
are built from known objects, with duplicates, ties and several classes.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpux.pipeline.detection as detection
from gpux.errors import ModelError
from gpux.pipeline.detection import (
    Detections,
    batched_nms,
    decode_boxes_scores,
    decode_nms_output,
    decode_yolo,
    nms,
)
from gpux.pipeline.geometry import letterbox

Array = np.ndarray[Any, Any]


def xywh(boxes: Array) -> list[list[float]]:
    """xyxy -> the (x, y, w, h) OpenCV takes, in float64 as gpux computes them."""
    corners = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1).tolist()


def opencv_nms(boxes: Array, scores: Array, iou: float, score: float, top_k: int = 0) -> Array:
    kept = cv2.dnn.NMSBoxes(xywh(boxes), np.asarray(scores).tolist(), score, iou, top_k=top_k)
    return np.asarray(kept, dtype=np.int64).reshape(-1)


def opencv_batched(
    boxes: Array, scores: Array, classes: Array, iou: float, score: float, top_k: int = 0
) -> Array:
    kept = cv2.dnn.NMSBoxesBatched(
        xywh(boxes), np.asarray(scores).tolist(), np.asarray(classes).tolist(), score, iou,
        top_k=top_k,
    )  # fmt: skip
    return np.asarray(kept, dtype=np.int64).reshape(-1)


# ------------------------------------------------------------------------------------ NMS
@st.composite
def candidates(draw: st.DrawFn, negative: bool = True) -> tuple[Array, Array, Array]:
    """Up to 60 boxes: random, or jittered copies of a few (clusters); integer or float
    coordinates (integers hit IoUs exactly equal to the threshold); zero sides; tied scores."""
    count = draw(st.integers(0, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    low = -30.0 if negative and draw(st.booleans()) else 0.0
    if draw(st.booleans()):  # clusters around a few objects
        centres = rng.uniform(max(low, 0) + 40, 200, (draw(st.integers(1, 5)), 2))
        sides = rng.uniform(5, 80, centres.shape)
        which = rng.integers(0, centres.shape[0], count)
        start = centres[which] - sides[which] / 2 + rng.normal(0, 4, (count, 2))
        size = sides[which] * rng.uniform(0.8, 1.2, (count, 2))
    else:
        start = rng.uniform(low, 200, (count, 2))
        size = rng.uniform(0, 80, (count, 2))
    if draw(st.booleans()):
        start, size = np.round(start), np.round(size)
    if draw(st.booleans()):
        size[rng.random(count) < 0.1] = 0.0  # empty boxes
    start = np.maximum(start, low)
    boxes = np.concatenate([start, start + size], axis=1).astype(np.float32)
    levels = draw(st.sampled_from([None, 2, 5]))  # few distinct scores: many ties
    scores = rng.random(count) if levels is None else rng.integers(0, levels, count) / levels
    classes = rng.integers(0, draw(st.integers(1, 4)), count)
    return boxes, scores.astype(np.float32), classes


THRESHOLDS = st.sampled_from([0.0, 0.3, 0.45, 0.5, 0.7, 1.0])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=candidates(),
    iou=THRESHOLDS,
    score=st.sampled_from([0.0, 0.2, 0.5]),
    top_k=st.sampled_from([0, 0, 3, 20]),
)
def test_nms_keeps_what_opencv_keeps(
    data: tuple[Array, Array, Array], iou: float, score: float, top_k: int
) -> None:
    boxes, scores, _ = data
    expected = opencv_nms(boxes, scores, iou, score, top_k)
    np.testing.assert_array_equal(
        nms(boxes, scores, iou, score_threshold=score, top_k=top_k), expected
    )
    limited = nms(boxes, scores, iou, score_threshold=score, top_k=top_k, max_detections=2)
    np.testing.assert_array_equal(limited, expected[:2])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=candidates(negative=False), iou=THRESHOLDS, score=st.sampled_from([0.0, 0.3]))
def test_batched_nms_keeps_what_opencv_keeps(
    data: tuple[Array, Array, Array], iou: float, score: float
) -> None:
    boxes, scores, classes = data
    np.testing.assert_array_equal(
        batched_nms(boxes, scores, classes, iou, score_threshold=score),
        opencv_batched(boxes, scores, classes, iou, score),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=candidates(), iou=THRESHOLDS)
def test_batched_nms_is_nms_per_class(data: tuple[Array, Array, Array], iou: float) -> None:
    """Also with negative coordinates, where OpenCV's class shift is too short (next test).
    Empty boxes are left out: OpenCV (and so gpux) gives two of them an IoU of 1, classes or not."""
    boxes, scores, classes = data
    solid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, classes = boxes[solid], scores[solid], classes[solid]
    expected = []
    for label in np.unique(classes):
        members = np.flatnonzero(classes == label)
        expected.extend(members[opencv_nms(boxes[members], scores[members], iou, 0.0)])
    kept = batched_nms(boxes, scores, classes, iou, score_threshold=0.0)
    assert sorted(kept.tolist()) == sorted(expected)


def test_opencv_batched_shift_lets_negative_boxes_meet_the_next_class() -> None:
    # max_coord 640, so OpenCV shifts class 1 by 641: [-35, 5] lands on [606, 646], over the
    # class 0 box [600, 640] (IoU 0.57 > 0.45) and is suppressed. Not so here.
    boxes = np.array([[600, 600, 640, 640], [-35, -35, 5, 5]], dtype=np.float32)
    scores = np.array([0.9, 0.8], dtype=np.float32)
    classes = np.array([0, 1])
    assert opencv_batched(boxes, scores, classes, 0.45, 0.1).tolist() == [0]
    assert batched_nms(boxes, scores, classes, 0.45, score_threshold=0.1).tolist() == [0, 1]


def test_hand_made_clusters_with_ties() -> None:
    boxes = np.array(
        [
            [0, 0, 10, 10],  # 0 \
            [0, 0, 10, 10],  # 1  identical to 0, same score: the first listed wins
            [5, 0, 15, 10],  # 2 IoU with 0 is 50/150 = 1/3
            [0, 0, 10, 20],  # 3 IoU with 0 is 100/200 = 0.5 exactly: not above 0.5
            [100, 100, 110, 110],  # 4 alone
            [101, 100, 111, 110],  # 5 IoU with 4 is 90/110
            [50, 50, 50, 60],  # 6 zero width
            [70, 70, 70, 80],  # 7 zero width, elsewhere: OpenCV's IoU of two empty boxes is 1
        ],
        dtype=np.float32,
    )
    scores = np.array([0.8, 0.8, 0.8, 0.7, 0.6, 0.9, 0.5, 0.5], dtype=np.float32)
    for iou in (0.3, 0.5, 0.8):
        np.testing.assert_array_equal(nms(boxes, scores, iou), opencv_nms(boxes, scores, iou, 0))
    assert nms(boxes, scores, 0.5).tolist() == [5, 0, 2, 3, 6]
    assert nms(boxes, scores, 0.3).tolist() == [5, 0, 6]


def test_iou_equal_to_the_threshold_after_float32_rounding() -> None:
    # IoU 90 / 200 = 0.45 exactly; OpenCV's float32 overlap 1.f - (float)0.55 rounds to
    # 0.44999998807907104, which is float32(0.45): not above the threshold, so both stay.
    boxes = np.array([[0, 0, 20, 10], [0, 0, 9, 10]], dtype=np.float32)
    scores = np.array([0.9, 0.8], dtype=np.float32)
    assert opencv_nms(boxes, scores, 0.45, 0).tolist() == [0, 1]
    assert nms(boxes, scores, 0.45).tolist() == [0, 1]
    assert nms(boxes, scores, 0.44).tolist() == [0]


# (x, y, w, h) pairs. The first three, found by search, are small boxes far from the origin whose
# float32 overlap differs with the plain min/max side formula; the last two have areas summing to
# <= DBL_EPSILON, which OpenCV counts as an overlap of 1 however far apart they are.
EDGE_CASES = [
    [[913384.1380901355, 499138.3282320859, 0.1657296861784577, 0.44055931457096364],
     [913384.1994868991, 499138.37351031054, 0.15472432525312907, 0.5194853423794572]],
    [[62711596.17029461, 41717440.03202122, 25.72707281668605, 18.891015811328845],
     [62711613.06806121, 41717423.12572296, 21.603416286533925, 18.361314145869073]],
    [[7697757444.227329, 9401635488.600376, 576.591138184204, 3930.733717095706],
     [7697757403.173839, 9401633751.905539, 600.056068064049, 4526.814437313995]],
    [[0.0, 0.0, 1e-9, 1e-9], [5.0, 5.0, 1e-9, 1e-9]],
    [[3.0, 3.0, 1e-9, 1e-8], [3.0, 3.0, 1e-9, 1e-8]],
]  # fmt: skip


def test_exact_overlap_is_opencvs() -> None:
    """OpenCV keeps both of two boxes exactly when its overlap is <= the threshold, so its overlap
    is the float32 where the answer flips; gpux's recheck must compute that very float32."""
    rng = np.random.default_rng(5)
    for case in range(400 + len(EDGE_CASES)):
        if case >= 400:
            start, size = np.array(EDGE_CASES[case - 400]).reshape(2, 2, 2).transpose(1, 0, 2)
        else:
            scale = [1.0, 1e3, 1e5][case % 3]  # large coordinates round the sides differently
            start = rng.uniform(-0.3, 1.0, (2, 2)) * scale
            if case % 4 == 0:
                start = np.round(start)
            size = rng.uniform(0.05, 0.8, (2, 2)) * scale
            size[1] = size[0] * rng.uniform(0.6, 1.4, 2) if case % 2 else size[1]
        fields = np.concatenate([start, size, (size[:, 0] * size[:, 1])[:, None]], axis=1)
        overlap = detection._opencv_overlap(fields[0][:, None], fields[1][:, None])[0]
        boxes = np.concatenate([start, start + size], axis=1)
        pair = [list(map(float, row)) for row in np.concatenate([start, size], axis=1)]
        both = cv2.dnn.NMSBoxes(pair, [0.9, 0.8], 0.0, float(overlap))
        assert len(both) == 2, (case, boxes, overlap)
        if overlap > 0:
            below = float(np.nextafter(overlap, np.float32(0)))
            assert len(cv2.dnn.NMSBoxes(pair, [0.9, 0.8], 0.0, below)) == 1, (case, boxes)


def test_nms_in_chunks_keeps_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    start = rng.uniform(0, 300, (400, 2))
    boxes = np.concatenate([start, start + rng.uniform(10, 120, (400, 2))], axis=1)
    scores = rng.random(400).astype(np.float32)
    whole = nms(boxes, scores, 0.4)
    monkeypatch.setattr(detection, "_PAIR_CHUNK", 5)
    np.testing.assert_array_equal(nms(boxes, scores, 0.4), whole)
    np.testing.assert_array_equal(whole, opencv_nms(boxes, scores, 0.4, 0))


def test_nms_drops_boxes_opencv_would_misread() -> None:
    # OpenCV lets a NaN box suppress every box after it; an inverted box gets a negative area.
    boxes = np.array(
        [[np.nan, 0, 10, 10], [0, 0, 10, 10], [20, 20, 10, 10], [30, 30, 40, 40]], dtype=np.float32
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 3]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_nms_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match=r"\[k, 4\]"):
        nms(np.zeros((3, 5)), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="scores must be"):
        nms(np.zeros((3, 4)), np.zeros(2), 0.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(np.zeros((3, 4)), np.zeros(3), -0.1)


# ----------------------------------------------------------------------- YOLO references
def reference_yolov8(output: Array, conf: float, iou: float, aware: bool) -> list[tuple]:
    """ultralytics examples/YOLOv8-ONNXRuntime postprocess, for one image, gain 1 and no pad
    (boxes stay in input pixels); class-aware with NMSBoxesBatched when ``aware``."""
    outputs = np.transpose(np.squeeze(output[0]))
    rows = outputs.shape[0]
    boxes, scores, class_ids = [], [], []
    for i in range(rows):
        classes_scores = outputs[i][4:]
        max_score = np.amax(classes_scores)
        if max_score >= conf:
            class_id = np.argmax(classes_scores)
            x, y, w, h = outputs[i][0], outputs[i][1], outputs[i][2], outputs[i][3]
            left = int(x - w / 2)
            top = int(y - h / 2)
            width = int(w)
            height = int(h)
            class_ids.append(class_id)
            scores.append(max_score)
            boxes.append([left, top, width, height])
    if aware:
        indices = cv2.dnn.NMSBoxesBatched(boxes, scores, class_ids, conf, iou)
    else:
        indices = cv2.dnn.NMSBoxes(boxes, scores, conf, iou)
    return [
        (*(float(v) for v in boxes[i]), float(scores[i]), int(class_ids[i]))
        for i in np.asarray(indices).reshape(-1)
    ]


def reference_yolov5(output: Array, conf: float, iou: float, aware: bool) -> list[tuple]:
    """The usual YOLOv5 ONNX postprocess: objectness over the threshold, class probabilities times
    objectness, best class, cv2.dnn NMS."""
    boxes, scores, class_ids = [], [], []
    for row in output[0]:
        if row[4] <= conf:
            continue
        class_scores = row[5:] * row[4]
        class_id = int(np.argmax(class_scores))
        score = class_scores[class_id]
        if score <= conf:
            continue
        x, y, w, h = row[:4]
        boxes.append([int(x - w / 2), int(y - h / 2), int(w), int(h)])
        scores.append(float(score))
        class_ids.append(class_id)
    if aware:
        indices = cv2.dnn.NMSBoxesBatched(boxes, scores, class_ids, conf, iou)
    else:
        indices = cv2.dnn.NMSBoxes(boxes, scores, conf, iou)
    return [
        (*(float(v) for v in boxes[i]), float(scores[i]), int(class_ids[i]))
        for i in np.asarray(indices).reshape(-1)
    ]


def as_rows(found: Detections) -> list[tuple]:
    """Detections in the reference's terms: (x, y, w, h, score, class)."""
    corners = found.boxes.astype(np.float64)
    return [
        (x0, y0, x1 - x0, y1 - y0, float(score), int(label))
        for (x0, y0, x1, y1), score, label in zip(
            corners.tolist(), found.scores.tolist(), found.classes.tolist(), strict=True
        )
    ]


def synthetic_head(
    seed: int, *, anchors: int = 2100, classes: int = 6, objects: int = 12, v5: bool = False
) -> Array:
    """A YOLO head output for one image: objects with integer corners (so the reference's int()
    changes nothing), each seen by several anchors with jittered copies, some scores tied, some
    objects of different classes on top of each other; every other anchor scores low."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((anchors, 4 + classes), dtype=np.float32)
    rows[:, 4:] = rng.uniform(0, 0.2, (anchors, classes))
    starts = rng.integers(0, 560, (anchors, 2))
    sides = rng.integers(2, 40, (anchors, 2)) * 2
    rows[:, :2] = starts + sides / 2
    rows[:, 2:4] = sides
    used = rng.choice(anchors, size=objects * 8, replace=False).reshape(objects, 8)
    for number, members in enumerate(used):
        start = rng.integers(0, 500, 2)
        side = rng.integers(10, 70, 2) * 2
        label = rng.integers(0, classes)
        jitter = rng.integers(-4, 5, (8, 2)) * 2
        rows[members, :2] = start + side / 2 + jitter / 2
        rows[members, 2:4] = side + jitter
        rows[members, 4:] = rng.uniform(0, 0.2, (8, classes))
        rows[members, 4 + label] = rng.choice([0.3, 0.5, 0.6, 0.8, 0.9], 8)
        if number % 3 == 0:  # a second class on the same object, for class-aware NMS to keep
            rows[members[:3], 4 + (label + 1) % classes] = 0.7
    if v5:
        objectness = rows[:, 4:].max(axis=1, keepdims=True)
        probabilities = np.where(rows[:, 4:] == objectness, 1.0, rows[:, 4:] / 2)
        return np.concatenate([rows[:, :4], objectness, probabilities], axis=1)[None]
    return rows.T[None].copy()


@pytest.mark.parametrize("aware", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_yolov8_decoding_keeps_what_the_ultralytics_example_keeps(seed: int, aware: bool) -> None:
    output = synthetic_head(seed)
    expected = reference_yolov8(output, 0.25, 0.45, aware)
    (found,) = decode_yolo(output, style="v8", class_agnostic=not aware)
    assert as_rows(found) == expected
    assert len(expected) > 5


@pytest.mark.parametrize("aware", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_yolov5_decoding_keeps_what_the_usual_recipe_keeps(seed: int, aware: bool) -> None:
    output = synthetic_head(seed, v5=True)
    expected = reference_yolov5(output, 0.25, 0.45, aware)
    (found,) = decode_yolo(output, class_agnostic=not aware)  # auto: anchors first is v5
    assert as_rows(found) == expected
    assert len(expected) > 5


def test_class_aware_keeps_overlapping_objects_of_different_classes() -> None:
    # One object seen as class 1 (0.9) and class 2 (0.8) by two anchors, one as class 0 elsewhere.
    output = np.zeros((1, 4 + 3, 50), dtype=np.float32)
    output[0, :4, 0] = [50, 50, 20, 20]
    output[0, :4, 1] = [51, 50, 20, 20]
    output[0, :4, 2] = [150, 150, 30, 30]
    output[0, 4 + 1, 0], output[0, 4 + 2, 1], output[0, 4 + 0, 2] = 0.9, 0.8, 0.7
    (aware,) = decode_yolo(output, style="v8")
    (agnostic,) = decode_yolo(output, style="v8", class_agnostic=True)
    assert aware.classes.tolist() == [1, 2, 0]
    assert agnostic.classes.tolist() == [1, 0]
    assert as_rows(aware) == reference_yolov8(output, 0.25, 0.45, aware=True)
    assert as_rows(agnostic) == reference_yolov8(output, 0.25, 0.45, aware=False)
    np.testing.assert_array_equal(aware.boxes[0], [40, 40, 60, 60])


def test_yolo_batch_items_are_decoded_separately() -> None:
    heads = [synthetic_head(seed) for seed in (1, 2)]
    quiet = np.zeros_like(heads[0])  # nothing above the threshold
    results = decode_yolo(np.concatenate([heads[0], quiet, heads[1]]))
    assert len(results) == 3 and len(results[1]) == 0
    assert results[1].boxes.shape == (0, 4)
    for found, head in zip([results[0], results[2]], heads, strict=True):
        assert as_rows(found) == reference_yolov8(head, 0.25, 0.45, aware=True)


def test_yolo_candidate_and_detection_limits() -> None:
    output = synthetic_head(3)
    (found,) = decode_yolo(output, max_detections=4)
    assert as_rows(found) == reference_yolov8(output, 0.25, 0.45, aware=True)[:4]
    # max_candidates is OpenCV's top_k: only the best candidates enter NMS.
    (few,) = decode_yolo(output, max_candidates=10, class_agnostic=True)
    rows = output[0].T
    best = rows[:, 4:].max(axis=1)
    passing = np.flatnonzero(best > 0.25)
    corners = np.concatenate(
        [rows[passing, :2] - rows[passing, 2:4] / 2, rows[passing, :2] + rows[passing, 2:4] / 2],
        axis=1,
    )
    kept = opencv_nms(corners, best[passing], 0.45, 0.25, top_k=10)
    np.testing.assert_array_equal(few.scores, best[passing][kept])


@pytest.mark.parametrize(
    ("shape", "style", "message"),
    [
        ((1, 50, 50), "auto", r"cannot tell.*\[1, 50, 50\]"),
        ((1, 4, 100), "v8", r"\[1, 4, 100\].*v8"),
        ((1, 100, 5), "v5", r"\[1, 100, 5\].*v5"),
        ((1, 100, 5), "auto", r"\[1, 100, 5\].*v5"),
        ((100, 85), "auto", r"\[100, 85\].*3-D"),
    ],
)
def test_yolo_refuses_shapes_that_do_not_fit(
    shape: tuple[int, ...], style: str, message: str
) -> None:
    with pytest.raises(ModelError, match=message) as error:
        decode_yolo(np.zeros(shape, dtype=np.float32), style=style)  # type: ignore[arg-type]
    assert error.value.hint is not None
    if len(shape) == 3:
        assert "style: v5" in error.value.hint and "style: v8" in error.value.hint


def test_yolo_auto_style_follows_the_longer_axis() -> None:
    v8 = np.zeros((1, 84, 8400), dtype=np.float32)
    v8[0, :4, 7] = [100, 100, 20, 20]
    v8[0, 4 + 3, 7] = 0.9
    (found,) = decode_yolo(v8)
    assert found.classes.tolist() == [3]
    # The same output laid out v5-style (objectness added) is read as v5.
    v5 = np.concatenate([v8[:, :4], v8[:, 4:].max(axis=1, keepdims=True), v8[:, 4:]], axis=1)
    (found,) = decode_yolo(np.ascontiguousarray(v5.transpose(0, 2, 1)))
    assert found.classes.tolist() == [3]
    assert found.scores.tolist() == [np.float32(0.9) * np.float32(0.9)]


# -------------------------------------------------------------------- other output layouts
def test_decode_nms_output_yolov10_layout() -> None:
    output = np.zeros((2, 5, 6), dtype=np.float32)  # x0 y0 x1 y1 score class, zero padding
    output[0, 0] = [10, 20, 30, 40, 0.9, 3]
    output[0, 1] = [50, 60, 70, 80, 0.2, 1]  # under the threshold
    output[1, 0] = [1, 2, 3, 4, 0.5, 0]
    first, second = decode_nms_output(output)
    assert first.boxes.tolist() == [[10, 20, 30, 40]] and first.classes.tolist() == [3]
    assert second.scores.tolist() == [0.5] and second.classes.tolist() == [0]


def test_decode_nms_output_with_a_batch_column() -> None:
    rows = np.array(
        [[1, 10, 10, 20, 20, 4, 0.8], [0, 0, 0, 5, 5, 2, 0.6], [1, 30, 30, 40, 40, 1, 0.7]],
        dtype=np.float32,
    )  # YOLOv7 end2end: batch x0 y0 x1 y1 class score
    results = decode_nms_output(rows, batch_size=3)
    assert [len(found) for found in results] == [1, 2, 0]
    assert results[1].classes.tolist() == [4, 1]
    with pytest.raises(ModelError, match="image 1 in a batch of 1"):
        decode_nms_output(rows, batch_size=1)


def test_decode_nms_output_needs_known_columns() -> None:
    with pytest.raises(ModelError, match="5 columns") as error:
        decode_nms_output(np.zeros((1, 3, 5), dtype=np.float32))
    assert error.value.hint is not None and "columns" in error.value.hint
    found = decode_nms_output(
        np.array([[[0.9, 2, 1, 1, 5, 5]]], dtype=np.float32),
        columns=["score", "class", "x0", "y0", "x1", "y1"],
    )
    assert found[0].boxes.tolist() == [[1, 1, 5, 5]] and found[0].classes.tolist() == [2]


@pytest.mark.parametrize("box_format", ["xyxy", "xywh", "cxcywh"])
@pytest.mark.parametrize("layout", ["boxes-first", "classes-first"])
def test_decode_boxes_scores_matches_opencv(box_format: str, layout: str) -> None:
    rng = np.random.default_rng(11)
    count, boxes_per_image, classes = 2, 300, 5
    start = rng.uniform(0, 200, (count, boxes_per_image, 2)).astype(np.float32)
    size = rng.uniform(10, 80, (count, boxes_per_image, 2)).astype(np.float32)
    scores = rng.random((count, boxes_per_image, classes)).astype(np.float32) ** 3
    corners = np.concatenate([start, start + size], axis=2)
    given_boxes = {
        "xyxy": corners,
        "xywh": np.concatenate([start, size], axis=2),
        "cxcywh": np.concatenate([start + size / 2, size], axis=2),
    }[box_format]
    given_scores = scores if layout == "boxes-first" else scores.transpose(0, 2, 1).copy()
    results = decode_boxes_scores(
        given_boxes,
        given_scores,
        box_format=box_format,
        scores_layout="auto",  # type: ignore[arg-type]
    )
    for item, found in enumerate(results):
        best, label = scores[item].max(axis=1), scores[item].argmax(axis=1)
        passing = np.flatnonzero(best > 0.25)
        kept = passing[
            opencv_batched(corners[item][passing], best[passing], label[passing], 0.45, 0.25)
        ]
        np.testing.assert_array_equal(found.scores, best[kept])
        np.testing.assert_array_equal(found.classes, label[kept])
        np.testing.assert_allclose(found.boxes, corners[item][kept], atol=1e-4)


def test_decode_boxes_scores_refuses_an_ambiguous_layout() -> None:
    with pytest.raises(ModelError, match="as many classes as boxes") as error:
        decode_boxes_scores(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))
    assert error.value.hint is not None and "scores_layout" in error.value.hint
    boxes = np.array([[[0, 0, 4, 4], [9, 9, 12, 12], [0, 0, 4, 4], [5, 5, 6, 6]]])
    scores = np.diag([0.9, 0.8, 0.7, 0.6])[None]  # box i is class i
    (found,) = decode_boxes_scores(boxes, scores, scores_layout="boxes-first")
    assert found.classes.tolist() == [0, 1, 2, 3]
    (found,) = decode_boxes_scores(
        boxes, scores, scores_layout="classes-first", class_agnostic=True
    )
    assert found.classes.tolist() == [0, 1, 3]  # box 2 is box 0 again
    with pytest.raises(ModelError, match="does not match 4 boxes"):
        decode_boxes_scores(np.zeros((1, 4, 4)), np.zeros((1, 3, 5)))


# ------------------------------------------------------------------------------------ JSON
def test_detections_to_json_in_photo_pixels() -> None:
    placement = letterbox((480, 640), (640, 640))  # scale 1, 80 rows of padding above
    found = Detections(
        np.array([[100.123, 90.0, 200.0, 700.0], [0, 0, 1, 1]], dtype=np.float32),
        np.array([0.9, 0.30000001], dtype=np.float32),
        np.array([2, 0]),
    )
    assert found.to_json(["person", "bicycle", "car"], placement.transform) == [
        {"box": [100.12, 10.0, 200.0, 480.0], "score": 0.9, "class": 2, "label": "car"},
        {"box": [0.0, 0.0, 1.0, 0.0], "score": 0.3, "class": 0, "label": "person"},
    ]
    assert found.to_json()[0] == {"box": [100.12, 90.0, 200.0, 700.0], "score": 0.9, "class": 2}
    with pytest.raises(ModelError, match="class 2, which has no label"):
        found.to_json(["person", "bicycle"])
