"""Post-processing steps: model outputs -> results people read.

Numeric steps (softmax, sigmoid, mean_pool, l2_normalize, and the tensor utilities pick, slice,
transpose, squeeze and argmax over an axis) work on the whole batch at once, the first axis being
the items (the runner moves an output's declared ``batch_axis`` there first), so their axes count
the batch axis as 0. Decoding steps (argmax, top_k, threshold, segments) end a chain and
turn each item into plain JSON values. A chain without a decoding step ends with the numbers
as nested lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpux.config.pipeline import Segments, Step
from gpux.errors import ModelError
from gpux.pipeline.geometry import ImageTransform

Array = np.ndarray[Any, Any]


@dataclass
class StepContext:
    """What steps may need besides the output: the model's inputs and the audio frame length."""

    feed: Mapping[str, Array] = field(default_factory=dict)
    labels: list[str] | None = None
    frame_seconds: float | None = None
    result: str = "result"
    images: Mapping[str, list[ImageTransform]] = field(default_factory=dict)
    """How each image input's images became the tensor, item by item (decoders map boxes back
    to the original pixels with it)."""
    outputs: Mapping[str, Array] = field(default_factory=dict)
    """Every model output, items first (a step that reads a second output, such as nms)."""

    def transforms(self, image: str | None, count: int) -> list[ImageTransform | None]:
        """Each item's placement in image input ``image`` (default: the only one); Nones
        when the pipeline has no image input (boxes then stay in model-input pixels)."""
        if image is None:
            if len(self.images) > 1:
                raise ModelError(
                    f"result '{self.result}': the pipeline has several image inputs "
                    f"({', '.join(self.images)}), so its boxes could be in any of their pixels",
                    "name the one with image: under the step",
                )
            image = next(iter(self.images), None)
            if image is None:
                return [None] * count
        if image not in self.images:
            raise ModelError(
                f"result '{self.result}': '{image}' is not an image input of the pipeline",
                f"its image inputs are: {', '.join(self.images) or 'none'}",
            )
        return list(self.images[image])


def is_decoding(step: Step) -> bool:
    """Whether ``step`` turns each item into JSON values, and so must end its chain."""
    if step.name == "argmax":
        return step.options.axis is None
    return step.name in _DECODING or step.name in _BATCH_DECODING


def apply(array: Array, steps: Sequence[Step], context: StepContext) -> list[Any]:
    """Run a chain over a batch; one decoded value per item (first axis)."""
    values: Array = np.asarray(array)
    for position, step in enumerate(steps):
        numeric = _NUMERIC.get(step.name)
        if step.name == "argmax" and step.options.axis is not None:
            numeric = _argmax_along
        if numeric is not None:
            values = numeric(values, step.options, context)
            continue
        if position != len(steps) - 1:
            raise ModelError(  # also refused at build; kept for images built by hand
                f"result '{context.result}': '{step.name}' must be the last step",
                "move it to the end of steps",
            )
        whole = _BATCH_DECODING.get(step.name)
        if whole is not None:  # vectorised over the batch
            decoded: list[Any] = whole(values, step.options, context)
            return decoded
        decode = _DECODING[step.name]
        return [decode(item, step.options, context) for item in values]
    return [_plain(item) for item in values]


def _softmax(values: Array, options: Any, context: StepContext) -> Array:
    values = values.astype(np.float32, copy=False)
    shifted = values - values.max(axis=options.axis, keepdims=True)
    exp = np.exp(shifted)
    result: Array = exp / exp.sum(axis=options.axis, keepdims=True)
    return result


def _sigmoid(values: Array, options: Any, context: StepContext) -> Array:
    values = values.astype(np.float32, copy=False)
    result: Array = 0.5 * (np.tanh(0.5 * values) + 1.0)  # no overflow for large |x|
    return result


def _l2_normalize(values: Array, options: Any, context: StepContext) -> Array:
    values = values.astype(np.float32, copy=False)
    norms = np.linalg.norm(values, axis=options.axis, keepdims=True)
    result: Array = values / np.maximum(norms, 1e-12)
    return result


def _mean_pool(values: Array, options: Any, context: StepContext) -> Array:
    """[items, tokens, features] -> [items, features], padded tokens left out."""
    values = values.astype(np.float32, copy=False)
    if values.ndim != 3:
        raise ModelError(
            f"result '{context.result}': mean_pool needs [batch, tokens, features], got shape "
            f"{list(values.shape)}",
            "apply mean_pool to a per-token output such as last_hidden_state",
        )
    if options.mask is None:
        result: Array = values.mean(axis=1)
        return result
    mask = np.asarray(context.feed[options.mask], dtype=np.float32)[:, :, None]
    summed = (values * mask).sum(axis=1)
    result = summed / np.maximum(mask.sum(axis=1), 1e-9)
    return result


def _axis(values: Array, axis: int, step: str, context: StepContext) -> int:
    """``axis`` of the batch tensor, checked: 0 is the batch axis, which steps never remove."""
    if not -values.ndim < axis < values.ndim or axis % values.ndim == 0:
        raise ModelError(
            f"result '{context.result}': {step} axis {axis} does not fit the output's "
            f"{values.ndim - 1} item axes (batch tensor shape {list(values.shape)})",
            f"use an axis from 1 to {values.ndim - 1}, or from -{values.ndim - 1} to -1",
        )
    return axis % values.ndim


def _pick(values: Array, options: Any, context: StepContext) -> Array:
    axis = _axis(values, options.axis, "pick", context)
    size = values.shape[axis]
    if not -size <= options.index < size:
        raise ModelError(
            f"result '{context.result}': pick index {options.index} is outside axis "
            f"{options.axis}, which has {size} positions",
            f"use an index from 0 to {size - 1} (or from -{size} to -1)",
        )
    picked: Array = np.take(values, options.index, axis=axis)
    return picked


def _slice(values: Array, options: Any, context: StepContext) -> Array:
    axis = _axis(values, options.axis, "slice", context)
    index: list[Any] = [slice(None)] * values.ndim
    index[axis] = slice(options.start, options.stop, options.step)
    sliced: Array = values[tuple(index)]
    return sliced


def _transpose(values: Array, options: Any, context: StepContext) -> Array:
    if len(options.axes) != values.ndim:
        raise ModelError(
            f"result '{context.result}': transpose lists {len(options.axes)} axes, but the "
            f"output has {values.ndim} (batch tensor shape {list(values.shape)})",
            f"list all {values.ndim}, the batch axis 0 first",
        )
    moved: Array = np.transpose(values, options.axes)
    return moved


def _squeeze(values: Array, options: Any, context: StepContext) -> Array:
    if options.axis is None:
        ones = tuple(a for a in range(1, values.ndim) if values.shape[a] == 1)
        squeezed: Array = np.squeeze(values, axis=ones)
        return squeezed
    axis = _axis(values, options.axis, "squeeze", context)
    if values.shape[axis] != 1:
        raise ModelError(
            f"result '{context.result}': squeeze axis {options.axis} has size "
            f"{values.shape[axis]}, not 1 (batch tensor shape {list(values.shape)})",
            "squeeze an axis of size 1, or use pick to choose one position",
        )
    squeezed = np.squeeze(values, axis=axis)
    return squeezed


def _argmax_along(values: Array, options: Any, context: StepContext) -> Array:
    best: Array = np.argmax(values, axis=_axis(values, options.axis, "argmax", context))
    return best


_NUMERIC = {
    "softmax": _softmax,
    "sigmoid": _sigmoid,
    "l2_normalize": _l2_normalize,
    "mean_pool": _mean_pool,
    "pick": _pick,
    "slice": _slice,
    "transpose": _transpose,
    "squeeze": _squeeze,
}


def _squeezed(item: Array, rank: int, step: str, wanted: str, context: StepContext) -> Array:
    """One item as an array of ``rank`` dimensions: leading axes of size 1 are dropped."""
    values = np.asarray(item)
    while values.ndim > rank and values.shape[0] == 1:
        values = values[0]
    if values.ndim != rank:
        raise ModelError(
            f"result '{context.result}': {step} needs {wanted} per item, got shape "
            f"{list(np.asarray(item).shape)}",
            "apply it to a [batch, classes] output"
            if rank == 1
            else "apply it to a [batch, 1, H, W] probability map",
        )
    return values


def _scores(item: Array, step: str, context: StepContext) -> Array:
    """One item's class scores as a vector."""
    return _squeezed(item, 1, step, "one score per class", context)


def _labels(options: Any, context: StepContext, size: int) -> list[str] | None:
    labels = options.labels if isinstance(options.labels, list) else context.labels
    if labels is not None and len(labels) != size:
        raise ModelError(
            f"result '{context.result}': {len(labels)} labels for {size} classes",
            "give one label per class (labels: in the GPUXfile)",
        )
    return labels


def _argmax(item: Array, options: Any, context: StepContext) -> dict[str, Any]:
    scores = _scores(item, "argmax", context)
    index = int(np.argmax(scores))
    labels = _labels(options, context, scores.size)
    found: dict[str, Any] = {"index": index, "score": float(scores[index])}
    if labels is not None:
        found = {"label": labels[index], **found}
    return found


def _top_k(item: Array, options: Any, context: StepContext) -> list[dict[str, Any]]:
    scores = _scores(item, "top_k", context)
    labels = _labels(options, context, scores.size)
    k = min(options.k, scores.size)
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [
        {
            **({"label": labels[i]} if labels is not None else {}),
            "index": int(i),
            "score": float(scores[i]),
        }
        for i in best
    ]


def _threshold(item: Array, options: Any, context: StepContext) -> Any:
    return (np.asarray(item) >= options.value).tolist()


def _segments(item: Array, options: Segments, context: StepContext) -> list[dict[str, float]]:
    """Frame scores -> active segments: threshold, close short gaps, drop short runs, pad."""
    scores = np.asarray(item, dtype=np.float32).reshape(-1)
    frame = options.frame_ms / 1e3 if options.frame_ms else context.frame_seconds
    if frame is None:
        raise ModelError(
            f"result '{context.result}': segments needs the duration of one frame",
            "set frame_ms under segments, or frame: under the audio input",
        )
    active = np.concatenate([[False], scores >= options.threshold, [False]])
    edges = np.flatnonzero(active[1:] != active[:-1])
    runs = [[int(start), int(end)] for start, end in zip(edges[::2], edges[1::2], strict=True)]
    merged: list[list[int]] = []
    for start, end in runs:
        if merged and (start - merged[-1][1]) * frame * 1e3 < options.min_gap_ms:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    total = scores.size * frame
    pad = options.pad_ms / 1e3
    segments = []
    for start, end in merged:
        if (end - start) * frame * 1e3 < options.min_duration_ms:
            continue
        segments.append(
            {
                "start": round(max(0.0, start * frame - pad), 3),
                "end": round(min(total, end * frame + pad), 3),
            }
        )
    return segments


def _boxes(item: Array, options: Any, context: StepContext) -> list[dict[str, Any]]:
    """Connected regions of a score map, as boxes in the model input's pixels.

    Labelling works on runs of active pixels per row (union-find over runs that touch, 8-way),
    so the Python loop is over runs, not pixels.
    """
    scores = _squeezed(item, 2, "boxes", "a [height, width] map", context).astype(np.float32)
    active = scores >= options.threshold
    padded = np.zeros((active.shape[0], active.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = active
    changes = np.diff(padded, axis=1)
    rows, starts = np.nonzero(changes == 1)
    _, ends = np.nonzero(changes == -1)  # same row order: every start has its end
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    previous: list[int] = []
    current: list[int] = []
    last_row = -2
    for run, row in enumerate(rows.tolist()):
        if row != last_row:
            previous = current if row == last_row + 1 else []
            current = []
            last_row = row
        for other in previous:  # runs touch when they overlap, diagonals included
            if starts[other] <= ends[run] and starts[run] <= ends[other]:
                parent[root(run)] = root(other)
        current.append(run)
    regions: dict[int, list[int]] = {}
    for run in range(len(rows)):
        regions.setdefault(root(run), []).append(run)
    found: list[tuple[list[int], float]] = []
    for runs in regions.values():
        area = int(sum(ends[r] - starts[r] for r in runs))
        if area < options.min_area:
            continue
        total = float(sum(scores[rows[r], starts[r] : ends[r]].sum() for r in runs))
        score = total / area
        if score < options.min_score:
            continue
        x0 = int(min(starts[r] for r in runs))
        x1 = int(max(ends[r] for r in runs))
        y0 = int(min(rows[r] for r in runs))
        y1 = int(max(rows[r] for r in runs)) + 1
        found.append(([x0, y0, x1, y1], round(score, 4)))
    found.sort(key=lambda region: (region[0][1], region[0][0]))  # reading order: top, left
    return [{"box": box, "score": score} for box, score in found]


def _ctc(values: Array, options: Any, context: StepContext) -> list[dict[str, Any]]:
    from gpux.pipeline.ctc import ctc_greedy, full_class_list

    if values.ndim != 3:
        raise ModelError(
            f"result '{context.result}': ctc needs [time, classes] scores per item, got batch "
            f"shape {list(values.shape)}",
            "apply ctc to the recogniser's per-frame output (declare its batch_axis if time "
            "comes first)",
        )
    charset = options.charset
    assert isinstance(charset, list)  # read at build
    classes = full_class_list(charset, values.shape[2], options.blank)
    return ctc_greedy(
        values,
        classes,
        blank=options.blank,
        remove_duplicates=options.merge_repeats,
        softmax=options.softmax,
    )


def _labels_of(options: Any, context: StepContext) -> list[str] | None:
    labels = options.labels if isinstance(options.labels, list) else context.labels
    return list(labels) if labels is not None else None


def _yolo(values: Array, options: Any, context: StepContext) -> list[Any]:
    from gpux.pipeline.detection import decode_yolo

    found = decode_yolo(
        values,
        style=options.style,
        score_threshold=options.score_threshold,
        iou_threshold=options.iou_threshold,
        class_agnostic=options.class_agnostic,
        max_detections=options.max_detections,
    )
    return _detections_json(found, options, context)


def _nms(values: Array, options: Any, context: StepContext) -> list[Any]:
    from gpux.pipeline.detection import decode_boxes_scores

    boxes = np.asarray(values, dtype=np.float32)
    if options.normalized:  # fractions of the model input: scale to its pixels
        transforms = context.transforms(options.image, len(boxes))
        if transforms[0] is None:
            raise ModelError(
                f"result '{context.result}': normalized boxes need the model input's size, "
                "which only an image input gives",
                "add an image input under preprocess, or set normalized: false",
            )
        height, width = transforms[0].target
        boxes = boxes * np.array([width, height, width, height], dtype=np.float32)
    found = decode_boxes_scores(
        boxes,
        context.outputs[options.scores],
        box_format=options.box_format,
        score_threshold=options.score_threshold,
        iou_threshold=options.iou_threshold,
        class_agnostic=options.class_agnostic,
        max_detections=options.max_detections,
    )
    return _detections_json(found, options, context)


def _detections(values: Array, options: Any, context: StepContext) -> list[Any]:
    from gpux.pipeline.detection import decode_nms_output

    found = decode_nms_output(
        values, score_threshold=options.score_threshold, max_detections=options.max_detections
    )
    return _detections_json(found, options, context)


def _detections_json(found: list[Any], options: Any, context: StepContext) -> list[Any]:
    labels = _labels_of(options, context)
    transforms = context.transforms(options.image, len(found))
    return [item.to_json(labels, t) for item, t in zip(found, transforms, strict=True)]


def _db(values: Array, options: Any, context: StepContext) -> list[Any]:
    from gpux.pipeline.text_detection import db_decode

    transforms = context.transforms(options.image, len(values))
    decoded = []
    for item, transform in zip(values, transforms, strict=True):
        regions = db_decode(
            _squeezed(item, 2, "db", "a [height, width] map", context),
            thresh=options.thresh,
            box_thresh=options.box_thresh,
            max_candidates=options.max_candidates,
            unclip_ratio=options.unclip_ratio,
            min_size=options.min_size,
            score_mode=options.score_mode,
            use_dilation=options.use_dilation,
            box_type=options.box_type,
        )
        decoded.append([_region_json(points, score, transform) for points, score in regions])
    return decoded


def _region_json(points: Array, score: float, transform: ImageTransform | None) -> dict[str, Any]:
    """A text region in the original pixels, rounded as PaddleOCR rounds them (to integers)."""
    if transform is not None:
        height, width = transform.source
        points = np.clip(transform.to_source(points), 0, [width, height])
    return {"box": np.round(points).astype(int).tolist(), "score": round(float(score), 4)}


_BATCH_DECODING: dict[str, Any] = {
    "ctc": _ctc,
    "yolo": _yolo,
    "nms": _nms,
    "detections": _detections,
    "db": _db,
}

_DECODING: dict[str, Any] = {
    "boxes": _boxes,
    "argmax": _argmax,
    "top_k": _top_k,
    "threshold": _threshold,
    "segments": _segments,
}


def _plain(item: Array) -> Any:
    return np.asarray(item).tolist()
