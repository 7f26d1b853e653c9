"""gpux.pipeline.geometry against the code the model authors ship, and against real pixels.

Sizes and pads are compared with ultralytics' ``LetterBox`` (rewritten below from
``ultralytics/data/augment.py``) and rapidocr's own preprocessing (imported from its pinned wheel).
Mappings are checked on pixels: a rectangle drawn in an original image is carried through
``cv2.resize`` and ``cv2.copyMakeBorder`` (or a crop) with the recorded placement, found again in the
result, and mapped back.
"""

# The reference code is transcribed as its authors wrote it, int(round(...)) included.
# ruff: noqa: RUF046

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpux.errors import InputError
from gpux.pipeline.geometry import (
    ImageTransform,
    Placement,
    center_crop,
    letterbox,
    resize,
    resize_limit_side,
    resize_to_height,
)
from tools import zoo

Array = np.ndarray[Any, Any]

# (height, width) of originals: odd, tall, wide, smaller and larger than the targets.
SOURCES = [(481, 641), (640, 427), (1000, 301), (301, 1000), (37, 53), (640, 640), (719, 1279)]
TARGETS = [(640, 640), (320, 320), (384, 640), (640, 384)]


def ultralytics_letterbox(
    shape: tuple[int, int], new_shape: tuple[int, int], center: bool, scaleup: bool = True
) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """ultralytics.data.augment.LetterBox (auto=False, scale_fill=False): new_unpad (w, h) and
    (top, bottom, left, right)."""
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if center:
        dw /= 2
        dh /= 2
    top, bottom = int(round(dh - 0.1)) if center else 0, int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)) if center else 0, int(round(dw + 0.1))
    return new_unpad, (top, bottom, left, right)


def drawn(height: int, width: int, box: tuple[int, int, int, int]) -> Array:
    """A black image with the pixels [x0, x1) x [y0, y1) white."""
    image = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 255
    return image


def located(image: Array) -> Array:
    """The continuous extent [x0, y0, x1, y1] of the pixels at least half white."""
    rows = np.flatnonzero((image >= 128).any(axis=1))
    columns = np.flatnonzero((image >= 128).any(axis=0))
    assert rows.size and columns.size, "the rectangle vanished"
    return np.array([columns[0], rows[0], columns[-1] + 1, rows[-1] + 1], dtype=np.float64)


def a_box_in(height: int, width: int) -> tuple[int, int, int, int]:
    """A rectangle near the centre (so a centre crop keeps it), off-centre, a few pixels wide."""
    x0, y0 = 2 * width // 5, 3 * height // 8
    return (x0, y0, x0 + max(4, width // 6), y0 + max(4, height // 5))


def carried(image: Array, placement: Placement) -> Array:
    """The image placed as ``placement`` says, the way ultralytics and torchvision do it."""
    height, width = placement.resized
    result = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    top, bottom, left, right = placement.padding
    if top or bottom or left or right:
        result = cv2.copyMakeBorder(
            result, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114)
        )
    if placement.crop is not None:
        crop = placement.crop
        result = result[crop.top : crop.top + crop.height, crop.left : crop.left + crop.width]
    return result


def check_round_trip(source: tuple[int, int], placement: Placement) -> None:
    box = a_box_in(*source)
    result = carried(drawn(*source, box), placement)
    assert result.shape == placement.transform.target
    found = located(np.where(result == 114, 0, result))  # padding is grey, not rectangle
    expected = placement.transform.to_target(np.array(box, dtype=np.float64).reshape(2, 2))
    np.testing.assert_allclose(found, expected.reshape(4), atol=1.0)
    # Found to within one model-input pixel, which covers 1 / scale original pixels when the
    # image was shrunk: that is the most mapping back can recover.
    back = placement.transform.boxes_to_source(found[None])[0]
    step = 1.0 / np.array(placement.transform.scale)[[1, 0, 1, 0]]
    assert np.all(np.abs(back - box) <= np.maximum(1.0, step) + 1e-9), (back, box)


# ------------------------------------------------------------------------------ letterbox
@pytest.mark.parametrize("anchor", ["center", "top-left"])
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("source", SOURCES)
def test_letterbox_pads_as_ultralytics(
    source: tuple[int, int], target: tuple[int, int], anchor: str
) -> None:
    for scale_up in (True, False):
        placement = letterbox(source, target, anchor=anchor, scale_up=scale_up)  # type: ignore[arg-type]
        new_unpad, pads = ultralytics_letterbox(source, target, anchor == "center", scale_up)
        assert placement.resized == (new_unpad[1], new_unpad[0])
        assert tuple(placement.padding) == pads
        assert placement.crop is None
        top, bottom, left, right = pads
        assert new_unpad[1] + top + bottom == target[0]
        assert new_unpad[0] + left + right == target[1]
        assert placement.transform.offset == (top, left)


@pytest.mark.parametrize("anchor", ["center", "top-left"])
@pytest.mark.parametrize(
    ("source", "target"),
    [((481, 641), (640, 640)), ((640, 427), (320, 320)), ((1000, 301), (640, 640)),
     ((301, 1000), (320, 320)), ((37, 53), (640, 384))],
)  # fmt: skip
def test_letterbox_maps_a_drawn_rectangle_back(
    source: tuple[int, int], target: tuple[int, int], anchor: str
) -> None:
    check_round_trip(source, letterbox(source, target, anchor=anchor))  # type: ignore[arg-type]


def test_letterbox_top_left_puts_all_padding_right_and_below() -> None:
    placement = letterbox((481, 641), (640, 640), anchor="top-left")
    assert placement.padding == (0, 160, 0, 0)
    assert placement.resized == (480, 640)


def test_letterbox_refuses_an_unknown_anchor() -> None:
    with pytest.raises(ValueError, match="anchor"):
        letterbox((10, 10), (20, 20), anchor="bottom")  # type: ignore[arg-type]


# ------------------------------------------------------------------- resize and centre crop
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("source", SOURCES)
def test_plain_resize_maps_a_drawn_rectangle_back(
    source: tuple[int, int], target: tuple[int, int]
) -> None:
    placement = resize(source, target)
    assert placement.resized == target and placement.padding == (0, 0, 0, 0)
    check_round_trip(source, placement)


@pytest.mark.parametrize(
    ("source", "resized", "crop"),
    [((481, 641), (256, 341), (224, 224)), ((640, 427), (384, 256), (224, 224)),
     ((300, 451), (257, 385), (223, 225)), ((500, 500), (256, 256), (256, 256))],
)  # fmt: skip
def test_center_crop_maps_a_drawn_rectangle_back(
    source: tuple[int, int], resized: tuple[int, int], crop: tuple[int, int]
) -> None:
    placement = center_crop(source, resized, crop)
    assert placement.crop is not None
    # torchvision's CenterCrop: crop_top = int(round((image_height - crop_height) / 2.0))
    assert placement.crop.top == int(round((resized[0] - crop[0]) / 2.0))
    assert placement.crop.left == int(round((resized[1] - crop[1]) / 2.0))
    check_round_trip(source, placement)


def test_center_crop_larger_than_the_image_is_refused() -> None:
    with pytest.raises(InputError, match="larger than the resized image"):
        center_crop((100, 100), (100, 100), (101, 50))


# ------------------------------------------------------------------------- PaddleOCR sizes
@pytest.fixture(scope="module")
def rapidocr() -> Any:
    sys.path.insert(0, str(zoo.package("rapidocr_onnxruntime")))
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess
    from rapidocr_onnxruntime.ch_ppocr_rec.text_recognize import TextRecognizer

    return SimpleNamespace(det=DetPreProcess, rec=TextRecognizer)


@pytest.mark.zoo
@pytest.mark.parametrize("limit_type", ["min", "max"])
@pytest.mark.parametrize("limit_side_len", [736, 960, 64])
@pytest.mark.parametrize(
    "source", [*SOURCES, (17, 2000), (2000, 17), (40, 40), (25, 81), (118, 27)]
)
def test_limit_side_resize_as_rapidocr(
    rapidocr: Any, source: tuple[int, int], limit_side_len: int, limit_type: str
) -> None:
    image = np.zeros((*source, 3), dtype=np.uint8)
    try:
        resized = rapidocr.det(limit_side_len, limit_type).resize(image)
    except Exception:  # rapidocr raises on a size rounding to 0 (cv2.resize refuses it)
        resized = None
    if resized is None:
        with pytest.raises(InputError, match="rounds to"):
            resize_limit_side(source, limit_side_len, limit_type)  # type: ignore[arg-type]
        return
    placement = resize_limit_side(source, limit_side_len, limit_type)  # type: ignore[arg-type]
    assert placement.resized == resized.shape[:2]
    assert placement.transform.target == resized.shape[:2]
    height, width = placement.resized
    # DB's own mapping back: x / width * dest_width.
    assert placement.transform.to_source(np.array([width, height]))[0] == pytest.approx(source[1])


@pytest.mark.zoo
@pytest.mark.parametrize("max_wh_ratio", [320 / 48, 10.0, 1.0])
@pytest.mark.parametrize("source", [(32, 100), (48, 641), (20, 999), (60, 31), (33, 330)])
def test_recogniser_resize_as_rapidocr(
    rapidocr: Any, source: tuple[int, int], max_wh_ratio: float
) -> None:
    recogniser = SimpleNamespace(rec_image_shape=[3, 48, 320])
    white = np.full((*source, 3), 255, dtype=np.uint8)  # normalises to 1.0; padding stays 0.0
    tensor = rapidocr.rec.resize_norm_img(recogniser, white, max_wh_ratio)
    filled = int(np.count_nonzero(tensor[0, 24] == 1.0))
    placement = resize_to_height(source, 48, width=int(48 * max_wh_ratio))
    assert placement.transform.target == tensor.shape[1:]
    assert placement.resized == (48, filled)
    assert placement.padding == (0, 0, 0, tensor.shape[2] - filled)


def test_recogniser_resize_without_a_width_pads_nothing() -> None:
    placement = resize_to_height((33, 100), 48)
    assert placement.resized == (48, 146)  # ceil(48 * 100 / 33) = ceil(145.45)
    assert placement.transform.target == (48, 146)
    assert placement.padding == (0, 0, 0, 0)


# ------------------------------------------------------------------------ ImageTransform
@settings(max_examples=200, deadline=None)
@given(
    source=st.tuples(st.integers(1, 4000), st.integers(1, 4000)),
    target=st.tuples(st.integers(1, 2000), st.integers(1, 2000)),
    points=st.lists(
        st.tuples(st.floats(-5000, 5000), st.floats(-5000, 5000)), min_size=1, max_size=8
    ),
    anchor=st.sampled_from(["center", "top-left"]),
)
def test_to_source_undoes_to_target(
    source: tuple[int, int],
    target: tuple[int, int],
    points: list[tuple[float, float]],
    anchor: str,
) -> None:
    transform = letterbox(source, target, anchor=anchor).transform  # type: ignore[arg-type]
    xy = np.array(points)
    np.testing.assert_allclose(transform.to_source(transform.to_target(xy)), xy, atol=1e-6)


def test_boxes_to_source_clips_to_the_photo() -> None:
    # 200 high x 400 wide into 400x400: scale 1, pad 100 above and below.
    transform = letterbox((200, 400), (400, 400)).transform
    boxes = np.array([[-10, 50, 120, 150], [10, 90, 390, 320], [0, 0, 400, 90]], dtype=np.float32)
    mapped = transform.boxes_to_source(boxes)
    np.testing.assert_allclose(
        mapped, [[0, 0, 120, 50], [10, 0, 390, 200], [0, 0, 400, 0]], atol=1e-9
    )


def test_transform_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="scale"):
        ImageTransform((10, 10), (0.0, 1.0), (0.0, 0.0), (10, 10))
    with pytest.raises(ValueError, match="positive"):
        ImageTransform((0, 10), (1.0, 1.0), (0.0, 0.0), (10, 10))
    transform = resize((10, 10), (20, 20)).transform
    with pytest.raises(ValueError, match=r"\[k, 4\]"):
        transform.boxes_to_source(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        transform.to_source(np.zeros((3, 3)))
