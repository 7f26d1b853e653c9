"""Image preprocessing against a hand-written Pillow + numpy reference, on real photos.

The reference below is written the way the steps are documented, straightforwardly and in float64;
it shares no code with gpux.pipeline.image.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from gpux.config.pipeline import ImageInput
from gpux.errors import ConfigValidationError, InputError
from gpux.pipeline.image import ImagePreprocessor, decode_image
from gpux.runtime.tensors import TensorSignature
from tools import zoo

MEAN = {
    "imagenet": [0.485, 0.456, 0.406],
    "[0,1]": [0.0],
    "[-1,1]": [0.5],
    "none": [0.0],
}
STD = {
    "imagenet": [0.229, 0.224, 0.225],
    "[0,1]": [1.0],
    "[-1,1]": [0.5],
    "none": [1.0],
}


@pytest.fixture(scope="module")
def chelsea() -> Path:
    return zoo.fetch("chelsea.png")  # 451x300 RGB photo


@pytest.fixture(scope="module")
def page() -> Path:
    return zoo.fetch("page.png")  # 384x191 grey scan


@pytest.fixture(scope="module")
def rotated_jpeg() -> bytes:
    """120 wide x 80 high as stored, tagged 'rotate 90 clockwise': shown 80 wide x 120 high."""
    y, x = np.mgrid[0:80, 0:120]
    pixels = np.stack([x * 2, y * 3, (x + y) % 256], axis=-1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------- reference
def reference(data: bytes, options: dict[str, Any]) -> np.ndarray:
    """One image, preprocessed by hand: the documented steps, float64 arithmetic."""
    image = Image.open(io.BytesIO(data))
    if options.get("orientation", True):
        image = ImageOps.exif_transpose(image)
    color = options.get("color", "RGB")
    image = image.convert("L" if color == "L" else "RGB")
    resample = getattr(Image.Resampling, options.get("interpolation", "bilinear").upper())
    width, height = image.size
    if "letterbox" in options:
        box_height, box_width = options["letterbox"]["size"]
        scale = min(box_height / height, box_width / width)
        new_width, new_height = round(width * scale), round(height * scale)
        fitted = image.resize((new_width, new_height), resample)
        fill = options["letterbox"].get("fill", 114)
        image = Image.new(
            image.mode, (box_width, box_height), fill if color == "L" else (fill,) * 3
        )
        image.paste(fitted, ((box_width - new_width) // 2, (box_height - new_height) // 2))
    elif "resize" in options:
        resize = options["resize"]
        if isinstance(resize, int):  # the GPUXfile's shorthands
            resize = {"shorter_side": resize}
        elif isinstance(resize, list):
            resize = {"size": resize}
        if "size" in resize:
            new_height, new_width = resize["size"]
        elif "shorter_side" in resize:
            factor = resize["shorter_side"] / min(width, height)
            new_width, new_height = round(width * factor), round(height * factor)
        else:
            factor = resize["longer_side"] / max(width, height)
            new_width, new_height = round(width * factor), round(height * factor)
        multiple = resize.get("multiple_of", 1)
        new_width = max(multiple, round(new_width / multiple) * multiple)
        new_height = max(multiple, round(new_height / multiple) * multiple)
        image = image.resize((new_width, new_height), resample)
    elif "model_size" in options:
        model_height, model_width = options["model_size"]
        image = image.resize((model_width, model_height), resample)
    if "crop" in options:
        crop_height, crop_width = options["crop"]
        left = round((image.width - crop_width) / 2)
        top = round((image.height - crop_height) / 2)
        image = image.crop((left, top, left + crop_width, top + crop_height))

    dtype = options.get("dtype", "float32")
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if dtype == "uint8":
        result = pixels.copy()
    else:
        normalize = options.get("normalize", "[0,1]")
        if isinstance(normalize, str):
            scale = 1.0 if normalize == "none" else 1 / 255
            mean, std = MEAN[normalize], STD[normalize]
        else:
            scale, mean, std = normalize["scale"], normalize["mean"], normalize["std"]
        result = (pixels.astype(np.float64) * scale - np.array(mean)) / np.array(std)
    if color == "BGR":
        result = result[:, :, ::-1]
    if options.get("layout", "NCHW") == "NCHW":
        result = result.transpose(2, 0, 1)
    return result


def target_for(options: dict[str, Any]) -> TensorSignature:
    channels = 1 if options.get("color") == "L" else 3
    height, width = options.get("model_size", ("height", "width"))
    if options.get("layout", "NCHW") == "NCHW":
        return TensorSignature(
            "pixels", options.get("dtype", "float32"), ["batch", channels, height, width]
        )
    return TensorSignature(
        "pixels", options.get("dtype", "float32"), ["batch", height, width, channels]
    )


def preprocessor(options: dict[str, Any]) -> ImagePreprocessor:
    spec = ImageInput.model_validate({k: v for k, v in options.items() if k != "model_size"})
    return ImagePreprocessor(spec, "photo", target_for(options))


def assert_matches_reference(actual: np.ndarray, expected: np.ndarray, dtype: str) -> None:
    assert actual.shape == expected.shape
    if dtype == "uint8":
        np.testing.assert_array_equal(actual, expected)
        return
    if dtype == "float16":
        # float16 has 11 significant bits: the float32 result, then one more rounding.
        np.testing.assert_allclose(actual, expected, rtol=2**-10, atol=2**-14)
        return
    # x * (scale/std) + (-mean/std) in float32 rounds a and b once and the product and the sum
    # once each: a few float32 ulps off the float64 reference, i.e. ~1e-7 relative.
    atol = 1e-6 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


CROP = {"resize": {"shorter_side": 256}, "crop": [224, 224]}
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "rgb-shorter+crop-imagenet": ("chelsea", {**CROP, "normalize": "imagenet"}),
    "bgr-shorter+crop-imagenet": ("chelsea", {**CROP, "normalize": "imagenet", "color": "BGR"}),
    "grey-from-rgb": ("chelsea", {**CROP, "color": "L", "normalize": "[0,1]"}),
    "grey-scan-nonsquare-crop": (
        "page",
        {"color": "L", "resize": {"shorter_side": 100}, "crop": [96, 160]},
    ),
    "grey-scan-as-rgb": ("page", {"resize": [128, 256], "normalize": "[-1,1]"}),
    # margins of 39 and 67 pixels: Pillow-style rounding puts 20 and 34 on the top and left
    "crop-odd-margins": ("chelsea", {"resize": [103, 131], "crop": [64, 64]}),
    "exact-size-symmetric": ("chelsea", {"resize": {"size": [200, 300]}, "normalize": "[-1,1]"}),
    "longer+multiple_of-nhwc": (
        "chelsea",
        {"resize": {"longer_side": 333, "multiple_of": 32}, "layout": "NHWC", "normalize": "none"},
    ),
    "shorter+multiple_of-grey-scan": (
        "page",
        {"resize": {"shorter_side": 70, "multiple_of": 32}, "color": "L"},
    ),
    "letterbox-square": ("chelsea", {"letterbox": {"size": [320, 320]}}),
    "letterbox-grey-wide-fill0": (
        "page",
        {"letterbox": {"size": [160, 480], "fill": 0}, "color": "L"},
    ),
    "letterbox-bgr-nhwc": (
        "chelsea",
        {"letterbox": {"size": [256, 192]}, "color": "BGR", "layout": "NHWC"},
    ),
    "caffe-mean-bgr": (
        "chelsea",
        {
            **CROP,
            "color": "BGR",
            "normalize": {"scale": 1, "mean": [123.68, 116.78, 103.94], "std": [1]},
        },
    ),
    "explicit-mean-std": (
        "chelsea",
        {
            **CROP,
            "normalize": {
                "scale": 1,
                "mean": [123.675, 116.28, 103.53],
                "std": [58.395, 57.12, 57.375],
            },
        },
    ),
    "float16-nchw": ("chelsea", {**CROP, "normalize": "imagenet", "dtype": "float16"}),
    "float16-nhwc-bgr": (
        "chelsea",
        {**CROP, "normalize": "[-1,1]", "dtype": "float16", "layout": "NHWC", "color": "BGR"},
    ),
    "uint8-nhwc-letterbox": (
        "chelsea",
        {
            "letterbox": {"size": [300, 300]},
            "dtype": "uint8",
            "normalize": "none",
            "layout": "NHWC",
        },
    ),
    "uint8-nchw-bgr": (
        "chelsea",
        {"resize": [96, 128], "dtype": "uint8", "normalize": "none", "color": "BGR"},
    ),
    "model-size-default": ("chelsea", {"model_size": (224, 224), "normalize": "imagenet"}),
    "model-size-default-nhwc-grey": (
        "page",
        {"model_size": (64, 200), "layout": "NHWC", "color": "L"},
    ),
    "native-size": ("page", {"normalize": "[0,1]"}),
    "exif-rotated": ("rotated", {"resize": {"shorter_side": 60}, "crop": [72, 48]}),
    "exif-ignored": ("rotated", {"orientation": False, "resize": [40, 50]}),
    "exif-letterbox-grey": ("rotated", {"letterbox": {"size": [64, 64]}, "color": "L"}),
}
for filter_name in ["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]:
    CASES[f"interpolation-{filter_name}"] = (
        "chelsea",
        {"resize": [123, 157], "interpolation": filter_name, "normalize": "imagenet"},
    )


@pytest.fixture(scope="module")
def image_bytes(chelsea: Path, page: Path, rotated_jpeg: bytes) -> dict[str, bytes]:
    return {"chelsea": chelsea.read_bytes(), "page": page.read_bytes(), "rotated": rotated_jpeg}


@pytest.mark.zoo
@pytest.mark.parametrize("case", list(CASES))
def test_matches_a_hand_written_pillow_numpy_pipeline(
    case: str, image_bytes: dict[str, bytes]
) -> None:
    image_name, options = CASES[case]
    data = image_bytes[image_name]
    dtype = options.get("dtype", "float32")
    expected = reference(data, options)

    prepare = preprocessor(options)
    prepare.check()
    batch = prepare([data, data])
    assert batch.dtype == np.dtype(dtype)
    assert batch.shape == (2, *expected.shape)
    assert_matches_reference(batch[0], expected, dtype)
    np.testing.assert_array_equal(batch[1], batch[0])
    np.testing.assert_array_equal(prepare.one(data), batch[0])

    height, width = prepare.output_size()
    spatial = expected.shape[1:] if options.get("layout", "NCHW") == "NCHW" else expected.shape[:2]
    assert height in (None, spatial[0])
    assert width in (None, spatial[1])

    if dtype == "float16":  # exactly the float32 result, cast once
        as_float32 = preprocessor({**options, "dtype": "float32"}).one(data)
        np.testing.assert_array_equal(batch[0], as_float32.astype(np.float16))


def test_exif_orientation_turns_the_photo_upright(rotated_jpeg: bytes) -> None:
    target = TensorSignature("pixels", "uint8", ["batch", "height", "width", 3])
    upright = ImagePreprocessor(
        ImageInput.model_validate({"dtype": "uint8", "normalize": "none", "layout": "NHWC"}),
        "photo",
        target,
    ).one(rotated_jpeg)
    assert upright.shape == (120, 80, 3)
    stored = ImagePreprocessor(
        ImageInput.model_validate(
            {"dtype": "uint8", "normalize": "none", "layout": "NHWC", "orientation": False}
        ),
        "photo",
        target,
    ).one(rotated_jpeg)
    assert stored.shape == (80, 120, 3)
    # Orientation 6 is shown turned 90 degrees clockwise: the stored image's left column is the
    # displayed top row. JPEG is lossy, so compare loosely.
    difference = upright[0, :, :].astype(int) - stored[::-1, 0, :].astype(int)
    assert np.abs(difference).mean() < 3


# --------------------------------------------------------------------------------------- inputs
@pytest.mark.zoo
def test_every_input_form_gives_the_same_tensor(chelsea: Path) -> None:
    data = chelsea.read_bytes()
    text = base64.b64encode(data).decode()
    pixels = np.asarray(Image.open(chelsea).convert("RGB"))
    forms: dict[str, Any] = {
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "path": chelsea,
        "str path": str(chelsea),
        "base64": text,
        "base64 with line breaks": "\n".join(text[i : i + 76] for i in range(0, len(text), 76)),
        "url-safe base64 unpadded": base64.urlsafe_b64encode(data).decode().rstrip("="),
        "data URL": "data:image/png;base64," + text,
        "PIL image": Image.open(chelsea),
        "numpy RGB": pixels,
        "numpy RGBA": np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)]),
    }
    prepare = preprocessor({**CROP, "normalize": "imagenet"})
    expected = prepare.one(data)
    for form, value in forms.items():
        np.testing.assert_array_equal(prepare.one(value), expected, err_msg=form)
    batch = prepare(list(forms.values()))
    assert batch.shape == (len(forms), 3, 224, 224)
    np.testing.assert_array_equal(batch, np.broadcast_to(expected, batch.shape))


@pytest.mark.zoo
@pytest.mark.parametrize("file_format", ["PNG", "JPEG", "WEBP"])
def test_common_formats_decode_like_pillow(file_format: str, chelsea: Path, tmp_path: Path) -> None:
    path = tmp_path / f"chelsea.{file_format.lower()}"
    Image.open(chelsea).save(path, file_format)
    decoded = decode_image(path, "photo")
    np.testing.assert_array_equal(
        np.asarray(decoded.convert("RGB")), np.asarray(Image.open(path).convert("RGB"))
    )
    assert decoded.size == (451, 300)


def test_alpha_is_dropped_and_grey_arrays_are_one_channel() -> None:
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 200  # red under fully transparent pixels: kept, not composited
    target = TensorSignature("pixels", "uint8", ["batch", "height", "width", 3])
    options = {"dtype": "uint8", "normalize": "none", "layout": "NHWC"}
    out = ImagePreprocessor(ImageInput.model_validate(options), "photo", target).one(rgba)
    assert out.shape == (4, 6, 3)
    assert (out[..., 0] == 200).all() and (out[..., 1:] == 0).all()

    grey_target = TensorSignature("pixels", "float32", ["batch", 1, "height", "width"])
    grey = ImagePreprocessor(ImageInput.model_validate({"color": "L"}), "photo", grey_target)
    assert grey.one(np.full((5, 7), 51, np.uint8)).shape == (1, 5, 7)
    np.testing.assert_allclose(grey.one(np.full((5, 7), 51, np.uint8)), 0.2, rtol=1e-6)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "depth.png"
    Image.fromarray(np.array([[0, 257 * 100, 65535]], np.uint16)).save(path)
    target = TensorSignature("pixels", "uint8", ["batch", 1, "height", "width"])
    spec = ImageInput.model_validate({"color": "L", "dtype": "uint8", "normalize": "none"})
    out = ImagePreprocessor(spec, "photo", target).one(path)
    assert out.ravel().tolist() == [0, 100, 255]


# --------------------------------------------------------------------------------------- errors
def raises_input_error(call: Any, *fragments: str) -> InputError:
    with pytest.raises(InputError) as info:
        call()
    error = info.value
    assert "input 'photo'" in error.message
    assert error.hint
    for fragment in fragments:
        assert fragment in str(error), str(error)
    return error


@pytest.mark.zoo
def test_unreadable_inputs_are_input_errors(chelsea: Path, tmp_path: Path) -> None:
    jpeg = io.BytesIO()
    Image.open(chelsea).save(jpeg, "JPEG")
    truncated = jpeg.getvalue()[: len(jpeg.getvalue()) // 2]

    def decode(value: Any) -> Any:
        return lambda: decode_image(value, "photo")

    raises_input_error(decode(b"definitely not an image"), "cannot read the bytes as an image")
    raises_input_error(decode(truncated), "cannot read the bytes as an image", "truncated")
    truncated_file = tmp_path / "cut.jpg"
    truncated_file.write_bytes(truncated)
    raises_input_error(decode(truncated_file), "cannot read", "cut.jpg")
    raises_input_error(decode(b""), "empty")
    raises_input_error(decode(tmp_path / "missing.jpg"), "missing.jpg", "does not exist")
    raises_input_error(decode(str(tmp_path / "missing.jpg")), "missing.jpg", "does not exist")
    raises_input_error(decode(tmp_path), "is not a file")
    raises_input_error(decode(str(tmp_path)), "is not a file")
    raises_input_error(decode("/photos/cat"), "file '/photos/cat' does not exist")  # base64 too
    raises_input_error(decode("data:image/png;base64,@@not base64@@"), "not valid base64")
    raises_input_error(decode("data:image/png,rawtext"), "data URL must carry base64")
    raises_input_error(decode(base64.b64encode(b"hello, world" * 30).decode()), "base64 data")
    raises_input_error(decode(np.zeros((4, 4), np.float32)), "uint8")
    raises_input_error(decode(np.zeros((4, 4, 2), np.uint8)), "HxW")
    raises_input_error(decode(12), "int")


def test_files_can_be_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path)
    raises_input_error(lambda: decode_image(path, "photo", allow_files=False), "file paths")
    raises_input_error(lambda: decode_image(str(path), "photo", allow_files=False), "base64")
    spec = ImageInput.model_validate({})
    target = TensorSignature("pixels", "float32", ["batch", 3, "height", "width"])
    prepare = ImagePreprocessor(spec, "photo", target, allow_files=False)
    raises_input_error(lambda: prepare([str(path)]), "base64")
    assert prepare([path.read_bytes()]).shape == (1, 3, 4, 4)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bombs_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    Image.new("L", (100, 100)).save(buffer, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # warning range: 6000 < 10000 < 12000
    raises_input_error(lambda: decode_image(buffer.getvalue(), "photo"), "too many pixels")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own error range
    raises_input_error(lambda: decode_image(buffer.getvalue(), "photo"), "too many pixels")


@pytest.mark.zoo
def test_crop_larger_than_the_image_says_to_resize_first(page: Path) -> None:
    prepare = preprocessor({"crop": [224, 224]})
    error = raises_input_error(lambda: prepare([page]), "crop [224, 224]", "[191, 384]")
    assert error.hint == "resize first (resize: {shorter_side: 224})"


@pytest.mark.zoo
def test_images_of_different_sizes_cannot_share_a_batch(chelsea: Path, page: Path) -> None:
    prepare = preprocessor({})
    raises_input_error(lambda: prepare([chelsea, page]), "different sizes", "300x451", "191x384")
    assert prepare([page]).shape == (1, 3, 191, 384)  # a batch of one always works
    assert prepare(page).shape == (1, 3, 191, 384)  # and so does a lone value
    grey = np.asarray(Image.open(page))
    assert prepare(grey).shape == (1, 3, 191, 384)  # an array is one image, not rows
    assert prepare(np.stack([grey, grey])[..., None]).shape == (2, 3, 191, 384)  # unless it is 4-D
    same_size = preprocessor({"resize": [64, 64]})
    assert same_size([chelsea, page]).shape == (2, 3, 64, 64)


# ------------------------------------------------------------------------------------- check()
def check_error(options: dict[str, Any], shape: list[Any], dtype: str = "float32") -> str:
    spec = ImageInput.model_validate(options)
    with pytest.raises(ConfigValidationError) as info:
        ImagePreprocessor(spec, "photo", TensorSignature("pixels", dtype, shape)).check()
    assert "input 'photo'" in info.value.message
    assert info.value.hint
    return str(info.value)


def test_check_refuses_what_cannot_fit_the_model() -> None:
    model = [1, 3, 224, 224]
    text = check_error({**CROP, "crop": [256, 256], "resize": 256}, model)
    assert "256x256" in text and "224x224" in text and "set crop: [224, 224]" in text
    text = check_error({"color": "L"}, model)
    assert "1 channel" in text and "takes 3" in text and "color: RGB" in text
    assert "color: L" in check_error({}, [1, 1, 224, 224])
    assert "layout: NHWC" in check_error({}, [1, 224, 224, 3])
    assert "4 dimensions" in check_error({}, [1, 150528])
    assert "depends on each image" in check_error({"resize": 256}, model)
    assert "set letterbox: {size: [224, 224]}" in check_error(
        {"letterbox": {"size": [320, 320]}}, model
    )
    assert "set dtype: float16" in check_error({}, model, dtype="float16")
    assert "larger than every resized image" in check_error(
        {"resize": 200, "crop": [224, 224]}, ["n", 3, "h", "w"]
    )
    assert "larger than every resized image" in check_error(
        {"resize": [100, 300], "crop": [224, 224]}, ["n", 3, "h", "w"]
    )


def test_grey_with_three_means_is_refused_at_construction() -> None:
    spec = ImageInput.model_validate({"color": "L", "normalize": "imagenet"})
    target = TensorSignature("pixels", "float32", ["n", 1, "h", "w"])
    with pytest.raises(ConfigValidationError, match="color L gives 1 channel"):
        ImagePreprocessor(spec, "photo", target)


def test_check_accepts_what_fits() -> None:
    fits = [
        ({**CROP}, [1, 3, 224, 224]),
        ({}, ["batch", 3, 224, 224]),  # resized to the model's size by default
        ({"resize": 256}, ["batch", 3, "height", "width"]),
        ({"resize": {"size": [200, 300], "multiple_of": 32}}, ["batch", 3, 192, 288]),
        ({"letterbox": {"size": [640, 640]}, "layout": "NHWC"}, [1, 640, 640, 3]),
        ({"color": "L", "dtype": "uint8", "normalize": "none"}, [1, 1, 32, 32]),
        ({}, None),
    ]
    for options, shape in fits:
        spec = ImageInput.model_validate(options)
        prepare = ImagePreprocessor(spec, "photo", TensorSignature("pixels", spec.dtype, shape))
        prepare.check()


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 400),
    height=st.integers(1, 400),
    crop=st.tuples(st.integers(1, 64), st.integers(1, 64)),
    extra=st.integers(0, 40),
    multiple=st.sampled_from([1, 8]),
)
def test_shorter_side_then_crop_always_gives_the_crop_size(
    width: int, height: int, crop: tuple[int, int], extra: int, multiple: int
) -> None:
    shorter_side = max(crop) + extra
    shorter_side = -(-shorter_side // multiple) * multiple  # rounded up: the crop always fits
    options = {
        "resize": {"shorter_side": shorter_side, "multiple_of": multiple},
        "crop": list(crop),
    }
    out = preprocessor(options).one(Image.new("RGB", (width, height), (10, 20, 30)))
    assert out.shape == (3, *crop)
