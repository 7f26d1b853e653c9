"""Cut text regions out of an image the way RapidOCR / PaddleOCR do before recognition.

An OCR chain runs a detector (quadrilaterals), cuts each quad out as an upright rectangle and
hands the crops to a recogniser. The recogniser was trained on crops made by rapidocr 1.4.4's
``get_rotate_crop_image`` (PaddleOCR's, unchanged), which is OpenCV::

    w = int(max(|p0 - p1|, |p2 - p3|)); h = int(max(|p0 - p3|, |p1 - p2|))
    M = cv2.getPerspectiveTransform(quad, [[0, 0], [w, 0], [w, h], [0, h]])
    crop = cv2.warpPerspective(img, M, (w, h), borderMode=BORDER_REPLICATE, flags=INTER_CUBIC)
    if h / w >= 1.5: crop = np.rot90(crop)        # counter-clockwise: vertical text lies down

GPUX must not need OpenCV at runtime, so this module redoes that arithmetic in numpy, following
OpenCV 4.x ``imgwarp.cpp`` (WarpPerspectiveInvoker, remapBicubic, initInterTab2D): the 8x8
system of getPerspectiveTransform in double (with its float32 products) solved in the order of
OpenCV's own LU, the 3x3 inverse by adjugate, source coordinates rounded to 1/32 pixel in
warpPerspective's tiles, 16-bit fixed-point bicubic weights (a = -0.75) and edge replication.
Measured against the cv2 4.14 x86-64 wheel: bit-exact on ~8,000 random quads (convex, bow-tie,
sub-4-pixel, partly outside the image). The homography matters to the last bit: with LAPACK's
solve instead, 2 values in ~100 million differed (by up to 5, a source coordinate on a tie).

``sort_reading_order`` is rapidocr's ``sorted_boxes`` (top-to-bottom, then left-to-right within
a 10-pixel line tolerance), returning indices instead of boxes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from gpux.errors import InputError

Array = np.ndarray[Any, Any]

_TAB_BITS = 5  # INTER_BITS: source coordinates are quantised to 1/32 pixel
_TAB_SIZE = 1 << _TAB_BITS
_COEF_BITS = 15  # INTER_REMAP_COEF_BITS: uint8 weights are integers scaled by 2**15
_CUBIC_A = np.float32(-0.75)
# A detector's quad never yields a crop larger than the image; beyond this factor of the image's
# longer side the quad is garbage, and honouring it would allocate without bound.
_MAX_SIDE_FACTOR = 4
# warpPerspective's tiles (BLOCK_SZ = 32): X0 is computed at each tile's first column and the
# column offset added, which rounds differently from M0 * x in the last bit.
_BLOCK = 32


def crop_quad(image: Array, quad: Array, rotate_tall: float | None = 1.5) -> Array:
    """The upright crop of ``quad`` from ``image``, as rapidocr 1.4.4's get_rotate_crop_image.

    ``image`` is HxW or HxWx3 uint8 (channel order untouched); ``quad`` is 4x2 (x, y) corners in
    image pixels, clockwise from the top-left. The crop is ``int(max(top, bottom))`` wide and
    ``int(max(left, right))`` tall, bicubically warped with the image's edges replicated, then
    turned 90 degrees counter-clockwise (``np.rot90``) when height / width >= ``rotate_tall``
    (None never turns).

    Degenerate quads give an empty array (shape ``(0, 0)`` or ``(0, 0, C)``) for the caller to
    skip: a side under one pixel (OpenCV would read dsize (0, h) as "the source's size" and
    return the whole image warped), or three corners on one line (no perspective transform
    exists; OpenCV would return a smear of pixel (0, 0)). Malformed input raises
    :class:`InputError`: a wrong shape or dtype, a non-finite coordinate, or a crop side over
    4x the image's longer side (no detector produces it; it would only allocate).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or 0 in image.shape[:2]:
        raise InputError(
            f"crop_quad: image must be a non-empty HxW or HxWxC uint8 array, got {image.dtype} {image.shape}"
        )
    points = np.asarray(quad)
    if points.shape != (4, 2) or not np.issubdtype(points.dtype, np.number):
        raise InputError(f"crop_quad: quad must be 4x2 (x, y) corners, got shape {points.shape}")
    # rapidocr's boxes are float32 and getPerspectiveTransform only takes float32: the side
    # lengths (np.linalg.norm of float32, then int()) and the system are built from those values.
    points = points.astype(np.float32)
    if not np.isfinite(points).all():
        raise InputError(
            "crop_quad: quad has a non-finite coordinate", hint=f"quad: {points.tolist()}"
        )
    width = int(max(np.linalg.norm(points[0] - points[1]), np.linalg.norm(points[2] - points[3])))
    height = int(max(np.linalg.norm(points[0] - points[3]), np.linalg.norm(points[1] - points[2])))
    limit = _MAX_SIDE_FACTOR * max(image.shape[:2])
    if width > limit or height > limit:
        raise InputError(
            f"crop_quad: a {width}x{height} crop from a {image.shape[1]}x{image.shape[0]} image",
            hint=f"crop sides are capped at {limit} ({_MAX_SIDE_FACTOR}x the image's longer side)",
        )
    empty = np.zeros((0, 0, *image.shape[2:]), np.uint8)
    if width == 0 or height == 0 or _collinear(points.astype(np.float64)):
        return empty
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    forward = _perspective_transform(points, target)
    inverse = None if forward is None else _invert3(forward)
    if inverse is None:
        return empty
    crop = _warp_cubic(image, inverse, width, height)
    if rotate_tall is not None and height * 1.0 / width >= rotate_tall:
        crop = np.rot90(crop)
    return crop


def sort_reading_order(quads: Array) -> Array:
    """Indices that put ``quads`` (Nx4x2) in rapidocr's reading order (its ``sorted_boxes``).

    A stable sort by the top-left corner's (y, x), then an insertion-like pass: each box moves
    left past its neighbours while their top-left y differ by under 10 px and it starts further
    left. As in rapidocr, the inner loop compares with the box now at j (which may have just been
    swapped in), and stops at the first pair left alone.
    """
    boxes = np.asarray(quads)
    if boxes.ndim != 3 or boxes.shape[1:] != (4, 2):
        raise InputError(f"sort_reading_order: quads must be Nx4x2, got shape {boxes.shape}")
    if not np.issubdtype(boxes.dtype, np.floating):
        boxes = boxes.astype(np.float64)
    # numpy scalars of the boxes' own dtype: rapidocr's y difference is a float32 subtraction,
    # which can round onto exactly 10 where float64 would not.
    x, y = list(boxes[:, 0, 0]), list(boxes[:, 0, 1])
    # Python's sorted() is stable, and so is this key sort, so ties keep the input order.
    order = sorted(range(len(x)), key=lambda i: (y[i], x[i]))
    for i in range(len(order) - 1):
        for j in range(i, -1, -1):
            a, b = order[j], order[j + 1]
            if abs(y[b] - y[a]) < 10 and x[b] < x[a]:
                order[j], order[j + 1] = b, a
            else:
                break
    return np.array(order, dtype=np.intp)


def _collinear(points: Array) -> bool:
    """Whether any three corners lie on one line (then no homography to a rectangle exists)."""
    scale = float(np.abs(points - points.mean(0)).max()) or 1.0
    for skip in range(4):
        a, b, c = np.delete(points, skip, axis=0)
        cross = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        if abs(cross) <= 1e-9 * scale * scale:
            return True
    return False


def _perspective_transform(src: Array, dst: Array) -> Array | None:
    """cv2.getPerspectiveTransform: the 8x8 system in double, solved by LU, M[2, 2] = 1.

    None when the system is singular (OpenCV then returns a zero matrix with M[2, 2] = 1)."""
    a = np.zeros((8, 8), np.float64)
    b = np.zeros(8, np.float64)
    for i in range(4):
        (sx, sy), (dx, dy) = src[i], dst[i]  # float32 scalars
        a[i, 0] = a[i + 4, 3] = sx
        a[i, 1] = a[i + 4, 4] = sy
        a[i, 2] = a[i + 4, 5] = 1.0
        # OpenCV multiplies the Point2f coordinates in float before storing them as double.
        a[i, 6], a[i, 7] = -sx * dx, -sy * dx
        a[i + 4, 6], a[i + 4, 7] = -sx * dy, -sy * dy
        b[i], b[i + 4] = dx, dy
    solution = _lu_solve(a, b)
    return None if solution is None else np.append(solution, 1.0).reshape(3, 3)


def _lu_solve(a: Array, b: Array) -> Array | None:
    """OpenCV's LUImpl (hal::LU64f): Gaussian elimination with partial pivoting, in its order of
    operations, so that M matches OpenCV to the last bit (LAPACK's differs there, and a source
    coordinate exactly on a 1/64-pixel tie then rounds the other way). None when singular."""
    a, b = a.copy(), b.copy()
    n = len(b)
    for i in range(n):
        k = i + int(np.argmax(np.abs(a[i:, i])))  # the first largest, as OpenCV's strict '>'
        if abs(a[k, i]) < np.finfo(np.float64).eps * 100:
            return None
        if k != i:
            a[[i, k], i:] = a[[k, i], i:]
            b[[i, k]] = b[[k, i]]
        d = -1.0 / a[i, i]
        alpha = a[i + 1 :, i] * d
        a[i + 1 :, i + 1 :] += alpha[:, None] * a[i, i + 1 :]
        b[i + 1 :] += alpha * b[i]
        a[i, i] = -d
    for i in range(n - 1, -1, -1):
        s = b[i]
        for k in range(i + 1, n):
            s -= a[i, k] * b[k]
        b[i] = s * a[i, i]
    return b


def _invert3(m: Array) -> Array | None:
    """cv2.invert of a 3x3 double matrix: the adjugate times 1/det, None when det is 0."""
    (a, b, c), (d, e, f), (g, h, i) = m.tolist()
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    if det == 0.0 or not np.isfinite(det):
        return None
    r = 1.0 / det
    adjugate = [
        [(e * i - f * h) * r, (c * h - b * i) * r, (b * f - c * e) * r],
        [(f * g - d * i) * r, (a * i - c * g) * r, (c * d - a * f) * r],
        [(d * h - e * g) * r, (b * g - a * h) * r, (a * e - b * d) * r],
    ]
    return np.array(adjugate, np.float64)


@lru_cache(maxsize=1)
def _cubic_table() -> Array:
    """OpenCV's 32x32 table of 4x4 int16 bicubic weights (initInterTab2D), as float64 [1024, 16].

    The 1-D coefficients are computed in float32, their outer products scaled by 2**15 and
    rounded half to even, then any rounding excess is taken from (or given to) the smallest
    (largest) of the four weights at rows/columns 2-3, exactly as OpenCV does.
    """
    x = np.arange(_TAB_SIZE, dtype=np.float32) * np.float32(1.0 / _TAB_SIZE)
    a, one = _CUBIC_A, np.float32(1)
    x1, rx = x + one, one - x
    c0 = ((a * x1 - 5 * a) * x1 + 8 * a) * x1 - 4 * a
    c1 = ((a + 2) * x - (a + 3)) * x * x + one
    c2 = ((a + 2) * rx - (a + 3)) * rx * rx + one
    c3 = one - c0 - c1 - c2
    taps = np.stack([c0, c1, c2, c3], axis=1).astype(np.float32)  # [32, 4]
    products = taps[:, None, :, None] * taps[None, :, None, :]  # [fy, fx, ky, kx], float32
    table: Array = (
        np.rint(products * np.float32(1 << _COEF_BITS)).astype(np.int32).reshape(-1, 4, 4)
    )
    scale = 1 << _COEF_BITS
    for weights in table:
        diff = int(weights.sum()) - scale
        if diff == 0:
            continue
        low = high = (2, 2)
        for k1 in (2, 3):
            for k2 in (2, 3):
                if weights[k1, k2] < weights[low]:
                    low = (k1, k2)
                elif weights[k1, k2] > weights[high]:
                    high = (k1, k2)
        weights[high if diff < 0 else low] -= diff
    return table.reshape(-1, 16).astype(np.float64)


def _warp_cubic(image: Array, inverse: Array, width: int, height: int) -> Array:
    """cv2.warpPerspective(INTER_CUBIC, BORDER_REPLICATE) given the inverse (dst -> src) matrix."""
    m = inverse.ravel()
    # Tile layout of WarpPerspectiveInvoker: bh0 rows by bw0 columns.
    bh0 = min(_BLOCK // 2, height)
    bw0 = min(_BLOCK * _BLOCK // bh0, width)
    cols = np.arange(width, dtype=np.float64)
    start = np.floor_divide(np.arange(width), bw0) * bw0
    offset = cols - start
    rows = np.arange(height, dtype=np.float64)[:, None]
    x0 = m[0] * start + m[1] * rows + m[2]
    y0 = m[3] * start + m[4] * rows + m[5]
    w0 = m[6] * start + m[7] * rows + m[8]
    w = w0 + m[6] * offset
    with np.errstate(divide="ignore"):
        w = np.where(w != 0, _TAB_SIZE / np.where(w != 0, w, 1.0), 0.0)
    limits = (float(np.iinfo(np.int32).min), float(np.iinfo(np.int32).max))
    # saturate_cast<int>(double) rounds half to even, like np.rint.
    fx = np.rint(np.clip((x0 + m[0] * offset) * w, *limits)).astype(np.int64)
    fy = np.rint(np.clip((y0 + m[3] * offset) * w, *limits)).astype(np.int64)
    # Integer part saturated to int16 (OpenCV's map type), then the 4 taps from one pixel before,
    # clamped to the image: BORDER_REPLICATE.
    sx = np.clip(fx >> _TAB_BITS, -32768, 32767) - 1
    sy = np.clip(fy >> _TAB_BITS, -32768, 32767) - 1
    # Gather the 4x4 neighbourhoods from the flattened image (np.take is several times faster than
    # 2-D fancy indexing), then one small matmul per pixel. float64 holds these integer sums
    # exactly (|sum| < 2**53), and BLAS beats an int32 multiply-and-reduce by ~5x.
    taps = np.arange(4)
    xs = np.clip(sx.ravel()[:, None] + taps, 0, image.shape[1] - 1)  # [N, 4]
    ys = np.clip(sy.ravel()[:, None] + taps, 0, image.shape[0] - 1)
    index = (ys[:, :, None] * image.shape[1] + xs[:, None, :]).reshape(-1, 16)
    flat = image.reshape(image.shape[0] * image.shape[1], -1)
    pixels = np.take(flat, index, axis=0)  # [N, 16, C]
    weights = _cubic_table()[((fy & (_TAB_SIZE - 1)) * _TAB_SIZE + (fx & (_TAB_SIZE - 1))).ravel()]
    total = np.matmul(weights[:, None, :], pixels.astype(np.float64))[:, 0].astype(np.int64)
    # FixedPtCast: round by adding half, arithmetic shift, saturate to uint8.
    out: Array = np.clip((total + (1 << (_COEF_BITS - 1))) >> _COEF_BITS, 0, 255).astype(np.uint8)
    return out.reshape(height, width, *image.shape[2:])
