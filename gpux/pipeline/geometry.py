"""Where each pixel of a model's input came from in the original photo, and back.

Detectors and OCR models see a resized, padded or cropped copy of the photo; their boxes are in the
pixels of that copy. :class:`ImageTransform` records the affine map between the two (a scale per
axis, then an offset) so a decoder can put boxes back on the photo the user sent.

The functions below are pure functions of sizes. Each returns a :class:`Placement`: the size to
resize the original to, the padding or crop applied after that, and the :class:`ImageTransform`
they amount to. Preprocessing performs the placement; decoders map back with its transform. Each
follows the rounding of the code the model authors ship, so that the tensor (and therefore every box)
is the one they get:

* :func:`letterbox`: ultralytics' ``LetterBox`` (``ultralytics/data/augment.py``).
* :func:`resize_limit_side`: PaddleOCR DB detectors, as rapidocr's ``DetPreProcess.resize``.
* :func:`resize_to_height`: PaddleOCR recognisers, as rapidocr's ``TextRecognizer.resize_norm_img``.
* :func:`resize` and :func:`center_crop`: the plain resize and torchvision's ``CenterCrop``.

Coordinates are continuous: pixel ``(col, row)`` covers ``[col, col + 1) x [row, row + 1)``, so an
image ``W`` wide spans ``x`` in ``[0, W]`` and a resize from ``W`` to ``w`` multiplies ``x`` by
``w / W``, which is what ``cv2.resize`` and Pillow do to pixel edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from gpux.errors import InputError

Array = np.ndarray[Any, Any]
Size = tuple[int, int]  # (height, width)


@dataclass(frozen=True)
class ImageTransform:
    """How one image became the model input: ``x' = x * sx + ox`` and ``y' = y * sy + oy``.

    ``source`` is the original's (height, width); ``scale`` (sy, sx) is applied to it first;
    ``offset`` (oy, ox) is added after scaling: positive for letterbox padding, negative for a crop;
    ``target`` is the (height, width) of the tensor.
    """

    source: Size
    scale: tuple[float, float]
    offset: tuple[float, float]
    target: Size

    def __post_init__(self) -> None:
        if not all(side > 0 for side in (*self.source, *self.target)):
            raise ValueError(f"image sizes must be positive: {self.source} -> {self.target}")
        if not all(math.isfinite(s) and s > 0 for s in self.scale):
            raise ValueError(f"scale must be positive and finite: {self.scale}")

    def to_target(self, points: Array) -> Array:
        """``(..., 2)`` points ``(x, y)`` in original pixels -> model-input pixels (float64)."""
        xy = _points(points)
        return xy * self._scale_xy + self._offset_xy

    def to_source(self, points: Array) -> Array:
        """``(..., 2)`` points ``(x, y)`` in model-input pixels -> original pixels (float64)."""
        xy = _points(points)
        return (xy - self._offset_xy) / self._scale_xy

    def boxes_to_source(self, boxes: Array) -> Array:
        """``[k, 4]`` boxes ``x0, y0, x1, y1`` in model-input pixels -> original pixels, clipped to it.

        A box partly outside the photo (over letterbox padding, or past a crop) is cut at the
        photo's edge; one wholly outside becomes a zero-width or zero-height box on the edge.
        """
        array = np.asarray(boxes, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != 4:
            raise ValueError(f"boxes must be [k, 4] (x0, y0, x1, y1), got {list(array.shape)}")
        corners = self.to_source(array.reshape(-1, 2, 2)).reshape(-1, 4)
        height, width = self.source
        np.clip(corners[:, 0::2], 0.0, float(width), out=corners[:, 0::2])
        np.clip(corners[:, 1::2], 0.0, float(height), out=corners[:, 1::2])
        return corners

    @property
    def _scale_xy(self) -> Array:
        return np.array([self.scale[1], self.scale[0]], dtype=np.float64)

    @property
    def _offset_xy(self) -> Array:
        return np.array([self.offset[1], self.offset[0]], dtype=np.float64)


class Padding(NamedTuple):
    """Rows and columns of fill added around the resized image (letterbox, recogniser width)."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0


class Crop(NamedTuple):
    """The window kept from the resized image: its top-left corner and size."""

    top: int
    left: int
    height: int
    width: int


class Placement(NamedTuple):
    """Resize the original to ``resized`` (height, width), then pad by ``padding`` or cut ``crop``."""

    resized: Size
    padding: Padding
    crop: Crop | None
    transform: ImageTransform


def _points(points: Array) -> Array:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim == 0 or array.shape[-1] != 2:
        raise ValueError(f"points must be (..., 2) arrays of (x, y), got {list(array.shape)}")
    return array


def _checked(source: Size) -> Size:
    height, width = int(source[0]), int(source[1])
    if height < 1 or width < 1:
        raise InputError(
            f"an image of {height}x{width} pixels (height x width) has nothing to resize",
            "send an image at least one pixel high and wide",
        )
    return height, width


def _scaled(source: Size, resized: Size) -> tuple[float, float]:
    return resized[0] / source[0], resized[1] / source[1]


# ------------------------------------------------------------------------------ placements
def resize(source: Size, size: Size) -> Placement:
    """Stretch the original to exactly ``size`` (height, width), aspect ratio not kept."""
    source = _checked(source)
    size = _checked(size)
    transform = ImageTransform(source, _scaled(source, size), (0.0, 0.0), size)
    return Placement(size, Padding(), None, transform)


def center_crop(source: Size, resized: Size, crop: Size) -> Placement:
    """Resize to ``resized``, then keep the centred ``crop`` (height, width) window.

    The window's corner is ``round((resized - crop) / 2)`` with Python's rounding, as torchvision's
    ``CenterCrop`` and GPUX's image preprocessing place it.
    """
    source = _checked(source)
    resized = _checked(resized)
    crop_height, crop_width = _checked(crop)
    if crop_height > resized[0] or crop_width > resized[1]:
        raise InputError(
            f"crop {crop_height}x{crop_width} is larger than the resized image, "
            f"{resized[0]}x{resized[1]} (height x width)",
            "resize to at least the crop size first",
        )
    top = round((resized[0] - crop_height) / 2)
    left = round((resized[1] - crop_width) / 2)
    transform = ImageTransform(
        source, _scaled(source, resized), (-float(top), -float(left)), (crop_height, crop_width)
    )
    return Placement(resized, Padding(), Crop(top, left, crop_height, crop_width), transform)


def letterbox(
    source: Size,
    size: Size,
    *,
    anchor: Literal["center", "top-left"] = "center",
    scale_up: bool = True,
) -> Placement:
    """Fit the original inside ``size`` (height, width) keeping its aspect ratio, then pad.

    ultralytics' ``LetterBox`` rule: ``r = min(h / H, w / W)`` (capped at 1 when not
    ``scale_up``); the resized size is ``int(round(W * r))`` x ``int(round(H * r))``; the
    leftover ``dw`` columns are split ``round(dw / 2 - 0.1)`` left and ``round(dw / 2 + 0.1)``
    right (likewise rows), or all right and below for ``anchor="top-left"``. The recorded
    transform uses the per-axis scale the resize really applied (``new_w / W``, ``new_h / H``),
    not ``r``, so mapping back is exact.
    """
    source = _checked(source)
    height, width = _checked(size)
    if anchor not in ("center", "top-left"):
        raise ValueError(f"anchor must be 'center' or 'top-left', got {anchor!r}")
    ratio = min(height / source[0], width / source[1])
    if not scale_up:
        ratio = min(ratio, 1.0)
    new_width = round(source[1] * ratio)
    new_height = round(source[0] * ratio)
    # A sliver image (1000x1 into 640x640) would round a side to 0; one pixel is the least there is.
    new_width, new_height = max(1, new_width), max(1, new_height)
    pad_width, pad_height = width - new_width, height - new_height
    if anchor == "center":
        half_width, half_height = pad_width / 2, pad_height / 2
        top, bottom = round(half_height - 0.1), round(half_height + 0.1)
        left, right = round(half_width - 0.1), round(half_width + 0.1)
    else:
        top, bottom, left, right = 0, pad_height, 0, pad_width
    resized = (new_height, new_width)
    transform = ImageTransform(
        source, _scaled(source, resized), (float(top), float(left)), (height, width)
    )
    return Placement(resized, Padding(top, bottom, left, right), None, transform)


def resize_to_height(source: Size, height: int, *, width: int | None = None) -> Placement:
    """Scale to ``height`` keeping the aspect ratio, then pad on the right to ``width``.

    PaddleOCR recognisers (rapidocr ``resize_norm_img``): the resized width is
    ``ceil(height * W / H)``, at most ``width``; the rest up to ``width`` is padding on the right.
    rapidocr takes ``width = int(height * max_wh_ratio)`` over the batch so every crop fits. With
    ``width=None`` nothing is padded and the tensor is as wide as the resized crop.
    """
    source = _checked(source)
    if height < 1 or (width is not None and width < 1):
        raise ValueError(f"height and width must be positive, got {height} and {width}")
    resized_width = math.ceil(height * (source[1] / float(source[0])))
    if width is not None and resized_width > width:
        resized_width = width
    target_width = resized_width if width is None else width
    resized = (height, resized_width)
    transform = ImageTransform(source, _scaled(source, resized), (0.0, 0.0), (height, target_width))
    return Placement(resized, Padding(right=target_width - resized_width), None, transform)


def resize_limit_side(
    source: Size,
    limit_side_len: int = 736,
    limit_type: Literal["min", "max"] = "min",
    *,
    multiple: int = 32,
) -> Placement:
    """PaddleOCR DB detectors: limit one side, then round both to a multiple of 32.

    rapidocr's ``DetPreProcess.resize``: with ``limit_type="min"`` a shorter side below
    ``limit_side_len`` is scaled up to it; with ``"max"`` a longer side above it is scaled down to
    it; otherwise the ratio is 1. Each side becomes ``int(side * ratio)``, then
    ``round(side / 32) * 32`` (Python rounding). rapidocr picks ``limit_side_len`` 960, 1500 or
    2000 from the longer side when ``limit_type`` is ``"max"``; pass the one you want.
    """
    height, width = _checked(source)
    if limit_type not in ("min", "max"):
        raise ValueError(f"limit_type must be 'min' or 'max', got {limit_type!r}")
    limit = float(limit_side_len)
    ratio = 1.0
    if limit_type == "max":
        if max(height, width) > limit_side_len:
            ratio = limit / height if height > width else limit / width
    elif min(height, width) < limit_side_len:
        ratio = limit / height if height < width else limit / width
    resized_height = int(round(int(height * ratio) / multiple) * multiple)
    resized_width = int(round(int(width * ratio) / multiple) * multiple)
    if resized_height <= 0 or resized_width <= 0:
        raise InputError(
            f"an image of {height}x{width} pixels (height x width) rounds to "
            f"{resized_height}x{resized_width} at limit_side_len {limit_side_len} ({limit_type})",
            f"send a larger image, or use limit_type 'min' so short sides are scaled up to "
            f"{limit_side_len}",
        )
    resized = (resized_height, resized_width)
    transform = ImageTransform(
        (height, width), _scaled((height, width), resized), (0.0, 0.0), resized
    )
    return Placement(resized, Padding(), None, transform)
