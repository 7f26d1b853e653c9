"""DB (Differentiable Binarization) text-detection post-processing, numpy only.

A DB detector (PaddleOCR's PP-OCR det models, DBNet) outputs a probability map ``[N, 1, H, W]``;
its authors turn one item's map into text regions with ``DBPostProcess`` (PaddleOCR
``ppocr/postprocess/db_postprocess.py``, copied into rapidocr). That code needs OpenCV
(``findContours``, ``minAreaRect``, ``fillPoly``), shapely and pyclipper. :func:`db_decode` is the
same procedure in numpy, so a GPUXfile can declare the post-processing without user code:

1. binarise: ``probability > thresh``, optionally dilated by a 2x2 kernel (``use_dilation``);
2. one contour per 8-connected component of the bitmap and, as ``cv2.findContours(RETR_LIST)``
   also returns them, one per hole (a 4-connected background region the component encloses);
   contours are taken in OpenCV's order and cut to ``max_candidates``;
3. quad: the contour's minimum-area rectangle (convex hull + rotating calipers, what
   ``cv2.minAreaRect`` computes); drop it when its short side is under ``min_size``; score it by
   the mean probability inside it (``score_mode="fast"``, rasterised like ``cv2.fillPoly``) or
   inside the contour (``"slow"``); drop it under ``box_thresh``; "unclip" it by
   ``d = area * unclip_ratio / perimeter`` and drop it when the grown short side is under
   ``min_size + 2``;
4. poly: the contour simplified by Douglas-Peucker (epsilon 0.002 * perimeter), scored inside the
   polygon, offset by ``d`` with pyclipper (imported only then) and kept under the same checks.

Labelling works on runs of set pixels per row, linked and merged with array operations, so no
Python loop runs per pixel; quad mode loops over nothing per region either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from gpux.errors import ModelError

Array = np.ndarray[Any, Any]
ScoreMode = Literal["fast", "slow"]
BoxType = Literal["quad", "poly"]

# cv2.fillPoly works in 16.16 fixed point; rows of a polygon's edges are walked in it.
_FIXED_SHIFT = 16
_FIXED_ONE = 1 << _FIXED_SHIFT


def db_decode(
    probability: Array,
    *,
    thresh: float = 0.3,
    box_thresh: float = 0.5,
    max_candidates: int = 1000,
    unclip_ratio: float = 1.6,
    min_size: float = 3,
    score_mode: ScoreMode = "fast",
    use_dilation: bool = False,
    box_type: BoxType = "quad",
) -> list[tuple[Array, float]]:
    """Text regions of one DB probability map, as ``(points, score)`` pairs.

    ``probability`` is one item's ``[H, W]`` map (size-1 axes are squeezed away). ``points`` are
    float64 (x, y) in the map's pixels, clipped to ``[0, W] x [0, H]`` like the authors' code
    (which then scales by ``source / map`` size; do the same with the recorded resize): ``[4, 2]``
    ordered top-left, top-right, bottom-right, bottom-left for ``box_type="quad"``, ``[k, 2]`` for
    ``"poly"``. Regions come in the authors' order (OpenCV's contour order: by the contour's first
    pixel in raster order, last first), not in reading order.

    Parameters keep the authors' names. Defaults are rapidocr-onnxruntime 1.4.4's config.yaml for
    PP-OCRv4 det (thresh 0.3, box_thresh 0.5, max_candidates 1000, unclip_ratio 1.6, score_mode
    fast); PaddleOCR's own inference defaults differ (box_thresh 0.6, unclip_ratio 1.5), and so do
    its class defaults (box_thresh 0.7, unclip_ratio 2.0). ``min_size`` is the 3 both hard-code;
    ``use_dilation`` is their class default, False (rapidocr's config.yaml turns it on).
    ``box_type="poly"`` needs pyclipper installed; quad mode needs numpy only.
    """
    if score_mode not in ("fast", "slow"):
        raise ModelError(
            f"DB post-processing: score_mode must be 'fast' or 'slow', not {score_mode!r}",
            "use 'fast' (mean inside the box) or 'slow' (mean inside the contour)",
        )
    if box_type not in ("quad", "poly"):
        raise ModelError(
            f"DB post-processing: box_type must be 'quad' or 'poly', not {box_type!r}",
            "use 'quad' for rotated rectangles or 'poly' for polygons",
        )
    scores = _probability_map(probability)
    bitmap = _binarise(scores, thresh, use_dilation)
    contours = _contours(bitmap)
    contours = contours.first(max_candidates)
    if contours.count == 0:
        return []
    if box_type == "poly":
        return _polygons(scores, bitmap, contours, box_thresh, unclip_ratio, min_size)
    return _quads(scores, contours, box_thresh, unclip_ratio, min_size, score_mode)


# ------------------------------------------------------------------------------------ bitmap
def _probability_map(probability: Array) -> Array:
    try:
        array = np.asarray(probability, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ModelError(
            "DB post-processing: the probability map is not numeric",
            "feed the detector's output map, [N, 1, H, W] or [H, W]",
        ) from exc
    squeezed = array.squeeze()
    if squeezed.ndim != 2:
        raise ModelError(
            f"DB post-processing: expected one [H, W] probability map, got shape {array.shape}",
            "decode one item at a time; a DB detector's output is [N, 1, H, W]",
        )
    return np.ascontiguousarray(squeezed)


def _binarise(scores: Array, thresh: float, use_dilation: bool) -> Array:
    """``scores > thresh`` in an ``[H, W + 1]`` buffer whose last column stays False.

    The spare column ends every row's last run, so runs are found in one pass over the flat buffer.
    """
    height, width = scores.shape
    buffer = np.zeros((height, width + 1), dtype=bool)
    bitmap = buffer[:, :width]
    np.greater(scores, thresh, out=bitmap)
    if use_dilation:
        # cv2.dilate with a 2x2 kernel anchors it at (1, 1): a pixel is set when it, its left, its
        # upper or its upper-left neighbour is (numpy buffers the overlapping in-place ORs).
        bitmap[:, 1:] |= bitmap[:, :-1]
        bitmap[1:, :] |= bitmap[:-1, :]
    return buffer


# -------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class _Runs:
    """Runs of equal pixels per row in raster order; ``start``/``end`` are flat keys
    ``row * stride + column`` (end exclusive), ``stride = W + 1``."""

    start: Array
    end: Array
    stride: int

    @property
    def row(self) -> Array:
        result: Array = self.start // self.stride
        return result


def _foreground_runs(buffer: Array) -> _Runs:
    stride = buffer.shape[1]
    flat = buffer.ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    if flat.size and flat[0]:
        changes = np.concatenate([[0], changes])
    # Every run ends inside its row (the spare column is False), so changes alternate start, end.
    return _Runs(changes[0::2].astype(np.int64), changes[1::2].astype(np.int64), stride)


def _background_runs(foreground: _Runs, height: int) -> _Runs:
    """The gaps between foreground runs, row by row, spare column excluded."""
    stride = foreground.stride
    width = stride - 1
    row_starts = np.arange(height, dtype=np.int64) * stride
    starts = np.sort(np.concatenate([row_starts, foreground.end]))
    ends = np.sort(np.concatenate([foreground.start, row_starts + width]))
    keep = ends > starts
    return _Runs(starts[keep], ends[keep], stride)


def _touching_pairs(runs: _Runs, diagonal: bool) -> tuple[Array, Array]:
    """Pairs (upper, lower) of runs in consecutive rows that touch: 8-way with ``diagonal``
    (foreground), 4-way without (background, the dual OpenCV's tracing implies)."""
    stride = runs.stride
    row = runs.row
    # The same columns one row up, as flat keys; rows never mix as columns stay below stride.
    first = runs.start - row * stride
    last = runs.end - row * stride  # exclusive
    above = (row - 1) * stride
    if diagonal:  # upper run [s, e) touches [first, last) when e >= first and s <= last
        low = np.searchsorted(runs.end, above + first, side="left")
        high = np.searchsorted(runs.start, above + last, side="right")
    else:  # overlap of columns: e > first and s < last
        low = np.searchsorted(runs.end, above + first, side="right")
        high = np.searchsorted(runs.start, above + last, side="left")
    counts = np.maximum(high - low, 0)
    total = int(counts.sum())
    lower = np.repeat(np.arange(row.size, dtype=np.int64), counts)
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    upper = np.repeat(low, counts) + offsets
    return upper, lower


def _merge(count: int, upper: Array, lower: Array) -> Array:
    """Connected components of a graph: each node's root, the smallest node of its component.

    Hook the larger root under the smaller one, then flatten by pointer jumping, until no edge
    joins two roots (a handful of rounds, each an array operation over the edges)."""
    parent = np.arange(count, dtype=np.int64)
    while upper.size:
        root_upper = parent[upper]
        root_lower = parent[lower]
        apart = root_upper != root_lower
        if not apart.any():
            break
        upper, lower = upper[apart], lower[apart]
        root_upper, root_lower = root_upper[apart], root_lower[apart]
        np.minimum.at(
            parent, np.maximum(root_upper, root_lower), np.minimum(root_upper, root_lower)
        )
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent


# ---------------------------------------------------------------------------------- contours
@dataclass(frozen=True)
class _Contours:
    """The contours ``cv2.findContours(RETR_LIST)`` would return, in its order.

    Each is described by the pixel spans it covers per row: for an outer contour the component's
    own runs, for a hole the foreground pixels 4-adjacent to it (what the tracer walks), so both
    share the convex hull and the minimum-area rectangle of the traced contour.
    ``span_*`` are sorted by contour then row, one entry per (contour, row); ``filled_*`` are the
    flat pixel ranges ``fillPoly`` of the contour covers (the component with its holes, or the hole
    with its border), for ``score_mode="slow"``.
    """

    count: int
    is_hole: Array  # [count]
    span_contour: Array
    span_row: Array
    span_left: Array  # inclusive columns
    span_right: Array
    filled_contour: Array
    filled_start: Array  # flat keys of the [H, W + 1] buffer, end exclusive
    filled_end: Array
    stride: int
    # Where OpenCV starts tracing each contour, as a flat key (poly mode traces it from there).
    first_pixel: Array

    def first(self, limit: int) -> _Contours:
        if self.count <= limit:
            return self
        keep_spans = self.span_contour < limit
        keep_filled = self.filled_contour < limit
        return _Contours(
            count=max(limit, 0),
            is_hole=self.is_hole[:limit],
            span_contour=self.span_contour[keep_spans],
            span_row=self.span_row[keep_spans],
            span_left=self.span_left[keep_spans],
            span_right=self.span_right[keep_spans],
            filled_contour=self.filled_contour[keep_filled],
            filled_start=self.filled_start[keep_filled],
            filled_end=self.filled_end[keep_filled],
            stride=self.stride,
            first_pixel=self.first_pixel[:limit],
        )


def _contours(buffer: Array) -> _Contours:
    height = buffer.shape[0]
    foreground = _foreground_runs(buffer)
    stride = foreground.stride
    if foreground.start.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Contours(
            0, empty.astype(bool), empty, empty, empty, empty, empty, empty, empty, stride, empty
        )
    touching = _touching_pairs(foreground, diagonal=True)
    component = _merge(foreground.start.size, *touching)
    component_roots = np.flatnonzero(component == np.arange(component.size))

    # Euler's formula on the run graph: each independent cycle of touching runs encloses one hole.
    # Maps without holes (the usual case) skip labelling the background.
    hole_count = touching[0].size - foreground.start.size + component_roots.size
    if hole_count > 0:
        background = _background_runs(foreground, height)
        region = _merge(background.start.size, *_touching_pairs(background, diagonal=False))
    else:
        empty = np.zeros(0, dtype=np.int64)
        background, region = _Runs(empty, empty, stride), empty
    bg_row = background.row
    bg_first = background.start - bg_row * stride
    bg_last = background.end - bg_row * stride
    outside = (bg_first == 0) | (bg_last == stride - 1) | (bg_row == 0) | (bg_row == height - 1)
    in_hole = ~np.isin(region, region[outside])
    hole_roots = np.flatnonzero(in_hole & (region == np.arange(region.size)))

    # OpenCV starts tracing an outer contour at the component's first pixel and a hole at the
    # pixel left of the hole's first pixel; it returns the last found first.
    outer_first = foreground.start[component_roots]
    hole_first = background.start[hole_roots] - 1
    first_pixel = np.concatenate([outer_first, hole_first])
    order = np.argsort(-first_pixel, kind="stable")
    is_hole = np.concatenate(
        [np.zeros(component_roots.size, dtype=bool), np.ones(hole_roots.size, dtype=bool)]
    )[order]
    contour_of_kind = np.empty(order.size, dtype=np.int64)
    contour_of_kind[order] = np.arange(order.size)
    outer_contour = np.full(foreground.start.size, -1, dtype=np.int64)
    outer_contour[component_roots] = contour_of_kind[: component_roots.size]
    hole_contour = np.full(background.start.size, -1, dtype=np.int64)
    hole_contour[hole_roots] = contour_of_kind[component_roots.size :]

    # Spans: each foreground run for its component; each hole run widened by one pixel in its
    # own row and repeated one row up and down (the 4-adjacent border the tracer follows).
    fg_row = foreground.row
    fg_contour = outer_contour[component]
    hole_runs = np.flatnonzero(in_hole)
    h_contour = hole_contour[region[hole_runs]]
    h_row = bg_row[hole_runs]
    h_first = bg_first[hole_runs]
    h_last = bg_last[hole_runs] - 1
    span_contour = np.concatenate([fg_contour, h_contour, h_contour, h_contour])
    span_row = np.concatenate([fg_row, h_row, h_row - 1, h_row + 1])
    span_left = np.concatenate([foreground.start - fg_row * stride, h_first - 1, h_first, h_first])
    span_right = np.concatenate([foreground.end - fg_row * stride - 1, h_last + 1, h_last, h_last])
    group_key = span_contour * (height + 2) + (span_row + 1)
    by_group = np.argsort(group_key, kind="stable")
    group_key = group_key[by_group]
    group_start = np.flatnonzero(np.r_[True, group_key[1:] != group_key[:-1]])
    left = np.minimum.reduceat(span_left[by_group], group_start)
    right = np.maximum.reduceat(span_right[by_group], group_start)
    grouped_contour = span_contour[by_group][group_start]
    grouped_row = span_row[by_group][group_start]

    # Filled pixels for the slow score: a component's runs plus the runs of the holes it
    # encloses (the hole's left neighbour belongs to it); a hole's per-row border span.
    hole_owner_run = np.searchsorted(foreground.end, background.start[hole_runs])
    hole_owner = fg_contour[hole_owner_run]
    filled_contour = np.concatenate(
        [fg_contour, hole_owner, grouped_contour[is_hole[grouped_contour]]]
    )
    hole_span_rows = grouped_row[is_hole[grouped_contour]] * stride
    filled_start = np.concatenate(
        [
            foreground.start,
            background.start[hole_runs],
            hole_span_rows + left[is_hole[grouped_contour]],
        ]
    )
    filled_end = np.concatenate(
        [
            foreground.end,
            background.end[hole_runs],
            hole_span_rows + right[is_hole[grouped_contour]] + 1,
        ]
    )
    return _Contours(
        count=order.size,
        is_hole=is_hole,
        span_contour=grouped_contour,
        span_row=grouped_row,
        span_left=left,
        span_right=right,
        filled_contour=filled_contour,
        filled_start=filled_start,
        filled_end=filled_end,
        stride=stride,
        first_pixel=first_pixel[order],
    )


# ------------------------------------------------------------------------------ convex hulls
def _chain_envelope(chain: Array, x: Array, y: Array, side: int) -> Array:
    """Indices of the points that stay on one side's convex envelope of each chain.

    Points are sorted by chain, then strictly increasing ``y``. For the left side (``side=1``) a
    point stays when it lies strictly left of the segment joining its neighbours (the right side,
    ``side=-1``, mirrors it). Removing every other point at once never removes a hull vertex, so
    repeating until nothing changes leaves exactly the envelope; blobs need a few rounds.
    """
    alive = np.arange(chain.size, dtype=np.int64)
    while alive.size >= 3:
        owner = chain[alive]
        inner = np.flatnonzero((owner[1:-1] == owner[:-2]) & (owner[1:-1] == owner[2:])) + 1
        if not inner.size:
            break
        before, point, after = alive[inner - 1], alive[inner], alive[inner + 1]
        cross = (x[point] - x[before]) * (y[after] - y[before]) - (x[after] - x[before]) * (
            y[point] - y[before]
        )
        drop = side * cross >= 0
        if not drop.any():
            break
        alive = np.delete(alive, inner[drop])
    return alive


def _convex_hulls(contours: _Contours) -> tuple[Array, Array, Array]:
    """Each contour's convex hull as a closed polygon: (contour, x, y), grouped by contour.

    The hull of a set of row spans is its left chain's convex envelope (top to bottom) followed by
    its right chain's (bottom to top): monotone chain with the sort already done."""
    chain = contours.span_contour
    row = contours.span_row
    left = _chain_envelope(chain, contours.span_left, row, side=1)
    right = _chain_envelope(chain, contours.span_right, row, side=-1)
    contour = np.concatenate([chain[left], chain[right]])
    x = np.concatenate([contours.span_left[left], contours.span_right[right]])
    y = np.concatenate([row[left], row[right]])
    along = np.concatenate([row[left], -row[right]])  # down the left, back up the right
    side = np.concatenate([np.zeros(left.size, np.int64), np.ones(right.size, np.int64)])
    order = np.lexsort((along, side, contour))
    return contour[order], x[order].astype(np.float64), y[order].astype(np.float64)


# ------------------------------------------------------------------------ minimum rectangles
@dataclass(frozen=True)
class _Rectangles:
    """Rotated rectangles: centre, unit axis ``along`` (``across`` is it turned 90 degrees) and
    the side lengths on those axes."""

    centre: Array  # [K, 2]
    along: Array  # [K, 2]
    length: Array  # [K]
    width: Array  # [K]

    @property
    def short_side(self) -> Array:
        result: Array = np.minimum(self.length, self.width)
        return result

    def corners(self, grow: Array | float = 0.0) -> Array:
        """[K, 4, 2] corners, each side pushed out by ``grow``."""
        across = np.stack([-self.along[:, 1], self.along[:, 0]], axis=1)
        half_length = (self.length / 2 + grow)[:, None]
        half_width = (self.width / 2 + grow)[:, None]
        signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
        result: Array = (
            self.centre[:, None, :]
            + signs[None, :, 0, None] * (half_length * self.along)[:, None, :]
            + signs[None, :, 1, None] * (half_width * across)[:, None, :]
        )
        return result


def _min_area_rectangles(hull_contour: Array, x: Array, y: Array, count: int) -> _Rectangles:
    """``cv2.minAreaRect`` of each hull: the best rectangle has a side on a hull edge, so every
    edge direction is tried against every vertex of its hull (hulls of pixel blobs are small).

    Lattice hulls often have two different rectangles of the same area. OpenCV's rotating calipers
    compare float32 areas and keep the last minimum while turning from the x axis through 90
    degrees; both are reproduced, so the same rectangle wins."""
    sizes = np.bincount(hull_contour, minlength=count)
    offsets = np.cumsum(sizes) - sizes
    position = np.arange(hull_contour.size, dtype=np.int64) - offsets[hull_contour]
    following = offsets[hull_contour] + (position + 1) % sizes[hull_contour]
    edge_x = x[following] - x
    edge_y = y[following] - y
    edge_length = np.hypot(edge_x, edge_y)
    usable = edge_length > 0
    safe_length = np.where(usable, edge_length, 1.0)
    unit_x, unit_y = edge_x / safe_length, edge_y / safe_length

    # Every (edge, vertex of the same hull) pair, edges in blocks.
    block = sizes[hull_contour]
    pair_edge = np.repeat(np.arange(hull_contour.size, dtype=np.int64), block)
    block_start = np.cumsum(block) - block
    pair_vertex = np.repeat(offsets[hull_contour], block) + (
        np.arange(pair_edge.size, dtype=np.int64) - np.repeat(block_start, block)
    )
    ux, uy = unit_x[pair_edge], unit_y[pair_edge]
    vx, vy = x[pair_vertex], y[pair_vertex]
    on_edge = vx * ux + vy * uy
    across_edge = vy * ux - vx * uy
    along_min = np.minimum.reduceat(on_edge, block_start)
    along_max = np.maximum.reduceat(on_edge, block_start)
    across_min = np.minimum.reduceat(across_edge, block_start)
    across_max = np.maximum.reduceat(across_edge, block_start)

    # OpenCV's float32 area: unit edge = vector * float(1 / sqrt(double)), extents as dot
    # products of the difference of the supporting vertices, each product and sum rounded.
    lead_x, lead_y = _cv_unit(edge_x, edge_y)
    along_span = _support_difference(on_edge, along_min, along_max, pair_edge, pair_vertex, x, y)
    across_span = _support_difference(
        across_edge, across_min, across_max, pair_edge, pair_vertex, x, y
    )
    along32 = (along_span[0] * lead_x) + (along_span[1] * lead_y)
    across32 = (across_span[0] * lead_y) - (across_span[1] * lead_x)
    area32 = np.abs(along32) * np.abs(across32)
    area = np.where(usable, area32.astype(np.float64), np.inf)
    # The calipers meet edges in order of their angle modulo 90 degrees and keep the last of equal
    # areas. An axis-parallel edge comes first (0 degrees), except the one that closes OpenCV's
    # hull, which begins at its rightmost (then lowest) point: its caliper starts at that edge's
    # far end and meets it after turning the full 90 degrees.
    turn = np.mod(np.arctan2(unit_y, unit_x), np.pi / 2)
    turn = np.where(turn >= np.pi / 2 - 1e-12, 0.0, turn)
    corner_key = x * 1e6 + y
    hull_start = np.maximum.reduceat(corner_key, offsets)
    closing = usable & (corner_key == hull_start[hull_contour]) & ((edge_x == 0) | (edge_y == 0))
    turn = np.where(closing, np.pi / 2, turn)

    best_area = np.minimum.reduceat(area, offsets)
    is_best = np.flatnonzero(area <= best_area[hull_contour])
    ranked = np.lexsort((-turn[is_best], hull_contour[is_best]))
    best_owner = hull_contour[is_best][ranked]
    chosen = is_best[ranked][np.r_[True, best_owner[1:] != best_owner[:-1]]]
    # Degenerate hulls (a point, or points on one line) have no edge or only zero-area ones;
    # their short side is 0 either way, so any rectangle through the points will do.
    degenerate = ~np.isfinite(best_area)
    ux = np.where(degenerate, 1.0, unit_x[chosen])
    uy = np.where(degenerate, 0.0, unit_y[chosen])
    a_min, a_max = along_min[chosen], along_max[chosen]
    c_min, c_max = across_min[chosen], across_max[chosen]
    mid_along = (a_min + a_max) / 2
    mid_across = (c_min + c_max) / 2
    centre = np.stack([mid_along * ux - mid_across * uy, mid_along * uy + mid_across * ux], axis=1)
    length = np.where(degenerate, 0.0, a_max - a_min)
    width = np.where(degenerate, 0.0, c_max - c_min)
    return _Rectangles(centre, np.stack([ux, uy], axis=1), length, width)


def _cv_unit(edge_x: Array, edge_y: Array) -> tuple[Array, Array]:
    """An edge's unit vector as OpenCV's calipers compute it, in float32."""
    squared = edge_x * edge_x + edge_y * edge_y
    with np.errstate(divide="ignore"):
        inverse = (1.0 / np.sqrt(squared)).astype(np.float32)
    inverse = np.where(squared > 0, inverse, np.float32(0))
    lead_x: Array = edge_x.astype(np.float32) * inverse
    lead_y: Array = edge_y.astype(np.float32) * inverse
    return lead_x, lead_y


def _support_difference(
    projection: Array,
    lowest: Array,
    highest: Array,
    pair_edge: Array,
    pair_vertex: Array,
    x: Array,
    y: Array,
) -> tuple[Array, Array]:
    """Per edge, the float32 vector from a vertex of least projection to one of most."""
    edges = lowest.size
    top = np.zeros(edges, dtype=np.int64)
    bottom = np.zeros(edges, dtype=np.int64)
    at_top = projection == highest[pair_edge]
    at_bottom = projection == lowest[pair_edge]
    top[pair_edge[at_top]] = pair_vertex[at_top]
    bottom[pair_edge[at_bottom]] = pair_vertex[at_bottom]
    return (
        (x[top] - x[bottom]).astype(np.float32),
        (y[top] - y[bottom]).astype(np.float32),
    )


def _order_like_get_mini_boxes(corners: Array) -> Array:
    """PaddleOCR's ``get_mini_boxes`` order: of the two leftmost corners the upper is
    top-left and the lower bottom-left, of the two rightmost the upper is top-right."""
    by_x = np.argsort(corners[:, :, 0], axis=1, kind="stable")
    ordered = np.take_along_axis(corners, by_x[:, :, None], axis=1)
    first, second, third, fourth = (ordered[:, i] for i in range(4))
    second_lower = (second[:, 1] > first[:, 1])[:, None]
    fourth_lower = (fourth[:, 1] > third[:, 1])[:, None]
    top_left = np.where(second_lower, first, second)
    bottom_left = np.where(second_lower, second, first)
    top_right = np.where(fourth_lower, third, fourth)
    bottom_right = np.where(fourth_lower, fourth, third)
    result: Array = np.stack([top_left, top_right, bottom_right, bottom_left], axis=1)
    return result


# ---------------------------------------------------------------------------------- scoring
def _scan_columns(x0: Array, y0: Array, x1: Array, y1: Array, row: Array) -> tuple[Array, ...]:
    """Where ``cv2.fillPoly``'s scan fill meets the integer edge (x0, y0)-(x1, y1) on ``row``
    (broadcast): ``(crosses, as_left_end, as_right_end)``. An edge covers rows [top, bottom); its x
    is walked in 16.16 fixed point from the top with a truncated step; a span takes the columns
    inside it (ceil on the left, floor on the right): the edges' lines cover the boundary."""
    downward = y1 > y0
    top_x = np.where(downward, x0, x1)
    top_y = np.minimum(y0, y1)
    rise = np.abs(y1 - y0)
    crosses = (rise > 0) & (row >= top_y) & (row < top_y + rise)
    numerator = (np.where(downward, x1, x0) - top_x) << _FIXED_SHIFT
    step = np.sign(numerator) * (np.abs(numerator) // np.maximum(rise, 1))  # C truncation
    fixed_x = (top_x << _FIXED_SHIFT) + step * (row - top_y)
    as_left_end = (fixed_x + _FIXED_ONE - 1) >> _FIXED_SHIFT
    as_right_end = fixed_x >> _FIXED_SHIFT
    return crosses, as_left_end, as_right_end


def _clip_lines(
    x0: Array, y0: Array, x1: Array, y1: Array, width: Array, height: Array
) -> tuple[Array, ...]:
    """``cv2.clipLine`` of integer segments to [0, width) x [0, height), elementwise: OpenCV
    draws a line that leaves the image from the clipped end points, which moves its pixels.
    Returns the new end points and whether anything is left to draw."""
    x0, y0, x1, y1 = (np.array(a, dtype=np.int64, copy=True) for a in (x0, y0, x1, y1))
    right, bottom = width - 1, height - 1

    def code(x: Array, y: Array) -> Array:
        result: Array = (x < 0).astype(np.int64) + (x > right) * 2 + (y < 0) * 4 + (y > bottom) * 8
        return result

    def moved(base: Array, numerator: Array, along: Array, across: Array) -> Array:
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.trunc(
                numerator.astype(np.float64) * along / np.where(across == 0, 1, across)
            )
        result: Array = base + shift.astype(np.int64)
        return result

    c0, c1 = code(x0, y0), code(x1, y1)
    partly = ((c0 & c1) == 0) & ((c0 | c1) != 0)
    fix = partly & ((c0 & 12) != 0)
    edge_y = np.where(c0 < 8, 0, bottom)
    x0 = np.where(fix, moved(x0, edge_y - y0, x1 - x0, y1 - y0), x0)
    y0 = np.where(fix, edge_y, y0)
    c0 = np.where(fix, (x0 < 0) + (x0 > right) * 2, c0)
    fix = partly & ((c1 & 12) != 0)
    edge_y = np.where(c1 < 8, 0, bottom)
    x1 = np.where(fix, moved(x1, edge_y - y1, x1 - x0, y1 - y0), x1)
    y1 = np.where(fix, edge_y, y1)
    c1 = np.where(fix, (x1 < 0) + (x1 > right) * 2, c1)
    partly &= ((c0 & c1) == 0) & ((c0 | c1) != 0)
    fix = partly & (c0 != 0)
    edge_x = np.where(c0 == 1, 0, right)
    y0 = np.where(fix, moved(y0, edge_x - x0, y1 - y0, x1 - x0), y0)
    x0 = np.where(fix, edge_x, x0)
    c0 = np.where(fix, 0, c0)
    fix = partly & (c1 != 0)
    edge_x = np.where(c1 == 1, 0, right)
    y1 = np.where(fix, moved(y1, edge_x - x1, y1 - y0, x1 - x0), y1)
    x1 = np.where(fix, edge_x, x1)
    c1 = np.where(fix, 0, c1)
    return x0, y0, x1, y1, (c0 | c1) == 0


def _line_columns(
    x0: Array, y0: Array, x1: Array, y1: Array, visible: Array, row: Array
) -> tuple[Array, ...]:
    """The first and last column of the 8-connected line (x0, y0)-(x1, y1) on ``row``
    (broadcast), drawn left to right as cv2.LineIterator does: the major axis steps every pixel,
    the minor one when the error goes negative, i.e. by ceil(j * minor / major - 1/2) at step j.
    Returns ``(drawn, first, last)``."""
    swap = x1 < x0
    start_x = np.where(swap, x1, x0)
    start_y = np.where(swap, y1, y0)
    across = np.abs(x1 - x0)
    down = np.abs(y1 - y0)
    offset = np.where(np.where(swap, y0, y1) < start_y, start_y - row, row - start_y)
    on_line = visible & (offset >= 0) & (offset <= down)
    twice_down = np.maximum(2 * down, 1)
    steep_x = start_x + (2 * offset * across + down - 1) // twice_down
    shallow_first = np.where(down > 0, (across * (2 * offset - 1)) // twice_down + 1, 0)
    shallow_last = np.where(down > 0, (across * (2 * offset + 1)) // twice_down, across)
    steep = down > across
    first = np.where(steep, steep_x, start_x + np.maximum(shallow_first, 0))
    last = np.where(steep, steep_x, start_x + np.minimum(shallow_last, across))
    return on_line & (first <= last), first, last


def _windows(points: Array, height: int, width: int) -> tuple[Array, Array, Array]:
    """The authors' scoring window for polygons [K, n, 2]: floor/ceil of their extent clipped to
    the map, as (x0, y0) [K, 2], size (w, h) [K, 2], and the vertices made window-relative
    integers the way ``astype(np.int32)`` does (truncation toward zero)."""
    low = np.floor(points.min(axis=1)).astype(np.int64)
    high = np.ceil(points.max(axis=1)).astype(np.int64)
    limit = np.array([width - 1, height - 1], dtype=np.int64)
    low = np.clip(low, 0, limit)
    high = np.clip(high, 0, limit)
    vertices = np.trunc(points - low[:, None, :]).astype(np.int64)
    return low, high - low + 1, vertices


def _quad_means(scores: Array, quads: Array) -> Array:
    """PaddleOCR's ``box_score_fast`` for quads [K, 4, 2]: the mean of the map over the pixels
    ``cv2.fillPoly`` sets for the truncated quad in its window, every quad at once.

    A convex quad's pixels on a row are one span, from the leftmost to the rightmost column that
    the scan fill or an edge's line reaches; each edge is evaluated on its own rows only."""
    height, width = scores.shape
    count = quads.shape[0]
    origin, size, vertices = _windows(quads, height, width)
    after = np.roll(vertices, -1, axis=1)
    x0, y0 = vertices[..., 0].ravel(), vertices[..., 1].ravel()
    x1, y1 = after[..., 0].ravel(), after[..., 1].ravel()
    edge_owner = np.repeat(np.arange(count, dtype=np.int64), vertices.shape[1])
    window_width, window_height = size[edge_owner, 0], size[edge_owner, 1]
    line_x0, line_y0, line_x1, line_y1, visible = _clip_lines(
        x0, y0, x1, y1, window_width, window_height
    )

    low = np.maximum(np.minimum(y0, y1), 0)
    high = np.minimum(np.maximum(y0, y1), window_height - 1)
    rows_per_edge = np.maximum(high - low + 1, 0)
    edge = np.repeat(np.arange(edge_owner.size, dtype=np.int64), rows_per_edge)
    row = (
        low[edge]
        + np.arange(edge.size, dtype=np.int64)
        - np.repeat(np.cumsum(rows_per_edge) - rows_per_edge, rows_per_edge)
    )
    crosses, as_left, as_right = _scan_columns(x0[edge], y0[edge], x1[edge], y1[edge], row)
    drawn, line_first, line_last = _line_columns(
        line_x0[edge], line_y0[edge], line_x1[edge], line_y1[edge], visible[edge], row
    )
    never, ever = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    entry_first = np.minimum(np.where(crosses, as_left, never), np.where(drawn, line_first, never))
    entry_last = np.maximum(np.where(crosses, as_right, ever), np.where(drawn, line_last, ever))

    rows_per_quad = size[:, 1]
    row_offset = np.cumsum(rows_per_quad) - rows_per_quad
    owner = edge_owner[edge]
    slot = row_offset[owner] + row
    first = np.full(int(rows_per_quad.sum()), never, dtype=np.int64)
    last = np.full(first.size, ever, dtype=np.int64)
    np.minimum.at(first, slot, entry_first)
    np.maximum.at(last, slot, entry_last)
    slot_owner = np.repeat(np.arange(count, dtype=np.int64), rows_per_quad)
    slot_row = np.arange(first.size, dtype=np.int64) - row_offset[slot_owner]
    first = np.maximum(first, 0)
    last = np.minimum(last, size[slot_owner, 0] - 1)
    spans = first <= last
    base = (origin[slot_owner, 1] + slot_row) * width + origin[slot_owner, 0]
    return _span_means(
        scores, (base + first)[spans], (base + last + 1)[spans], slot_owner[spans], count
    )


def _polygon_mean(scores: Array, polygon: Array) -> float:
    """``box_score_fast`` for one polygon [n, 2] of any shape: the scan fill pairs the edges
    crossing a row in x order (even-odd rule), and every edge's line is drawn too."""
    height, width = scores.shape
    origin, size, vertices = _windows(polygon[None], height, width)
    (left, top), (window_width, window_height) = origin[0], size[0]
    here = vertices[0]
    after = np.roll(here, -1, axis=0)
    x0, y0, x1, y1 = here[:, 0], here[:, 1], after[:, 0], after[:, 1]
    row = np.arange(window_height, dtype=np.int64)[:, None]
    crosses, as_left, as_right = _scan_columns(x0, y0, x1, y1, row)
    line_x0, line_y0, line_x1, line_y1, visible = _clip_lines(
        x0, y0, x1, y1, window_width, window_height
    )
    drawn, line_first, line_last = _line_columns(line_x0, line_y0, line_x1, line_y1, visible, row)
    never = np.iinfo(np.int64).max
    by_x = np.argsort(np.where(crosses, as_left, never), axis=1, kind="stable")
    crossing_count = crosses.sum(axis=1)
    as_left = np.take_along_axis(as_left, by_x, axis=1)
    as_right = np.take_along_axis(as_right, by_x, axis=1)
    position = np.arange(by_x.shape[1])[None, :]
    pair_first = as_left[:, 0::2]
    pair_last = as_right[:, 1::2]
    pairs = pair_last.shape[1]
    pair_used = position[:, 1::2][:, :pairs] < crossing_count[:, None]
    first = np.concatenate([pair_first[:, :pairs], line_first], axis=1)
    last = np.concatenate([pair_last, line_last], axis=1)
    use = np.concatenate([pair_used, drawn], axis=1)
    first = np.clip(first, 0, window_width)
    last = np.clip(last, -1, window_width - 1)
    use &= first <= last
    rows = np.broadcast_to(row, use.shape)
    marks = np.zeros((window_height, window_width + 1), dtype=np.int64)
    np.add.at(marks, (rows[use], first[use]), 1)
    np.add.at(marks, (rows[use], last[use] + 1), -1)
    mask = np.cumsum(marks, axis=1)[:, :window_width] > 0
    area = int(mask.sum())
    if area == 0:
        return 0.0
    window = scores[top : top + window_height, left : left + window_width]
    return float(window[mask].sum(dtype=np.float64) / area)


def _span_means(scores: Array, start: Array, end: Array, group: Array, count: int) -> Array:
    """Mean of ``scores`` over flat ranges [start, end) of the [H, W] map, per group.

    Ranges lie within one row, so float32 partial sums lose nothing that matters; groups add them
    in float64 as cv2.mean does."""
    totals = np.zeros(count, dtype=np.float64)
    pixels = np.bincount(group, weights=end - start, minlength=count)
    flat = scores.ravel()
    at_end = end >= flat.size
    if at_end.any():  # reduceat cannot index one past the end; these few reach the last pixel
        for index in np.flatnonzero(at_end).tolist():
            totals[group[index]] += float(flat[start[index] :].sum(dtype=np.float64))
        start, end, group = start[~at_end], end[~at_end], group[~at_end]
    if start.size:
        order = np.argsort(start, kind="stable")
        bounds = np.stack([start[order], end[order]], axis=1).ravel()
        # reduceat sums flat[bounds[i]:bounds[i + 1]]: the even slots are the ranges, the odd
        # ones the gaps between them (summed, dropped: at most one pass over the map).
        sums = np.add.reduceat(flat, bounds)[0::2]
        totals += np.bincount(group[order], weights=sums, minlength=count)
    means: Array = totals / np.maximum(pixels, 1)
    return means


def _filled_means(scores: Array, contours: _Contours) -> Array:
    """PaddleOCR's ``box_score_slow``: the mean over the pixels ``fillPoly`` of the contour sets,
    which are the component with the holes it encloses (or a hole with its border)."""
    stride = contours.stride
    row = contours.filled_start // stride
    return _span_means(
        scores,
        contours.filled_start - row,
        contours.filled_end - row,
        contours.filled_contour,
        contours.count,
    )


def _quads(
    scores: Array,
    contours: _Contours,
    box_thresh: float,
    unclip_ratio: float,
    min_size: float,
    score_mode: ScoreMode,
) -> list[tuple[Array, float]]:
    """PaddleOCR's ``boxes_from_bitmap`` for every contour at once.

    The unclip is exact here, where the authors' pyclipper works on whole pixels (it truncates
    the rectangle's corners and rounds the offset polygon): their boxes sit up to about a pixel
    from ours, mostly up and left, and they round the result again."""
    hull_contour, hull_x, hull_y = _convex_hulls(contours)
    rectangles = _min_area_rectangles(hull_contour, hull_x, hull_y, contours.count)
    candidates = np.flatnonzero(rectangles.short_side >= min_size)
    if score_mode == "fast":
        boxes = _order_like_get_mini_boxes(rectangles.corners()[candidates])
        box_scores = _quad_means(scores, boxes)
    else:
        box_scores = _filled_means(scores, contours)[candidates]
    passed = box_scores >= box_thresh
    kept, box_scores = candidates[passed], box_scores[passed]

    # pyclipper's round-joined offset of a rectangle by d is the rectangle grown by d on every
    # side with its corners rounded off; its minimum-area rectangle is the grown rectangle.
    length, width = rectangles.length[kept], rectangles.width[kept]
    distance = length * width * unclip_ratio / np.maximum(2 * (length + width), 1e-12)
    grown = rectangles.short_side[kept] + 2 * distance >= min_size + 2
    kept, box_scores, distance = kept[grown], box_scores[grown], distance[grown]
    rectangles = _Rectangles(
        rectangles.centre[kept], rectangles.along[kept], rectangles.length[kept], width[grown]
    )
    boxes = _order_like_get_mini_boxes(rectangles.corners(distance))
    height, map_width = scores.shape
    boxes[..., 0] = np.clip(boxes[..., 0], 0, map_width)
    boxes[..., 1] = np.clip(boxes[..., 1], 0, height)
    return [(box, float(score)) for box, score in zip(boxes, box_scores, strict=True)]


def _polygons(
    scores: Array,
    bitmap: Array,
    contours: _Contours,
    box_thresh: float,
    unclip_ratio: float,
    min_size: float,
) -> list[tuple[Array, float]]:
    """PaddleOCR's ``polygons_from_bitmap``. The polygon offset needs pyclipper (the authors'
    library for it), imported here so quad mode stays numpy only."""
    try:
        import pyclipper  # type: ignore[import-untyped, unused-ignore]
    except ImportError as exc:
        raise ModelError(
            "DB post-processing: box_type 'poly' needs pyclipper to grow the polygons",
            "pip install pyclipper, or use box_type 'quad'",
        ) from exc
    height, width = scores.shape
    stride = contours.stride
    padded = np.zeros((height + 2, width + 2), dtype=bool)
    padded[1:-1, 1:-1] = bitmap[:, :width]
    # Each contour's box (its pixels, or a hole's border) to trace it in a small crop.
    first_span = np.searchsorted(contours.span_contour, np.arange(contours.count))
    last_span = np.r_[first_span[1:], contours.span_contour.size] - 1
    top, bottom = contours.span_row[first_span], contours.span_row[last_span]
    left = np.minimum.reduceat(contours.span_left, first_span)
    right = np.maximum.reduceat(contours.span_right, first_span)
    results: list[tuple[Array, float]] = []
    for index in range(contours.count):
        first = int(contours.first_pixel[index])
        row0, column0 = int(top[index]), int(left[index])
        crop = padded[row0 : int(bottom[index]) + 3, column0 : int(right[index]) + 3]
        contour = _trace(
            crop,
            first // stride - row0,
            first % stride - column0,
            bool(contours.is_hole[index]),
        )
        contour = _simple_chain(contour + np.array([column0, row0]))
        points = _approximate_polygon(contour, 0.002 * _perimeter(contour))
        if points.shape[0] < 4:
            continue
        score = _polygon_mean(scores, points.astype(np.float64))
        if box_thresh > score:
            continue
        area = abs(_signed_area(points))
        length = _perimeter(points)
        if length == 0:
            continue
        offset = pyclipper.PyclipperOffset()
        offset.AddPath(points.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
        grown = offset.Execute(area * unclip_ratio / length)
        if len(grown) != 1:  # split in several (or vanished): the authors drop it
            continue
        polygon = np.asarray(grown[0], dtype=np.float64).reshape(-1, 2)
        if _short_side(polygon) < min_size + 2:
            continue
        polygon[:, 0] = np.clip(polygon[:, 0], 0, width)
        polygon[:, 1] = np.clip(polygon[:, 1], 0, height)
        results.append((polygon, score))
    return results


# Neighbours clockwise on screen (y down), starting east, as (row, column) steps.
_STEPS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))


def _search_tables() -> tuple[bytes, bytes]:
    """For each 8-bit set of neighbours and each direction: the first set neighbour going
    counter-clockwise from just past that direction (the tracer's step), and going clockwise from
    that direction itself (its first step); 8 when there is none."""
    counter_clockwise = bytearray(256 * 8)
    clockwise = bytearray(256 * 8)
    for code in range(256):
        for direction in range(8):
            counter_clockwise[code * 8 + direction] = next(
                (
                    (direction - turn) % 8
                    for turn in range(1, 9)
                    if code >> ((direction - turn) % 8) & 1
                ),
                8,
            )
            clockwise[code * 8 + direction] = next(
                (
                    (direction + turn) % 8
                    for turn in range(8)
                    if code >> ((direction + turn) % 8) & 1
                ),
                8,
            )
    return bytes(counter_clockwise), bytes(clockwise)


_COUNTER_CLOCKWISE, _CLOCKWISE = _search_tables()


def _trace(crop: Array, row: int, column: int, is_hole: bool) -> Array:
    """Suzuki-Abe border following (what cv2.findContours does) from a start pixel.

    ``crop`` holds the contour's box with one pixel of background-or-not margin around it, and
    (row, column) are the start in the box. An outer border starts with its background neighbour
    to the west, a hole border with the hole to the east. Returns the border pixels (x, y) in the
    box, in order. One Python step per border pixel, each a table look-up of the pixel's
    neighbours: only poly mode needs the order; quad mode needs only the pixels' hull."""
    inner = crop[1:-1, 1:-1]
    height, width = inner.shape
    codes = np.zeros((height, width), dtype=np.uint8)
    for bit, (down, across) in enumerate(_STEPS):
        codes |= crop[1 + down : 1 + down + height, 1 + across : 1 + across + width].astype(
            np.uint8
        ) << np.uint8(bit)
    neighbours = codes.tobytes()
    moves = [down * width + across for down, across in _STEPS]
    start = row * width + column
    direction = _CLOCKWISE[neighbours[start] * 8 + (0 if is_hole else 4)]
    if direction == 8:
        return np.array([[column, row]], dtype=np.int64)
    first_neighbour = start + moves[direction]
    current, back = start, direction
    path = []
    while True:
        direction = _COUNTER_CLOCKWISE[neighbours[current] * 8 + back]
        path.append(current)
        following = current + moves[direction]
        if following == start and current == first_neighbour:
            break
        back = (direction + 4) & 7
        current = following
    positions = np.array(path, dtype=np.int64)
    return np.stack([positions % width, positions // width], axis=1)


def _simple_chain(contour: Array) -> Array:
    """CHAIN_APPROX_SIMPLE: keep the pixels where the step direction changes."""
    if contour.shape[0] < 3:
        return contour
    step_in = contour - np.roll(contour, 1, axis=0)
    step_out = np.roll(contour, -1, axis=0) - contour
    turns = np.any(step_in != step_out, axis=1)
    kept: Array = contour[turns]
    return kept


def _perimeter(points: Array) -> float:
    if points.shape[0] < 2:
        return 0.0
    edges = np.roll(points, -1, axis=0) - points
    return float(np.hypot(edges[:, 0], edges[:, 1]).sum())


def _signed_area(points: Array) -> float:
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    return float((x * np.roll(y, -1) - np.roll(x, -1) * y).sum() / 2)


def _approximate_polygon(points: Array, epsilon: float) -> Array:
    """``cv2.approxPolyDP(points, epsilon, closed=True)``, step for step.

    Three rounds of "the point farthest from the current start" pick two anchors; Douglas-Peucker
    splits each half at its farthest point until every point is within epsilon of its chord
    (writing each kept chord's start); a last pass drops points that are nearly on the line
    through their neighbours. Index arithmetic follows OpenCV so ties fall the same way."""
    source = np.asarray(points, dtype=np.int64)
    count = source.shape[0]
    if count == 0:
        return source
    tolerance = epsilon * epsilon
    start = 0
    relative = 0
    farthest = 0.0
    for _ in range(3):
        start = (start + relative) % count
        following = source[(start + np.arange(1, count)) % count] - source[start]
        distances = (following * following).sum(axis=1)
        # OpenCV keeps the first strictly larger distance: argmax's first maximum.
        relative = int(np.argmax(distances)) + 1 if count > 1 else 0
        farthest = float(distances[relative - 1]) if count > 1 else 0.0
        if farthest <= 0:
            relative = 0
    if farthest <= tolerance:
        return source[start : start + 1]
    anchor = (start + relative) % count
    written: list[int] = []
    stack = [(anchor, start), (start, anchor)]  # the last is taken first
    while stack:
        low, high = stack.pop()
        span = (high - low) % count
        if span <= 1:
            written.append(low)
            continue
        sx, sy = source[low]
        dx, dy = source[high] - source[low]
        inner = source[(low + np.arange(1, span)) % count]
        distances = np.abs((inner[:, 1] - sy) * dx - (inner[:, 0] - sx) * dy)
        worst = int(np.argmax(distances))
        if float(distances[worst]) ** 2 <= tolerance * float(dx * dx + dy * dy):
            written.append(low)
        else:
            split = (low + 1 + worst) % count
            stack += [(split, high), (low, split)]
    kept = [(int(x), int(y)) for x, y in source[written].tolist()]
    return np.array(_drop_straight(kept, tolerance), dtype=np.int64)


def _drop_straight(points: list[tuple[int, int]], tolerance: float) -> list[tuple[int, int]]:
    """OpenCV's clean-up of a closed approximation, in place as it does it (its reads wrap onto
    points it already rewrote)."""
    result = list(points)
    count = kept = len(result)
    position = count - 1
    start = result[position]
    position = 0
    write = position
    point = result[position]
    position = (position + 1) % count
    index = 0
    while index < count and kept > 2:
        end = result[position]
        position = (position + 1) % count
        dx, dy = end[0] - start[0], end[1] - start[1]
        distance = abs((point[0] - start[0]) * dy - (point[1] - start[1]) * dx)
        forward = (point[0] - start[0]) * (end[0] - point[0]) + (point[1] - start[1]) * (
            end[1] - point[1]
        )
        if (
            distance * distance <= 0.5 * tolerance * (dx * dx + dy * dy)
            and dx != 0
            and dy != 0
            and forward >= 0
        ):
            kept -= 1
            result[write] = start = end
            write = (write + 1) % count
            point = result[position]
            position = (position + 1) % count
            index += 2
            continue
        result[write] = start = point
        write = (write + 1) % count
        point = end
        index += 1
    return result[:kept]


def _short_side(points: Array) -> float:
    """The short side of ``cv2.minAreaRect`` of any point set."""
    hull = _point_hull(points)
    rectangles = _min_area_rectangles(
        np.zeros(hull.shape[0], dtype=np.int64), hull[:, 0], hull[:, 1], 1
    )
    return float(rectangles.short_side[0])


def _point_hull(points: Array) -> Array:
    """Convex hull of a few points (monotone chain), clockwise in image coordinates."""
    unique = np.unique(points.astype(np.float64), axis=0)  # sorted by x, then y
    if unique.shape[0] < 3:
        return unique

    def half(ordered: Array) -> list[Array]:
        chain: list[Array] = []
        for point in ordered:
            while len(chain) >= 2:
                (ax, ay), (bx, by) = chain[-2], chain[-1]
                if (bx - ax) * (point[1] - ay) - (by - ay) * (point[0] - ax) > 0:
                    break
                chain.pop()
            chain.append(point)
        return chain

    lower, upper = half(unique), half(unique[::-1])
    return np.array(lower[:-1] + upper[:-1])
