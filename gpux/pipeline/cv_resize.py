"""OpenCV's ``cv2.resize`` in numpy, for uint8 (and float32) images.

Many models were trained on images that went through ``cv2.resize`` (PaddleOCR, YOLO exports,
most C++ deployment code), and its results differ from Pillow's: no antialiasing when shrinking
with INTER_LINEAR and INTER_CUBIC, fixed-point weights for uint8, and an INTER_AREA that turns
into a bilinear variant as soon as one axis is enlarged. Reproducing the authors' preprocessing
therefore means reproducing OpenCV, and GPUX must not need OpenCV at runtime (a large native
wheel with its own ABI constraints), so this module redoes the arithmetic of OpenCV 4.x
``modules/imgproc/src/resize.cpp`` in numpy:

* ``"nearest"`` (INTER_NEAREST): source index ``floor(dst * src_size / dst_size)``, not the
  half-pixel rule (that is OpenCV's INTER_NEAREST_EXACT, and Pillow's). Bit-exact.
* ``"linear"`` (INTER_LINEAR): half-pixel centres, 2 taps, edges replicated, no antialiasing.
  uint8 uses OpenCV's 11-bit fixed-point weights and its rounding: bit-exact. An exact 2x
  shrink of both axes is OpenCV's INTER_AREA, which gives the same numbers.
* ``"cubic"`` (INTER_CUBIC): Keys' kernel, a = -0.75, 4 taps, saturated to [0, 255]. x86 OpenCV
  wheels hand this one to Intel IPP, which computes in floating point; so does this module
  (float32 sums of exact weights), and about 1 value in 50,000 lands on the other side of a
  rounding tie (off by 1). OpenCV's own fixed-point code, used without IPP (ARM wheels, or a
  source side under 4 pixels), differs from IPP by 1 in about 4% of the values.
* ``"area"`` (INTER_AREA): when no axis grows, each output pixel is the mean of the source pixels
  its cell covers, partial pixels weighted by coverage, in float32 as OpenCV sums them; integer
  factors average whole blocks with OpenCV's rounding. As soon as either axis grows, OpenCV
  switches to a 2-tap bilinear variant whose weights come from cell overlaps, on both axes;
  so does this. Bit-exact.

float32 images take the same paths without rounding (within ~1e-5 of OpenCV for values in
[0, 1]). Every mode is separable: per-axis tables of source indices and weights are built once
per call, then applied along the rows and then along the columns (OpenCV's order, which matters
for the rounding of fixed-point sums) with gathers and weighted sums. Only the taps (a few, or
``ceil(scale) + 1`` for area shrinks) are looped over, never pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpux.errors import InputError

Array = np.ndarray[Any, Any]

MODES = ("nearest", "linear", "cubic", "area")

# OpenCV's uint8 bilinear weights are integers scaled by 2**11 (INTER_RESIZE_COEF_BITS).
_COEF_SCALE = 1 << 11
_CUBIC_A = -0.75
# computeResizeAreaTab ignores slivers of a source pixel thinner than this.
_AREA_SLIVER = 1e-3
_DBL_EPSILON = float(np.finfo(np.float64).eps)
_CHANNELS = (1, 3, 4)


@dataclass(frozen=True)
class _Taps:
    """Per output position along one axis: source indices and their weights, ``[size, taps]``.

    Unused taps carry weight 0 and a valid index, so every row has the same number of taps.
    """

    index: Array  # intp
    weight: Array  # float32 (float64 for cubic); int32 once scaled to OpenCV's fixed point

    def interleaved(self, channels: int) -> _Taps:
        """The same taps over a row of interleaved channels: one row per output value."""
        return _Taps(_interleaved(self.index, channels), np.repeat(self.weight, channels, axis=0))


def _interleaved(index: Array, channels: int) -> Array:
    """Pixel indices ``[n, taps]`` -> value indices ``[n * channels, taps]`` in ``[W * C]`` rows."""
    values: Array = (index[:, None, :] * channels + np.arange(channels)[None, :, None]).reshape(
        -1, index.shape[1]
    )
    return values


def resize(pixels: Array, height: int, width: int, mode: str) -> Array:
    """``pixels`` resized to ``height`` x ``width`` as ``cv2.resize`` would do it.

    ``pixels`` is ``[H, W]`` or ``[H, W, C]`` with C = 1, 3 or 4, uint8 or float32; the result has
    the same dtype and layout (``[height, width, C]`` keeps its channel axis even for C = 1,
    where OpenCV would drop it). ``mode`` is one of :data:`MODES`.
    """
    image = _checked_image(pixels)
    height, width = _checked_size(height, "height"), _checked_size(width, "width")
    if mode not in MODES:
        raise InputError(
            f"unknown resize mode '{mode}'", f"use one of: {', '.join(MODES)} (OpenCV's INTER_*)"
        )
    source_height, source_width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    shape = (height, width) if image.ndim == 2 else (height, width, channels)
    if (source_height, source_width) == (height, width):
        return image.copy()  # cv2.resize copies, whatever the mode

    # Rows of interleaved channels, [H, W * C]: a gather along either axis then moves whole rows
    # or single elements, which numpy does far faster than [H, W, C] pixels of C elements.
    rows_of_values = np.ascontiguousarray(image).reshape(source_height, source_width * channels)
    if mode == "nearest":
        rows = _nearest_index(source_height, height)
        columns = _interleaved(_nearest_index(source_width, width)[:, None], channels)[:, 0]
        picked_rows = np.take(rows_of_values, rows, axis=0, mode="clip")
        result = np.take(picked_rows, columns, axis=1, mode="clip")
    else:
        result = _interpolate(rows_of_values, channels, height, width, mode)
    return result.reshape(shape)


# ------------------------------------------------------------------------------- dispatch
def _interpolate(image: Array, channels: int, height: int, width: int, mode: str) -> Array:
    """Linear, cubic and area on ``[H, W * C]`` rows, following the branches of OpenCV's
    ``hal::resize``; the result is ``[height, width * C]``."""
    source_height, source_width = image.shape[0], image.shape[1] // channels
    # OpenCV works with scale = 1 / (dst / src), not src / dst; the two differ in the last bit
    # and that decides, among other things, whether a factor counts as an integer.
    scale_y = 1.0 / (height / source_height)
    scale_x = 1.0 / (width / source_width)
    factor_y, factor_x = _integer_factor(scale_y), _integer_factor(scale_x)

    if mode == "linear" and factor_y == 2 and factor_x == 2:
        mode = "area"  # OpenCV's shortcut; for uint8 the numbers are identical either way
    if mode == "area" and scale_x >= 1 and scale_y >= 1:
        if factor_y and factor_x:
            return _area_blocks(image, channels, factor_y, factor_x)
        rows = _area_taps(source_height, height, scale_y)
        columns = _area_taps(source_width, width, scale_x).interleaved(channels)
        return _weighted_sums(image, rows, columns, np.float32)

    if mode == "cubic":
        # Floating point like Intel IPP, which OpenCV's x86 wheels call for cubic (module doc).
        rows = _cubic_taps(source_height, height, scale_y)
        columns = _cubic_taps(source_width, width, scale_x).interleaved(channels)
        return _weighted_sums(image, rows, columns, np.float32)
    if mode == "linear":
        rows = _linear_taps(source_height, height, scale_y, clamp_edges=False)
        columns = _linear_taps(source_width, width, scale_x, clamp_edges=True).interleaved(channels)
    else:  # area with at least one axis enlarged: OpenCV's bilinear emulation, on both axes
        rows = _area_enlarge_taps(source_height, height, scale_y, clamp_edges=False)
        columns = _area_enlarge_taps(source_width, width, scale_x, clamp_edges=True).interleaved(
            channels
        )
    if image.dtype == np.float32:
        return _weighted_sums(image, rows, columns, np.float32)
    return _linear_fixed_point(image, rows, columns)


def _integer_factor(scale: float) -> int:
    """The integer ``scale`` is, exactly (to DBL_EPSILON, as OpenCV checks), or 0."""
    nearest = int(np.rint(scale))
    return nearest if nearest >= 1 and abs(scale - nearest) < _DBL_EPSILON else 0


# ---------------------------------------------------------------------------- tap tables
def _nearest_index(source: int, target: int) -> Array:
    """INTER_NEAREST: ``floor(dst * scale)``, with scale computed as OpenCV does."""
    scale = 1.0 / (target / source)
    index: Array = np.minimum(np.floor(np.arange(target) * scale).astype(np.intp), source - 1)
    return index


def _half_pixel_positions(target: int, scale: float) -> tuple[Array, Array]:
    """Integer source position and float32 fraction of each output centre (OpenCV's float math)."""
    position = ((np.arange(target) + 0.5) * scale - 0.5).astype(np.float32)
    start = np.floor(position)
    fraction = (position - start).astype(np.float32)
    return start.astype(np.intp), fraction


def _linear_taps(source: int, target: int, scale: float, *, clamp_edges: bool) -> _Taps:
    start, fraction = _half_pixel_positions(target, scale)
    return _two_taps(source, start, fraction, clamp_edges)


def _area_enlarge_taps(source: int, target: int, scale: float, *, clamp_edges: bool) -> _Taps:
    """INTER_AREA when enlarging: 2 taps; the fraction is how far the output cell reaches past
    the end of its first source pixel, in output units (0 if it does not)."""
    positions = np.arange(target)
    start = np.floor(positions * scale).astype(np.intp)
    overlap = ((positions + 1) - (start + 1) * (target / source)).astype(np.float32)
    fraction = np.where(overlap <= 0, np.float32(0), overlap - np.floor(overlap))
    return _two_taps(source, start, fraction.astype(np.float32), clamp_edges)


def _two_taps(source: int, start: Array, fraction: Array, clamp_edges: bool) -> _Taps:
    if clamp_edges:
        # OpenCV's horizontal pass moves outside positions onto the edge pixel with weight 1;
        # its vertical pass keeps both weights and clips the row index. The same for uint8;
        # float32 sums round slightly differently, so both are kept as OpenCV has them.
        before, after = start < 0, start >= source - 1
        fraction = np.where(before | after, np.float32(0), fraction).astype(np.float32)
        start = np.where(before, 0, np.where(after, source - 1, start))
    index = np.clip(np.stack([start, start + 1], axis=1), 0, source - 1)
    weight = np.stack([np.float32(1) - fraction, fraction], axis=1).astype(np.float32)
    return _Taps(index, weight)


def _cubic_taps(source: int, target: int, scale: float) -> _Taps:
    """Keys' cubic kernel, a = -0.75, evaluated exactly (not OpenCV's float32 formula: IPP's
    results, see the module doc, are closer to exact weights)."""
    position = (np.arange(target) + 0.5) * scale - 0.5
    start = np.floor(position)
    offsets = np.arange(-1, 3)
    distance = np.abs(position[:, None] - (start[:, None] + offsets[None, :]))
    a = _CUBIC_A
    near = ((a + 2) * distance - (a + 3)) * distance * distance + 1  # distance <= 1
    far = ((a * distance - 5 * a) * distance + 8 * a) * distance - 4 * a  # 1 < distance < 2
    weight = np.where(distance <= 1, near, far)
    index = np.clip(start.astype(np.intp)[:, None] + offsets[None, :], 0, source - 1)
    return _Taps(index, weight)


def _area_taps(source: int, target: int, scale: float) -> _Taps:
    """INTER_AREA when shrinking: each output cell ``[d * scale, (d + 1) * scale)`` averages the
    source pixels it covers, partial pixels weighted by coverage (computeResizeAreaTab)."""
    cell_start = np.arange(target) * scale
    cell_end = cell_start + scale
    cell_width = np.minimum(scale, source - cell_start)
    last = np.minimum(np.floor(cell_end).astype(np.intp), source - 1)
    first = np.minimum(np.ceil(cell_start).astype(np.intp), last)
    has_head = (first - cell_start) > _AREA_SLIVER
    has_tail = (cell_end - last) > _AREA_SLIVER
    head_weight = ((first - cell_start) / cell_width).astype(np.float32)
    whole_weight = (1.0 / cell_width).astype(np.float32)
    tail_weight = (np.minimum(np.minimum(cell_end - last, 1.0), cell_width) / cell_width).astype(
        np.float32
    )

    begin = first - has_head  # first source pixel touched (the partial head, if any)
    count = has_head + (last - first) + has_tail
    taps = max(1, int(count.max()))
    offset = np.arange(taps)[None, :]
    index = begin[:, None] + offset
    weight = np.where(offset < count[:, None], whole_weight[:, None], np.float32(0))
    weight = np.where((offset == 0) & has_head[:, None], head_weight[:, None], weight)
    weight = np.where(
        (offset == count[:, None] - 1) & has_tail[:, None], tail_weight[:, None], weight
    )
    return _Taps(np.clip(index, 0, source - 1), weight.astype(np.float32))


# ----------------------------------------------------------------------------- application
# Images are [H, W * C] here. Each pass gathers one tap at a time (np.take: whole rows, or
# single values within rows), scales it and adds it in place. The output is made in bands of
# rows whose intermediates stay in the CPU cache: twice as fast as whole-image passes.
_BAND_BYTES = 1 << 18


def _separable(
    image: Array,
    rows: _Taps,
    row_length: int,
    horizontal: Callable[[Array], Array],
    vertical: Callable[[Array, Array, Array], Array],
    dtype: Any,
) -> Array:
    """``vertical(horizontal(source rows), tap indices into them, row weights)``, band by band."""
    # Only the source rows some vertical tap reads: a strong vertical shrink skips the others.
    needed, compact = np.unique(rows.index, return_inverse=True)
    compact = compact.reshape(rows.index.shape)
    source = image if len(needed) == image.shape[0] else np.take(image, needed, axis=0)

    height = rows.index.shape[0]
    result = np.empty((height, row_length), dtype)
    # A band holds about _BAND_BYTES of horizontal sums and about as much vertical output.
    rows_per_band = max(1, _BAND_BYTES // (4 * row_length))
    band = max(1, min(rows_per_band, int(rows_per_band * height / len(needed))))
    for start in range(0, height, band):
        stop = min(height, start + band)
        index = compact[start:stop]
        first, last = int(index.min()), int(index.max()) + 1
        sums = horizontal(source[first:last])
        result[start:stop] = vertical(sums, index - first, rows.weight[start:stop])
    return result


def _sum_taps(
    values: Array, axis: int, index: Array, weight: Array, work: Any, shift: int = 0
) -> Array:
    """``sum over taps t of take(values, index[:, t], axis) * weight[:, t]`` in ``work`` dtype,
    in tap order; with ``shift``, each product is shifted right before it is added (OpenCV's
    uint8 bilinear vertical pass)."""
    total: Array | None = None
    scratch: Array | None = None
    for tap in range(index.shape[1]):
        tap_weight = weight[:, tap][None, :] if axis == 1 else weight[:, tap][:, None]
        # Indices are valid by construction; mode="clip" skips numpy's bounds errors (faster).
        gathered = np.take(values, index[:, tap], axis=axis, mode="clip")
        if total is None:
            total = term = np.multiply(gathered, tap_weight, dtype=work)
        else:
            if scratch is None:
                scratch = np.empty_like(total)
            term = np.multiply(gathered, tap_weight, out=scratch, dtype=work)
        if shift:
            term >>= shift
        if term is not total:
            total += term
    assert total is not None
    return total


def _linear_fixed_point(image: Array, rows: _Taps, columns: _Taps) -> Array:
    """OpenCV's uint8 bilinear arithmetic, bit for bit: 11-bit integer weights, int32 row sums,
    and the vertical pass of VResizeLinear's uint8 specialisation (drop 4 bits, multiply, keep
    the high 16 bits of each product, then round away the last 2 bits)."""
    alpha = _fixed_weights(columns.weight)

    def horizontal(source: Array) -> Array:
        sums = _sum_taps(source, 1, columns.index, alpha, np.int32)
        sums >>= 4
        return sums

    def vertical(sums: Array, index: Array, beta: Array) -> Array:
        total = _sum_taps(sums, 0, index, beta, np.int32, shift=16)
        total += 2
        total >>= 2
        return total  # weights are >= 0 and sum to 2048: already within [0, 255]

    fixed_rows = _Taps(rows.index, _fixed_weights(rows.weight))
    return _separable(image, fixed_rows, len(alpha), horizontal, vertical, np.uint8)


def _fixed_weights(weight: Array) -> Array:
    """float32 weights as OpenCV's int16 ones: ``saturate_cast<short>(w * 2048)``, half to even."""
    fixed: Array = np.rint(weight * np.float32(_COEF_SCALE)).astype(np.int32)
    return fixed


def _weighted_sums(image: Array, rows: _Taps, columns: _Taps, work: Any) -> Array:
    """Rows, then columns, summed tap by tap in ``work`` precision (float32 sums in OpenCV's
    order reproduce its area shrinks exactly); rounded half to even and saturated for uint8."""
    column_weight = columns.weight.astype(work)
    rounding = image.dtype == np.uint8

    def horizontal(source: Array) -> Array:
        return _sum_taps(source, 1, columns.index, column_weight, work)

    def vertical(sums: Array, index: Array, weight: Array) -> Array:
        total = _sum_taps(sums, 0, index, weight, work)
        if rounding:
            np.rint(total, out=total)
            np.clip(total, 0, 255, out=total)
        return total

    work_rows = _Taps(rows.index, rows.weight.astype(work))
    return _separable(image, work_rows, len(column_weight), horizontal, vertical, image.dtype)


def _area_blocks(image: Array, channels: int, factor_y: int, factor_x: int) -> Array:
    """INTER_AREA by integer factors: the mean of each whole block (resizeAreaFast)."""
    height, row_length = image.shape
    target_height, target_width = height // factor_y, row_length // channels // factor_x
    work: Any = np.float32 if image.dtype == np.float32 else np.int32
    # Sum the block's rows (one add per row of the block), then its columns (one per column).
    row_sums: Array = image[0::factor_y].astype(work)
    for offset in range(1, factor_y):
        row_sums += image[offset::factor_y]
    cells = row_sums.reshape(target_height, target_width, factor_x * channels)
    sums: Array = cells[:, :, :channels].copy()
    for offset in range(1, factor_x):
        sums += cells[:, :, offset * channels : (offset + 1) * channels]
    sums = sums.reshape(target_height, target_width * channels)

    if image.dtype == np.float32:
        mean: Array = sums * np.float32(1 / (factor_y * factor_x))
        return mean
    if factor_y == 2 and factor_x == 2:
        # OpenCV's 2x2 kernel rounds halves up; the general one rounds float means half to even.
        halved: Array = ((sums + 2) >> 2).astype(np.uint8)
        return halved
    mean = sums.astype(np.float32) * (np.float32(1) / np.float32(factor_y * factor_x))
    result: Array = np.clip(np.rint(mean), 0, 255).astype(np.uint8)
    return result


# ----------------------------------------------------------------------------- arguments
def _checked_image(pixels: Any) -> Array:
    if not isinstance(pixels, np.ndarray):
        raise InputError(
            f"resize needs a numpy array, got {type(pixels).__name__}",
            "pass the image as a uint8 array of shape [H, W] or [H, W, C]",
        )
    if pixels.dtype not in (np.uint8, np.float32):
        raise InputError(
            f"resize supports uint8 and float32 images, got {pixels.dtype}",
            "convert the image with .astype(np.uint8) or .astype(np.float32)",
        )
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in _CHANNELS):
        raise InputError(
            f"resize needs an image of shape [H, W] or [H, W, C] with C in {_CHANNELS}, "
            f"got shape {list(pixels.shape)}",
            "pass one image (not a batch), channels last",
        )
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise InputError(
            f"resize got an empty image of shape {list(pixels.shape)}",
            "the image needs at least one pixel",
        )
    return pixels


def _checked_size(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InputError(
            f"resize {name} must be a positive integer, got {value!r}",
            "give the target size in pixels",
        )
    return int(value)
