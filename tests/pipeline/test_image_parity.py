"""Image preprocessing declared in a GPUXfile gives the tensors the model authors' own code
gives: OpenCV's resizes, PaddleOCR's "limit the side, round to 32" (DB detectors) and "height 48,
keep the aspect ratio, pad the batch to its widest" (recognisers), as rapidocr 1.4.4 does them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from gpux.config.pipeline import ImageInput
from gpux.pipeline.image import ImagePreprocessor
from gpux.runtime.tensors import TensorSignature
from tools import zoo

pytestmark = [pytest.mark.zoo]

ANY_IMAGE = TensorSignature("x", "float32", ["batch", 3, "height", "width"])
# Text lines of page.png, (left, top, right, bottom), as rapidocr's detector finds them.
LINES = [(7, 12, 292, 33), (4, 47, 379, 66), (3, 63, 379, 86), (5, 114, 172, 140)]


def preprocessor(spec: dict[str, Any], target: TensorSignature = ANY_IMAGE) -> ImagePreprocessor:
    return ImagePreprocessor(ImageInput.model_validate(spec), "image", target)


def rapidocr() -> Any:
    folder = str(zoo.package("rapidocr_onnxruntime"))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import rapidocr_onnxruntime

    return rapidocr_onnxruntime


@pytest.fixture(scope="module")
def page(zoo_file: Callable[[str], Path]) -> np.ndarray:
    return np.asarray(Image.open(zoo_file("page.png")).convert("RGB"))


@pytest.fixture(scope="module")
def photo(zoo_file: Callable[[str], Path]) -> np.ndarray:
    return np.asarray(Image.open(zoo_file("chelsea.png")).convert("RGB"))


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic", "area"])
@pytest.mark.parametrize("size", [(224, 224), (97, 301), (600, 800)])
def test_opencv_interpolations_match_cv2_resize(
    photo: np.ndarray, mode: str, size: tuple[int, int]
) -> None:
    spec = {
        "resize": list(size),
        "interpolation": f"opencv-{mode}",
        "normalize": "none",
        "dtype": "uint8",
        "layout": "NHWC",
    }
    target = TensorSignature("x", "uint8", ["batch", "height", "width", 3])
    ours = preprocessor(spec, target)(photo)[0]
    flag = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR}.get(mode)
    flag = flag if flag is not None else getattr(cv2, f"INTER_{mode.upper()}")
    theirs = cv2.resize(photo, (size[1], size[0]), interpolation=flag)
    assert ours.shape == theirs.shape
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_limit_side_gives_rapidocrs_detector_tensor(page: np.ndarray) -> None:
    rapidocr()
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    spec = {
        "color": "BGR",
        "interpolation": "opencv-linear",
        "resize": {"limit_side": 736, "limit_type": "min", "multiple_of": 32},
        "normalize": "[-1,1]",
    }
    rotated = np.asarray(Image.fromarray(page).rotate(12, expand=True, fillcolor=(255,) * 3))
    for image in (page, rotated, page[:200, :150]):
        bgr = np.ascontiguousarray(image[:, :, ::-1])  # rapidocr reads images with cv2
        theirs = DetPreProcess(736, "min")(bgr)
        batch, (transform,) = preprocessor(spec).batch(image)
        assert batch.shape == theirs.shape
        np.testing.assert_allclose(batch, theirs, atol=1e-5)
        assert transform.target == theirs.shape[2:]
        assert transform.source == image.shape[:2]


def test_height_mode_gives_rapidocrs_recogniser_batch(page: np.ndarray) -> None:
    rapidocr()
    from rapidocr_onnxruntime.ch_ppocr_rec.text_recognize import TextRecognizer

    spec = {
        "color": "BGR",
        "interpolation": "opencv-linear",
        "resize": {"height": 48, "min_width": 320},
        "normalize": "[-1,1]",
    }
    crops = [page[top:bottom, left:right] for left, top, right, bottom in LINES]
    recogniser = TextRecognizer.__new__(TextRecognizer)  # only its preprocessing is used
    recogniser.rec_image_shape = [3, 48, 320]
    for batch in (crops, crops[3:], [crops[0][:, :40]]):
        ratio = max(320 / 48, *(c.shape[1] / c.shape[0] for c in batch))
        theirs = np.stack(
            [recogniser.resize_norm_img(np.ascontiguousarray(c[:, :, ::-1]), ratio) for c in batch]
        )
        ours, transforms = preprocessor(spec).batch(list(batch))
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
        assert {t.target for t in transforms} == {theirs.shape[2:]}


def ultralytics_letterbox(image: np.ndarray, size: int, center: bool) -> np.ndarray:
    """ultralytics' LetterBox (ultralytics/data/augment.py), as its authors letterbox."""
    height, width = image.shape[:2]
    ratio = min(size / height, size / width)
    unpadded = round(width * ratio), round(height * ratio)
    dw, dh = size - unpadded[0], size - unpadded[1]
    if center:
        dw, dh = dw / 2, dh / 2
    resized = cv2.resize(image, unpadded, interpolation=cv2.INTER_LINEAR)
    top, bottom = (round(dh - 0.1) if center else 0), round(dh + 0.1)
    left, right = (round(dw - 0.1) if center else 0), round(dw + 0.1)
    return cv2.copyMakeBorder(
        resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114,) * 3
    )


@pytest.mark.parametrize("anchor", ["center", "top-left"])
@pytest.mark.parametrize("crop", [(300, 451), (451, 300), (299, 301), (120, 481)])
def test_letterbox_matches_ultralytics_and_maps_back(
    photo: np.ndarray, anchor: str, crop: tuple[int, int]
) -> None:
    image = np.ascontiguousarray(np.resize(photo, (*crop, 3)))
    spec = {
        "letterbox": {"size": [320, 320], "anchor": anchor},
        "interpolation": "opencv-linear",
        "normalize": "none",
        "dtype": "uint8",
        "layout": "NHWC",
    }
    target = TensorSignature("x", "uint8", ["batch", 320, 320, 3])
    tensor, (transform,) = preprocessor(spec, target).batch(image)
    theirs = ultralytics_letterbox(image, 320, center=anchor == "center")
    assert tensor[0].shape == theirs.shape
    assert np.abs(tensor[0].astype(int) - theirs.astype(int)).max() <= 1
    # The photo's corners land on the edges of the pasted image, and map back exactly.
    corners = np.array([[0.0, 0.0], [crop[1], crop[0]]])
    there = transform.to_target(corners)
    inside = np.argwhere((theirs != 114).any(axis=2))
    (top, left), (bottom, right) = inside.min(axis=0), inside.max(axis=0) + 1
    np.testing.assert_allclose(there, [[left, top], [right, bottom]], atol=1)
    np.testing.assert_allclose(transform.to_source(there), corners, atol=1e-9)
