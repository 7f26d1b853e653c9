"""Object-detector outputs -> boxes, scores and classes per image, with numpy only.

Decoders for the output layouts ONNX detectors ship with:

* :func:`decode_yolo`: YOLOv5/v7-style ``[N, anchors, 5 + C]`` (objectness, class probabilities)
  and YOLOv8/v11-style ``[N, 4 + C, anchors]`` (class scores only) raw heads;
* :func:`decode_nms_output`: models with NMS inside (YOLOv10 ``[N, k, 6]``, YOLOv7 end2end
  ``[k, 7]`` with a batch index), which only need filtering and splitting per image;
* :func:`decode_boxes_scores`: separate ``boxes`` and ``scores`` outputs (SSD, PicoDet,
  RetinaFace-style heads) in ``xyxy``, ``xywh`` or ``cxcywh``.

Each thresholds the whole batch with one mask (no Python loop per anchor), then runs NMS per image.

:func:`nms` and :func:`batched_nms` keep exactly the boxes ``cv2.dnn.NMSBoxes`` and
``cv2.dnn.NMSBoxesBatched`` keep, because that is what the model authors' examples call (ultralytics'
``examples/YOLOv8-ONNXRuntime``) and users compare against it. OpenCV's rules, from
``modules/dnn/src/nms.cpp``, ``nms.inl.hpp`` and ``core/types.hpp``:

* candidates are the scores strictly above ``score_threshold``, as float32;
  ``std::stable_sort`` by score, descending, so equal scores keep their input order;
  ``top_k > 0`` truncates that list before NMS;
* a candidate is kept when its overlap with every box kept so far is ``<= nms_threshold``
  (so an IoU equal to the threshold does not suppress);
* the overlap is ``1.f - (float)jaccardDistance(a, b)`` on ``Rect2d`` (the Python binding's
  type): intersection ``min(lo.w - (hi.x - lo.x), hi.w)`` per axis in float64 (``lo`` the box with
  the smaller x), empty when a side is ``<= 0``, areas ``w * h`` with no ``+1``, and IoU 1 when both
  areas sum to ``<= DBL_EPSILON``;
* ``eta`` defaults to 1 (no adaptive threshold) and is not offered here;
* ``NMSBoxesBatched`` shifts each box by ``class * (max_coord + 1)``, ``max_coord`` the largest
  coordinate (at least 0), then runs the same NMS.

Where this module differs, on purpose: boxes with a non-finite coordinate or score, or with
``x1 < x0`` or ``y1 < y0``, are dropped before NMS (in OpenCV a NaN box suppresses every box after
it); and the class shift also spans negative coordinates, which OpenCV's does not, so boxes of two
classes do not suppress each other there either. With non-negative coordinates the shift is
OpenCV's, bit for bit. As in OpenCV, two boxes whose areas sum to <= DBL_EPSILON (empty boxes) count
as overlapping fully, whatever their classes.

The overlap is measured in one vectorised pass over the pairs a sweep along x finds, with the plain
float64 IoU; pairs within 1e-6 of the threshold are measured again with OpenCV's arithmetic (its
side formula, then float32), so the kept boxes are OpenCV's even where rounding decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from gpux.errors import ModelError
from gpux.pipeline.geometry import ImageTransform

Array = np.ndarray[Any, Any]
BoxFormat = Literal["xyxy", "xywh", "cxcywh"]
YoloStyle = Literal["v5", "v8", "auto"]

_DBL_EPSILON = float(np.finfo(np.float64).eps)  # std::numeric_limits<double>::epsilon()
_PAIR_CHUNK = 1 << 20  # candidate box pairs examined at once: bounds memory, not the result
_EMPTY_INDICES = np.zeros(0, dtype=np.int64)


# ----------------------------------------------------------------------------- Detections
@dataclass(frozen=True, eq=False)
class Detections:
    """One image's detections: ``boxes`` float32 ``[k, 4]`` (x0, y0, x1, y1) in model-input
    pixels, ``scores`` float32 ``[k]`` and ``classes`` int64 ``[k]``, best score first."""

    boxes: Array
    scores: Array
    classes: Array

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            np.zeros((0, 4), dtype=np.float32),
            np.zeros(0, dtype=np.float32),
            np.zeros(0, dtype=np.int64),
        )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to_json(
        self,
        labels: Sequence[str] | None = None,
        transform: ImageTransform | None = None,
    ) -> list[dict[str, Any]]:
        """``[{"box": [x0, y0, x1, y1], "score": s, "class": c, "label": name}, ...]``.

        Boxes are in original-photo pixels when ``transform`` is given (clipped to the photo),
        model-input pixels otherwise, rounded to 2 decimals. ``score`` is the float32 score's
        shortest decimal (0.9, not 0.8999999761581421). ``label`` appears when ``labels`` does.
        """
        if transform is None:
            boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        else:
            boxes = transform.boxes_to_source(np.asarray(self.boxes).reshape(-1, 4))
        classes = [int(c) for c in self.classes.tolist()]
        if labels is not None:
            unnamed = [c for c in classes if not 0 <= c < len(labels)]
            if unnamed:
                raise ModelError(
                    f"the model predicted class {unnamed[0]}, which has no label: the label "
                    f"list has {len(labels)} entries",
                    "give one label per class the model predicts, in class order",
                )
        scores = [float(str(score)) for score in np.asarray(self.scores, dtype=np.float32)]
        result: list[dict[str, Any]] = []
        for box, score, index in zip(np.round(boxes, 2).tolist(), scores, classes, strict=True):
            entry: dict[str, Any] = {"box": box, "score": score, "class": index}
            if labels is not None:
                entry["label"] = labels[index]
            result.append(entry)
        return result


# ------------------------------------------------------------------------------------ NMS
def nms(
    boxes: Array,
    scores: Array,
    iou_threshold: float,
    *,
    score_threshold: float | None = None,
    max_detections: int | None = None,
    top_k: int | None = None,
) -> Array:
    """Greedy class-agnostic NMS: indices of the kept ``boxes`` (xyxy ``[k, 4]``), best first.

    The same indices, in the same order, as ``cv2.dnn.NMSBoxes(xywh, scores, score_threshold,
    iou_threshold, top_k=top_k)`` with ``xywh = (x0, y0, x1 - x0, y1 - y0)`` in float64.
    ``score_threshold`` keeps scores strictly above it (``None``: all but NaN and -inf);
    ``top_k`` keeps only that many best candidates before NMS, as OpenCV's ``top_k`` does;
    ``max_detections`` stops once that many boxes are kept.
    """
    rects = _corner_rects(_boxes_array(boxes).T)
    scores32 = _scores_array(scores, rects.shape[1])
    return _nms_rects(rects, scores32, iou_threshold, score_threshold, top_k, max_detections)


def batched_nms(
    boxes: Array,
    scores: Array,
    classes: Array,
    iou_threshold: float,
    *,
    score_threshold: float | None = None,
    max_detections: int | None = None,
    top_k: int | None = None,
) -> Array:
    """Class-aware NMS: boxes suppress only boxes of their own class.

    The same indices as ``cv2.dnn.NMSBoxesBatched(xywh, scores, classes, ...)`` when no
    coordinate is negative (see the module docstring for the one difference). Other arguments as
    :func:`nms`.
    """
    rects = _corner_rects(_boxes_array(boxes).T)
    scores32 = _scores_array(scores, rects.shape[1])
    class_ids = np.asarray(classes)
    if class_ids.shape != scores32.shape:
        raise ValueError(f"classes must be [{scores32.shape[0]}], got {list(class_ids.shape)}")
    rects = _class_shifted(rects, class_ids.astype(np.int64))
    return _nms_rects(rects, scores32, iou_threshold, score_threshold, top_k, max_detections)


def _boxes_array(boxes: Array) -> Array:
    array = np.asarray(boxes)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must be [k, 4] (x0, y0, x1, y1), got {list(array.shape)}")
    return array


def _scores_array(scores: Array, count: int) -> Array:
    array = np.asarray(scores, dtype=np.float32)
    if array.shape != (count,):
        raise ValueError(f"scores must be [{count}] like the boxes, got {list(array.shape)}")
    return array


def _corner_rects(corners: Array) -> Array:
    """``[4, k]`` rows x0, y0, x1, y1 -> float64 ``[4, k]`` rows x, y, w, h (``Rect2d`` fields)."""
    rects = np.array(corners, dtype=np.float64)
    rects[2:] -= rects[:2]
    return rects


def _usable(rects: Array) -> Array:
    """Per box: finite coordinates and no negative side (the boxes NMS considers)."""
    finite = np.isfinite(rects)
    both: Array = finite[0] & finite[1] & finite[2] & finite[3] & (rects[2] >= 0) & (rects[3] >= 0)
    return both


def _all_usable(rects: Array) -> bool:
    return bool(np.isfinite(rects).all() and rects[2:].min(initial=0.0) >= 0)


def _class_shifted(rects: Array, classes: Array) -> Array:
    """NMSBoxesBatched's trick: move each class to its own region, diagonally, so no box of one
    class overlaps a box of another; then plain NMS is class-aware."""
    extent = rects if _all_usable(rects) else rects.compress(_usable(rects), axis=1)
    if extent.shape[1] == 0:
        return rects  # NMS keeps none of them
    # OpenCV: max(0, every x, y, x + w, y + h), computed as it does.
    highest = max(0.0, float(extent[:2].max()), float((extent[:2] + extent[2:]).max()))
    # OpenCV's span, highest + 1, leaves negative coordinates free to reach into the next class's
    # region. Subtracting the lowest negative coordinate closes that gap; it is 0 (and the span
    # OpenCV's, bit for bit) when nothing is negative.
    lowest = min(0.0, float(extent[:2].min()))
    shifted = rects.copy()
    shifted[:2] += classes * ((highest - lowest) + 1.0)
    return shifted


def _nms_rects(
    rects: Array,
    scores32: Array,
    iou_threshold: float,
    score_threshold: float | None,
    top_k: int | None,
    max_detections: int | None,
) -> Array:
    """NMS on float64 ``Rect2d`` fields (``[4, k]`` rows x, y, w, h) and float32 scores."""
    if not iou_threshold >= 0:
        raise ValueError(f"iou_threshold must be >= 0, got {iou_threshold}")
    floor = np.float32(-np.inf if score_threshold is None else score_threshold)
    valid = scores32 > floor
    if not _all_usable(rects):
        valid &= _usable(rects)
    if max_detections == 0:
        return _EMPTY_INDICES
    # std::stable_sort by score, descending: equal scores keep their input order.
    if valid.all():
        order = np.argsort(-scores32, kind="stable")
    else:
        candidates = np.flatnonzero(valid)
        order = candidates[np.argsort(-scores32[candidates], kind="stable")]
    if top_k is not None and top_k > 0:
        order = order[:top_k]
    if order.size == 0:
        return _EMPTY_INDICES
    kept = _greedy(np.take(rects, order, axis=1), np.float32(iou_threshold), max_detections)
    return order[kept]


def _greedy(rects: Array, threshold: np.float32, limit: int | None) -> Array:
    """Positions kept by greedy NMS over boxes sorted best first.

    OpenCV's rule, with its symmetric overlap: box ``j`` is kept when no kept box before it
    overlaps it by more than ``threshold``. Every such pair is found in one vectorised pass. Boxes
    nothing overlaps are kept and what they overlap is suppressed, all at once; that settles most
    boxes. A loop visits only the rest, in order, each striking out what it suppresses if kept.
    """
    count = rects.shape[1]
    area = rects[2] * rects[3]
    earlier, later = _suppressing_pairs(rects, area, threshold)
    # OpenCV gives boxes whose areas sum to <= DBL_EPSILON an IoU of 1, wherever they are: such
    # boxes are settled in the loop, which applies that rule.
    tiny = np.zeros(count, dtype=bool)
    if threshold < 1 and area.min() <= _DBL_EPSILON:
        tiny = area <= _DBL_EPSILON
    elif earlier.size == 0:
        return np.arange(count if limit is None else min(count, limit), dtype=np.int64)
    kept = np.ones(count, dtype=bool)
    kept[later] = False
    kept &= ~tiny  # now: boxes nothing can suppress
    dead = np.zeros(count, dtype=bool)
    dead[later[kept[earlier]]] = True
    unsettled = np.flatnonzero(~kept & ~dead)
    if unsettled.size:
        from_unsettled = ~(kept[earlier] | dead[earlier])
        sources, targets = earlier[from_unsettled], later[from_unsettled]
        by_source = np.argsort(sources)
        sources, targets = sources[by_source], targets[by_source]
        starts = np.searchsorted(sources, unsettled).tolist()
        ends = np.searchsorted(sources, unsettled, side="right").tolist()
        tiny_positions = np.flatnonzero(tiny)
        for position, start, end in zip(unsettled.tolist(), starts, ends, strict=True):
            if dead[position]:
                continue
            kept[position] = True
            dead[targets[start:end]] = True
            if tiny[position]:
                others = tiny_positions[tiny_positions > position]
                dead[others[area[others] + area[position] <= _DBL_EPSILON]] = True
    positions = np.flatnonzero(kept)
    return positions if limit is None else positions[:limit]


def _suppressing_pairs(rects: Array, area: Array, threshold: np.float32) -> tuple[Array, Array]:
    """``(earlier, later)`` positions of every pair whose overlap exceeds ``threshold``.

    IoU <= (intersection width) / (wider box's width), so an IoU above ``t`` needs the two left
    edges closer than ``(1 - t)`` times the left box's width, and likewise the top edges. A sweep
    over boxes sorted by x lists the pairs meeting the first bound (the second prunes them when
    there are many) and their IoU is measured at once: clustered detections cost about the boxes
    per cluster, not the square of all boxes.
    """
    if threshold >= 1:  # an overlap never exceeds 1
        return _EMPTY_INDICES, _EMPTY_INDICES
    positions = np.argsort(rects[0])
    if rects[2:].min() <= 0:  # an empty box meets nothing
        positions = positions[(rects[2, positions] > 0) & (rects[3, positions] > 0)]
    count = positions.shape[0]
    if count < 2:
        return _EMPTY_INDICES, _EMPTY_INDICES
    # Rows x, y, x + w, y + h, area, w, h, boxes sorted by x. The IoU reads the first five only,
    # gathered once per side of the pairs; w and h are gathered for the few pairs near the
    # threshold, measured again OpenCV's way.
    fields = np.empty((7, count), dtype=np.float64)
    np.take(rects[:2], positions, axis=1, out=fields[:2])
    np.take(rects[2:4], positions, axis=1, out=fields[5:7])
    np.take(area, positions, out=fields[4])
    np.add(fields[0:2], fields[5:7], out=fields[2:4])
    x, y, w, h = fields[0], fields[1], fields[5], fields[6]
    # Both bounds are necessary conditions; the margins only keep float rounding from cutting a
    # pair OpenCV would suppress (1e-6 below the threshold, 1e-9 of the largest coordinate).
    slack = 1.0 - max(0.0, float(threshold) - 1e-6)
    margin = 1e-9 * float(np.abs(rects).max())
    counts = np.searchsorted(x, x + w * slack + margin, side="right") - np.arange(1, count + 1)
    totals = np.cumsum(counts)
    if totals[-1] == 0:
        return _EMPTY_INDICES, _EMPTY_INDICES
    # Pair k of box i (in x order) is box i + 1 + (k - pairs listed before box i).
    shift = np.arange(1, count + 1) - (totals - counts)
    sources: list[Array] = []
    targets: list[Array] = []
    for begin, end in _chunks(totals):
        done = int(totals[begin - 1]) if begin else 0
        pairs = int(totals[end - 1]) - done
        if not pairs:
            continue
        run = counts[begin:end]
        first = np.repeat(np.arange(begin, end), run)
        second = np.arange(done, done + pairs) + np.repeat(shift[begin:end], run)
        if pairs > 8 * count:  # many far apart in y: drop those before measuring
            close = np.abs(y[first] - y[second]) < np.maximum(h[first], h[second]) * slack + margin
            first, second = first[close], second[close]
        hit = np.flatnonzero(_exceeds(fields, first, second, threshold))
        first, second = positions[first[hit]], positions[second[hit]]
        sources.append(np.minimum(first, second))
        targets.append(np.maximum(first, second))
    if len(sources) == 1:
        return sources[0], targets[0]
    if not sources:
        return _EMPTY_INDICES, _EMPTY_INDICES
    return np.concatenate(sources), np.concatenate(targets)


def _chunks(totals: Array) -> list[tuple[int, int]]:
    """Runs of boxes ``[begin, end)`` listing at most ``_PAIR_CHUNK`` pairs each (at least one
    box): bounds the memory the pairs take, whatever their number."""
    count = totals.shape[0]
    if totals[-1] <= _PAIR_CHUNK:
        return [(0, count)]
    runs = []
    begin = 0
    while begin < count:
        done = int(totals[begin - 1]) if begin else 0
        end = max(begin + 1, int(np.searchsorted(totals, done + _PAIR_CHUNK, side="right")))
        runs.append((begin, end))
        begin = end
    return runs


def _exceeds(fields: Array, first: Array, second: Array, threshold: np.float32) -> Array:
    """Whether OpenCV's overlap of each (non-empty) pair of boxes ``(first[i], second[i])`` is
    above ``threshold``; ``fields`` holds the boxes' rows x, y, x + w, y + h, area, w, h.

    The IoU is the plain float64 formula, which matches OpenCV's to ~1e-12; its own rounding (its
    side formula, then float32) can only flip pairs within 1e-6 of the threshold, and those are
    measured again its way.
    """
    a, b = np.take(fields[:5], first, axis=1), np.take(fields[:5], second, axis=1)
    reach = np.minimum(a[2:4], b[2:4]) - np.maximum(a[:2], b[:2])
    np.maximum(reach, 0.0, out=reach)
    intersection = reach[0] * reach[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersection / (a[4] + b[4] - intersection)
    limit = float(threshold)
    hit: Array = iou > limit
    unsure = ~(np.abs(iou - limit) > 1e-6)
    if unsure.any():
        close = np.flatnonzero(unsure)
        rects = fields[[0, 1, 5, 6, 4]]  # x, y, w, h, area
        overlap = _opencv_overlap(
            np.take(rects, first[close], axis=1), np.take(rects, second[close], axis=1)
        )
        hit[close] = ~(overlap <= threshold)
    return hit


def _opencv_overlap(a: Array, b: Array) -> Array:
    """``1.f - (float)jaccardDistance(a, b)`` for non-empty ``Rect2d`` pairs (rows x, y, w, h,
    area), float32, rounded as OpenCV rounds it (``core/types.hpp``: ``operator&=``,
    ``jaccardDistance``).

    Per axis, with ``lo`` the box starting first: side ``min(lo.w - (hi.x - lo.x), hi.w)``, none
    when ``<= 0``, nor when ``lo.x < 0 && lo.x + lo.w < hi.x`` (OpenCV's overflow guard). Areas
    summing to ``<= DBL_EPSILON`` give 1.
    """
    start_a, start_b, side_a, side_b = a[:2], b[:2], a[2:4], b[2:4]
    a_first = start_a < start_b
    low_side = np.where(a_first, side_a, side_b)
    high_side = np.where(a_first, side_b, side_a)
    gap = np.abs(start_a - start_b)  # hi.x - lo.x, rounded the same either way round
    reach = np.minimum(low_side - gap, high_side)
    low = np.minimum(start_a, start_b)
    guarded = (low < 0) & (low + low_side < np.maximum(start_a, start_b))
    meets = (reach[0] > 0) & (reach[1] > 0) & ~guarded[0] & ~guarded[1]
    intersection = np.where(meets, reach[0] * reach[1], 0.0)
    total = a[4] + b[4]
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.where(total <= _DBL_EPSILON, 0.0, 1.0 - intersection / (total - intersection))
    overlap: Array = np.float32(1.0) - distance.astype(np.float32)
    return overlap


# ------------------------------------------------------------------------------- decoders
def decode_yolo(
    output: Array,
    *,
    style: YoloStyle = "auto",
    score_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    class_agnostic: bool = False,
    max_detections: int = 300,
    max_candidates: int = 30000,
) -> list[Detections]:
    """A raw YOLO head's output -> one :class:`Detections` per batch item, in input pixels.

    ``style="v8"`` (v8, v11): ``[N, 4 + C, anchors]``, rows cx, cy, w, h then C class scores;
    the score is the best class score. ``style="v5"`` (v5, v7): ``[N, anchors, 5 + C]``, columns
    cx, cy, w, h, objectness, C class probabilities; anchors need objectness above the threshold
    and the score is the best ``objectness * class``. ``"auto"`` takes the longer of the last two
    axes as the anchors (thousands of anchors against tens of classes): anchors last is v8,
    anchors first is v5; equal lengths are refused.

    Scores strictly above ``score_threshold`` are candidates; the best ``max_candidates`` of each
    image go through NMS (class-aware unless ``class_agnostic``), keeping ``max_detections``.
    """
    array = _float32(output, "the YOLO output")
    resolved = _yolo_style(array.shape, style)
    threshold = np.float32(score_threshold)
    settings = _NmsSettings(iou_threshold, class_agnostic, max_detections, max_candidates)
    results = []
    if resolved == "v8":
        best = array[:, 4:, :].max(axis=1)  # [N, anchors]: the whole batch in one pass
        for item, anchors in enumerate(_passing(best > threshold)):
            # The class rows' gather comes out column-major, which suits the argmax down them.
            classes = array[item, 4:][:, anchors].argmax(axis=0)
            boxes = np.take(array[item, :4], anchors, axis=1)  # [4, k]
            results.append(_detect(boxes, "cxcywh", best[item, anchors], classes, settings))
    else:
        objectness = array[:, :, 4] > threshold  # [N, anchors]
        for item, anchors in enumerate(_passing(objectness)):
            rows = array[item][anchors]  # [k, 5 + C]
            products = rows[:, 5:] * rows[:, 4:5]
            classes = products.argmax(axis=1)
            scores = products[np.arange(classes.shape[0]), classes]
            confident = scores > threshold
            results.append(
                _detect(
                    rows[confident, :4].T,
                    "cxcywh",
                    scores[confident],
                    classes[confident],
                    settings,
                )
            )
    return results


def decode_boxes_scores(
    boxes: Array,
    scores: Array,
    *,
    box_format: BoxFormat = "xyxy",
    scores_layout: Literal["auto", "boxes-first", "classes-first"] = "auto",
    score_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    class_agnostic: bool = False,
    max_detections: int = 300,
    max_candidates: int = 30000,
) -> list[Detections]:
    """Separate box and score outputs (SSD, PicoDet, RetinaFace-style) -> detections per image.

    ``boxes`` is ``[N, k, 4]`` in ``box_format`` (already decoded to input pixels); ``scores``
    is ``[N, k, C]`` ("boxes-first"), ``[N, C, k]`` ("classes-first") or ``[N, k]`` for one class.
    ``"auto"`` finds the axis of length k, refusing ``C == k``. Each box takes its best class;
    the rest is as :func:`decode_yolo`. Normalised boxes must be scaled to pixels first.
    """
    if box_format not in ("xyxy", "xywh", "cxcywh"):
        raise ValueError(f"box_format must be 'xyxy', 'xywh' or 'cxcywh', got {box_format!r}")
    box_array = _float32(boxes, "the boxes output")
    score_array = _float32(scores, "the scores output", dims=(2, 3))
    if box_array.shape[-1] != 4:
        raise ModelError(
            f"the boxes output has shape {list(box_array.shape)}, not [N, k, 4]",
            "pass the output holding the box coordinates as boxes, the class scores as scores",
        )
    count, boxes_per_item = box_array.shape[0], box_array.shape[1]
    if score_array.ndim == 2:
        score_array = score_array[:, :, None]
    class_axis = _class_axis(score_array.shape, count, boxes_per_item, scores_layout)
    best = score_array.max(axis=class_axis)  # [N, k]
    settings = _NmsSettings(iou_threshold, class_agnostic, max_detections, max_candidates)
    results = []
    for item, indices in enumerate(_passing(best > np.float32(score_threshold))):
        if class_axis == 2:
            classes = score_array[item][indices].argmax(axis=1)
        else:
            classes = np.take(score_array[item], indices, axis=1).argmax(axis=0)
        results.append(
            _detect(box_array[item][indices].T, box_format, best[item, indices], classes, settings)
        )
    return results


_NMS_COLUMNS = {
    6: ("x0", "y0", "x1", "y1", "score", "class"),  # YOLOv10, ultralytics end2end exports
    7: ("batch", "x0", "y0", "x1", "y1", "class", "score"),  # YOLOv7 --end2end (ONNX Runtime)
}
_NEEDED_COLUMNS = {"x0", "y0", "x1", "y1", "score", "class"}


def decode_nms_output(
    output: Array,
    *,
    columns: Sequence[str] | None = None,
    score_threshold: float = 0.25,
    batch_size: int | None = None,
    max_detections: int | None = None,
) -> list[Detections]:
    """Detections from a model with NMS inside: no NMS here, only filtering and splitting.

    ``output`` is ``[N, k, 6]`` (one block of rows per image) or ``[k, 7]`` / ``[1, k, 7]`` with a
    batch index column. ``columns`` names each column among x0, y0, x1, y1, score, class and
    batch; the defaults are YOLOv10's ``x0 y0 x1 y1 score class`` for 6 columns and YOLOv7
    end2end's ``batch x0 y0 x1 y1 class score`` for 7. Rows scoring strictly above
    ``score_threshold`` are kept in the model's order (padding rows score 0). With a batch column,
    ``batch_size`` gives the number of images (default: the highest index + 1).
    """
    array = _float32(output, "the detections output", dims=(2, 3))
    width = array.shape[-1]
    names = tuple(columns) if columns is not None else _NMS_COLUMNS.get(width)
    if names is None or len(names) != width or not set(names) >= _NEEDED_COLUMNS:
        raise ModelError(
            f"the detections output has shape {list(array.shape)}: its {width} columns are not "
            f"known ({', '.join(names) if names else 'no default for that many'})",
            "name every column with columns: [x0, y0, x1, y1, score, class] (and batch when "
            "rows carry their image's index)",
        )
    column = {name: position for position, name in enumerate(names)}
    if "batch" in column:
        rows = array.reshape(-1, width)
        items = rows[:, column["batch"]]
        item_ids = items.astype(np.int64)
        if rows.shape[0] and (not np.array_equal(item_ids, items) or item_ids.min() < 0):
            raise ModelError(
                "the detections output's batch column holds values that are not image indices",
                "check columns: the batch index must be the column named batch",
            )
        highest = int(item_ids.max()) + 1 if rows.shape[0] else 0
        count = highest if batch_size is None else batch_size
        if highest > count:
            raise ModelError(
                f"the detections output names image {highest - 1} in a batch of {count}",
                "pass the batch size the model was run with",
            )
    else:
        if array.ndim != 3:
            raise ModelError(
                f"the detections output has shape {list(array.shape)}, not [N, k, {width}]",
                "add a batch column name to columns when rows carry their image's index",
            )
        count = array.shape[0]
        rows = array.reshape(-1, width)
        item_ids = np.repeat(np.arange(count), array.shape[1])
    scores = rows[:, column["score"]]
    keep = scores > np.float32(score_threshold)
    rows, scores, item_ids = rows[keep], scores[keep], item_ids[keep]
    order = np.argsort(item_ids, kind="stable")  # rows of each image together, model order kept
    rows, scores, item_ids = rows[order], scores[order], item_ids[order]
    boxes = rows[:, [column["x0"], column["y0"], column["x1"], column["y1"]]]
    classes = rows[:, column["class"]].astype(np.int64)
    bounds = np.searchsorted(item_ids, np.arange(count + 1))
    results = []
    for item in range(count):
        span = slice(int(bounds[item]), int(bounds[item + 1]))
        if max_detections is not None:
            span = slice(span.start, min(span.stop, span.start + max_detections))
        results.append(Detections(boxes[span].copy(), scores[span].copy(), classes[span].copy()))
    return results


# ------------------------------------------------------------------------------- helpers
def _float32(value: Array, what: str, dims: tuple[int, ...] = (3,)) -> Array:
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"{what} is not a numeric array ({type(value).__name__})",
            "pass the model's output tensor as it came out of the session",
        ) from exc
    if array.ndim not in dims:
        expected = " or ".join(f"{d}-D" for d in dims)
        raise ModelError(
            f"{what} has shape {list(array.shape)}, expected {expected} with a batch axis first",
            "pass the whole output tensor of the batch, not one image's slice of it",
        )
    return array


def _yolo_style(shape: tuple[int, ...], style: str) -> str:
    _, first, second = shape
    if style == "auto":
        if first == second:
            raise ModelError(
                f"cannot tell the YOLO output layout from its shape {list(shape)}: anchors and "
                f"values per anchor are both {first}",
                "set style: v5 for [N, anchors, 5 + classes] or style: v8 for "
                "[N, 4 + classes, anchors]",
            )
        style = "v8" if first < second else "v5"
    if style == "v8" and first >= 5:
        return "v8"
    if style == "v5" and second >= 6:
        return "v5"
    if style not in ("v5", "v8"):
        raise ValueError(f"style must be 'v5', 'v8' or 'auto', got {style!r}")
    layout = "[N, 4 + classes, anchors]" if style == "v8" else "[N, anchors, 5 + classes]"
    raise ModelError(
        f"the YOLO output has shape {list(shape)}, which does not fit the {style} layout {layout} "
        f"with at least one class",
        "set style: v5 for [N, anchors, 5 + classes] or style: v8 for [N, 4 + classes, anchors]",
    )


def _class_axis(shape: tuple[int, ...], count: int, boxes: int, layout: str) -> int:
    if shape[0] == count:
        if layout == "boxes-first" and shape[1] == boxes:
            return 2
        if layout == "classes-first" and shape[2] == boxes:
            return 1
        if layout == "auto" and shape[1] == boxes and shape[2] != boxes:
            return 2
        if layout == "auto" and shape[2] == boxes and shape[1] != boxes:
            return 1
        if layout == "auto" and shape[1] == boxes == shape[2]:
            raise ModelError(
                f"cannot tell the classes axis of scores {list(shape)}: as many classes as "
                f"boxes ({boxes})",
                "set scores_layout: boxes-first for [N, k, C] or classes-first for [N, C, k]",
            )
    raise ModelError(
        f"the scores output has shape {list(shape)}, which does not match {boxes} boxes per "
        f"image in a batch of {count}",
        "scores must be [N, k, C] or [N, C, k] for boxes [N, k, 4]",
    )


@dataclass(frozen=True)
class _NmsSettings:
    iou_threshold: float
    class_agnostic: bool
    max_detections: int
    max_candidates: int


def _passing(mask: Array) -> list[Array]:
    """Per batch item, the indices where ``mask [N, k]`` is true: one pass over the whole batch."""
    count, length = mask.shape
    flat = np.flatnonzero(mask)
    if count == 1:
        return [flat]
    bounds = np.searchsorted(flat, np.arange(count + 1) * length).tolist()
    return [flat[bounds[item] : bounds[item + 1]] - item * length for item in range(count)]


def _detect(
    columns: Array,
    box_format: BoxFormat,
    scores: Array,
    classes: Array,
    settings: _NmsSettings,
) -> Detections:
    """NMS over one image's candidates: ``columns`` is ``[4, k]``, one row per box field."""
    if scores.shape[0] == 0:
        return Detections.empty()
    rects, corners = _rects(columns, box_format)
    classes = classes.astype(np.int64, copy=False)
    if not settings.class_agnostic:
        rects = _class_shifted(rects, classes)
    kept = _nms_rects(
        rects,
        scores,
        settings.iou_threshold,
        None,
        settings.max_candidates,
        settings.max_detections,
    )
    return Detections(np.take(corners, kept, axis=1).T.copy(), scores[kept], classes[kept])


def _rects(columns: Array, box_format: BoxFormat) -> tuple[Array, Array]:
    """float64 ``[4, k]`` x, y, w, h for NMS, and float32 ``[4, k]`` x0, y0, x1, y1 corners.

    The NMS fields are computed as the reference code computes them: float32 ``cx - w / 2`` for
    centre boxes (ultralytics' examples), float64 ``x1 - x0`` for corners.
    """
    if box_format == "xyxy":
        return _corner_rects(columns), columns
    rects = np.empty(columns.shape, dtype=np.float64)
    corners = np.empty_like(columns)
    if box_format == "cxcywh":
        half = columns[2:] / 2
        np.subtract(columns[:2], half, out=corners[:2])
        np.add(columns[:2], half, out=corners[2:])
    else:  # xywh
        corners[:2] = columns[:2]
        np.add(columns[:2], columns[2:], out=corners[2:])
    rects[:2] = corners[:2]
    rects[2:] = columns[2:]
    return rects, corners
