"""Images -> one tensor, as the GPUXfile's ``preprocess: - image: {...}`` declares.

Each image goes through, in this order::

    decode -> EXIF orientation -> RGB or L -> resize -> center crop | letterbox
           -> (pixels * scale - mean) / std -> BGR flip -> NCHW | NHWC -> dtype

Decoding and resampling are Pillow's (the same calls a user would write, so results match a
hand-written Pillow pipeline bit for bit), or OpenCV's resize rules (``opencv-*`` interpolations,
gpux/pipeline/cv_resize.py) for models whose authors resize with cv2; the arithmetic is numpy,
vectorised, written straight into the batch array. Where each image lands (resize, crop, padding)
comes from gpux/pipeline/geometry.py, which also records it so that decoders map boxes back to the
original pixels. Choices a user may need to know:

* Transparency is dropped, not composited: ``convert("RGB")`` keeps the colour stored under
  transparent pixels (what torchvision's and Hugging Face's loaders do).
* 16-bit grey images are scaled to 8 bits (value / 257), not clipped as Pillow's ``convert`` would.
* numpy arrays are read as RGB(A) or grey, uint8: flip OpenCV's BGR arrays before sending them.
* ``mean`` and ``std`` are listed in RGB order; ``color: BGR`` flips the channels after normalising.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gpux.config.pipeline import ColorOrder, ImageDType, ImageInput, Layout
from gpux.errors import ConfigValidationError, InputError, MixedSizesError
from gpux.pipeline import cv_resize, geometry
from gpux.pipeline.geometry import ImageTransform
from gpux.runtime.tensors import Dim, TensorSignature

_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_DECODE_HINT = "send a PNG, JPEG or WebP image: a file path, its bytes, base64 or a data: URL"
_ORIENTATION_TAG = 0x0112
_LONGEST_PATH = 4096  # longer strings are never tried as file names (base64 payloads are long)
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


# ------------------------------------------------------------------------------------- decode
def decode_image(value: Any, name: str, *, allow_files: bool = True) -> Image.Image:
    """A fully decoded Pillow image from what a user sent as input ``name``.

    Accepts file content (``bytes``, ``bytearray``, ``memoryview``), a path (``pathlib.Path`` or a
    string naming an existing file), base64 text or a ``data:image/...;base64,`` URL, a Pillow
    image, or a uint8 numpy array (HxW grey, HxWx3 RGB, HxWx4 RGBA). ``allow_files=False`` refuses
    paths: a server must not read its own files on a client's behalf.
    """
    if isinstance(value, Image.Image):
        return _load(value, name, "the image")
    if isinstance(value, np.ndarray):
        return _from_array(value, name)
    if isinstance(value, bytes | bytearray | memoryview):
        return _open_bytes(bytes(value), name, "the bytes")
    if isinstance(value, Path):
        if not allow_files:
            raise InputError(
                f"input '{name}': file paths are not accepted here",
                "send the image's bytes or base64 instead",
            )
        return _open_file(value.expanduser(), name)
    if isinstance(value, str):
        return _from_text(value, name, allow_files)
    raise InputError(
        f"input '{name}': cannot read a {type(value).__name__} as an image", _DECODE_HINT
    )


def _from_text(text: str, name: str, allow_files: bool) -> Image.Image:
    if text.startswith("data:"):
        header, comma, payload = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise InputError(
                f"input '{name}': a data URL must carry base64 data",
                "write it as data:image/png;base64,<data>",
            )
        return _open_bytes(_base64(payload, name, "the data URL"), name, "the data URL")
    maybe_path = allow_files and len(text) < _LONGEST_PATH
    if maybe_path and os.path.exists(os.path.expanduser(text)):
        return _open_file(Path(text).expanduser(), name)
    missing = InputError(
        f"input '{name}': file '{_shorten(text)}' does not exist (nor is the string base64 "
        "of an image)",
        "give the path of an existing image file, base64 data or a data: URL",
    )
    try:
        data = _base64_strict(text)
    except ValueError:
        if not allow_files:
            raise InputError(
                f"input '{name}': the string is not valid base64 image data",
                "send base64 (or a data: URL) of a PNG, JPEG or WebP file",
            ) from None
        raise missing from None
    try:
        return _open_bytes(data, name, "the base64 data")
    except InputError:
        # "/photos/cat" is valid base64 too: a short string was more likely meant as a path.
        if maybe_path and len(text) < 256:
            raise missing from None
        raise


def _shorten(text: str) -> str:
    # The end of a long path names the file; the end of long base64 is as good as its start.
    return text if len(text) <= 80 else "..." + text[-77:]


def _base64_strict(text: str) -> bytes:
    compact = "".join(text.split())
    compact += "=" * (-len(compact) % 4)
    url_safe = "-" in compact or "_" in compact
    return base64.b64decode(compact, altchars=b"-_" if url_safe else None, validate=True)


def _base64(text: str, name: str, what: str) -> bytes:
    try:
        return _base64_strict(text)
    except ValueError as error:  # binascii.Error, or non-ASCII text
        raise InputError(
            f"input '{name}': {what} is not valid base64 ({error})",
            "encode the file's bytes with standard base64",
        ) from None


def _open_file(path: Path, name: str) -> Image.Image:
    if not path.exists():
        raise InputError(
            f"input '{name}': file '{path}' does not exist",
            "give the path of an existing image file",
        )
    if not path.is_file():
        raise InputError(f"input '{name}': '{path}' is not a file", "give an image file's path")
    try:
        with path.open("rb") as stream:
            return _open_stream(stream, name, f"'{path}'")
    except OSError as error:
        raise InputError(
            f"input '{name}': cannot read '{path}' ({error.strerror or error})",
            "check that the file is readable",
        ) from None


def _open_bytes(data: bytes, name: str, what: str) -> Image.Image:
    if not data:
        raise InputError(f"input '{name}': {what} are empty (0 bytes)", _DECODE_HINT)
    return _open_stream(io.BytesIO(data), name, what)


def _open_stream(stream: IO[bytes], name: str, what: str) -> Image.Image:
    try:
        image = Image.open(stream)
    except Image.DecompressionBombError as error:
        raise _bomb(name, what, str(error)) from None
    except UnidentifiedImageError:
        # Pillow's message names the stream object (an address that changes every call).
        raise InputError(
            f"input '{name}': cannot read {what} as an image (not a format Pillow knows)",
            _DECODE_HINT,
        ) from None
    except Exception as error:  # Pillow raises many types on hostile input
        raise InputError(
            f"input '{name}': cannot read {what} as an image ({_reason(error)})", _DECODE_HINT
        ) from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        raise _bomb(name, what, f"{image.width}x{image.height} pixels, more than {limit}")
    return _load(image, name, what)


def _load(image: Image.Image, name: str, what: str) -> Image.Image:
    """Decode every pixel now, so that a truncated file fails here and not mid-pipeline."""
    try:
        image.load()
    except Exception as error:
        raise InputError(
            f"input '{name}': cannot read {what} as an image ({_reason(error)})",
            _DECODE_HINT + " (this one looks damaged or truncated)",
        ) from None
    return image


def _bomb(name: str, what: str, detail: str) -> InputError:
    return InputError(
        f"input '{name}': {what} decode(s) to too many pixels ({detail})",
        "send a smaller image; decompression bombs are refused",
    )


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return text if text else type(error).__name__


def _from_array(array: np.ndarray[Any, Any], name: str) -> Image.Image:
    if array.dtype != np.uint8:
        raise InputError(
            f"input '{name}': an image array must hold uint8 pixels (0-255), got {array.dtype}",
            "scale it to 0-255 and convert it with array.astype('uint8')",
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))) or not array.size:
        raise InputError(
            f"input '{name}': an image array must be HxW, HxWx3 or HxWx4, got shape "
            f"{list(array.shape)}",
            "send one image per value: grey HxW, RGB HxWx3 or RGBA HxWx4",
        )
    return Image.fromarray(np.ascontiguousarray(array))


# ------------------------------------------------------------------------------------- prepare
def _orient(image: Image.Image) -> Image.Image:
    # exif_transpose copies even an upright image; ask first (getexif also reads XMP's tag).
    orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(image)
    return image


def _to_mode(image: Image.Image, mode: str, name: str) -> Image.Image:
    if image.mode == mode:
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.float32)
        image = Image.fromarray(np.clip(np.rint(wide / 257), 0, 255).astype(np.uint8))
        if image.mode == mode:
            return image
    try:
        return image.convert(mode)
    except ValueError as error:
        raise InputError(
            f"input '{name}': cannot convert a {image.mode} image to {mode} ({error})",
            "send an RGB, RGBA or grey image",
        ) from None


def _round_to_multiple(side: int, multiple: int) -> int:
    return max(multiple, round(side / multiple) * multiple)


class ImagePreprocessor:
    """Images for pipeline input ``name`` -> the tensor model input ``target`` takes.

    ``ImagePreprocessor(spec, name, target)(values)`` returns one array for the batch,
    ``[N, C, H, W]`` or ``[N, H, W, C]``; ``one(value)`` the same without the batch axis. A value
    is anything :func:`decode_image` reads. ``check()`` is for build time: it raises
    :class:`ConfigValidationError` when the declared result cannot fit ``target``.

    With no ``resize``, ``crop`` or ``letterbox`` declared and a model with a fixed height and
    width, images are resized to exactly that size.
    """

    def __init__(
        self, spec: ImageInput, name: str, target: TensorSignature, *, allow_files: bool = True
    ) -> None:
        self.spec = spec
        self.name = name
        self.target = target
        self.allow_files = allow_files
        self._mode = "L" if spec.color == ColorOrder.L else "RGB"
        self._channels = 1 if self._mode == "L" else 3
        interpolation = spec.interpolation.value
        self._opencv = interpolation.removeprefix("opencv-") if "opencv-" in interpolation else None
        self._resample = _RESAMPLING.get(interpolation, Image.Resampling.BILINEAR)
        self._nchw = spec.layout == Layout.NCHW
        self._dtype = np.dtype(spec.dtype.value)
        self._bgr = spec.color == ColorOrder.BGR

        norm = spec.normalize
        if self._channels == 1 and (len(norm.mean) > 1 or len(norm.std) > 1):
            raise ConfigValidationError(
                f"input '{name}': color L gives 1 channel but normalize has "
                f"{max(len(norm.mean), len(norm.std))} mean/std values",
                "give one mean and one std value, or use color: RGB",
            )
        mean = np.broadcast_to(np.asarray(norm.mean, np.float64), self._channels)
        std = np.broadcast_to(np.asarray(norm.std, np.float64), self._channels)
        # (x * scale - mean) / std == x * a + b; a and b are rounded to float32 once.
        a, b = (norm.scale / std).astype(np.float32), (-mean / std).astype(np.float32)
        if self._bgr:  # mean/std are in RGB order; the flipped pixels meet flipped constants
            a, b = a[::-1].copy(), b[::-1].copy()
        shape = (self._channels, 1, 1) if self._nchw else (self._channels,)
        self._scale, self._offset = a.reshape(shape), b.reshape(shape)

        height, width, _ = self._target_hwc()
        self._default_size: tuple[int, int] | None = None
        declared = spec.resize or spec.crop or spec.letterbox
        if declared is None and isinstance(height, int) and isinstance(width, int):
            self._default_size = (height, width)

    # -- public --------------------------------------------------------------------------------
    def __call__(self, values: Sequence[Any]) -> np.ndarray[Any, Any]:
        """One tensor for a batch of images; a lone value (not a list) is a batch of one.

        A 4-dimensional uint8 array is a batch of HxWxC images.
        """
        return self.batch(values)[0]

    def batch(self, values: Sequence[Any]) -> tuple[np.ndarray[Any, Any], list[ImageTransform]]:
        """``__call__``, and for each image how it became its part of the tensor (decoders map
        boxes back to the original pixels with it)."""
        given: object = values  # callers pass a lone value too
        lone = isinstance(given, str | bytes | bytearray | memoryview | Path | Image.Image)
        if lone or (isinstance(given, np.ndarray) and given.ndim <= 3):
            values = [given]
        if len(values) == 0:
            raise InputError(f"input '{self.name}': no images were given", "send at least one")
        images = [self.prepared(value) for value in values]
        placements = self._placements([(image.height, image.width) for image in images])
        first = placements[0].transform.target
        channels = self._channels
        height, width = first
        shape = (channels, height, width) if self._nchw else (height, width, channels)
        batch = np.empty((len(values), *shape), self._dtype)
        for index, (image, placement) in enumerate(zip(images, placements, strict=True)):
            if placement.transform.target != first:
                other = placement.transform.target
                raise MixedSizesError(
                    f"input '{self.name}': images of different sizes cannot share a batch "
                    f"(image 0 becomes {height}x{width}, image {index} "
                    f"{other[0]}x{other[1]}, height x width)",
                    "declare resize.size, resize.height, crop or letterbox so that every image "
                    "gets one size, or send one image per request",
                    [p.transform.target for p in placements],
                )
            self._place(image, placement, batch[index])
        return batch, [placement.transform for placement in placements]

    def one(self, value: Any) -> np.ndarray[Any, Any]:
        """The tensor for one image, without the batch axis: ``[C, H, W]`` or ``[H, W, C]``."""
        tensor: np.ndarray[Any, Any] = self.batch([value])[0][0]
        return tensor

    def output_size(self) -> tuple[int | None, int | None]:
        """``(height, width)`` every image becomes; None where it depends on the image."""
        spec = self.spec
        if spec.letterbox is not None:
            return spec.letterbox.size[0], spec.letterbox.size[1]
        if spec.crop is not None:
            return spec.crop[0], spec.crop[1]
        if spec.resize is not None:
            if spec.resize.height is not None:
                return spec.resize.height, None
            if spec.resize.size is None:
                return None, None
            return self._exact_resize()
        if self._default_size is not None:
            return self._default_size
        return None, None

    def check(self) -> None:
        """Raise :class:`ConfigValidationError` if the declared tensor cannot fit ``target``."""
        spec, target, name = self.spec, self.target, self.name
        where = f"model input '{target.name}' {target.shape_text()}"
        if spec.dtype.value != target.dtype:
            hint = (
                f"set dtype: {target.dtype}"
                if target.dtype in {d.value for d in ImageDType}
                else f"point 'to:' at an image input ({target.name} takes {target.dtype})"
            )
            raise ConfigValidationError(
                f"input '{name}': the pipeline makes {spec.dtype.value} tensors but {where} "
                f"takes {target.dtype}",
                hint,
            )
        if target.shape is not None and len(target.shape) != 4:
            raise ConfigValidationError(
                f"input '{name}': the pipeline makes a 4-dimensional {spec.layout.value} tensor "
                f"but {where} has {len(target.shape)} dimensions",
                "point 'to:' at the model's image input (4 dimensions)",
            )
        height, width, channels = self._target_hwc()
        if isinstance(channels, int) and channels != self._channels:
            raise ConfigValidationError(
                f"input '{name}': color {spec.color.value} gives {self._channels} channel(s) "
                f"but {where} takes {channels} ({spec.layout.value})",
                self._channel_hint(channels),
            )
        self._check_crop_fits()
        made = self.output_size()
        wanted = (height, width)
        for axis, (got, want) in enumerate(zip(made, wanted, strict=True)):
            if not isinstance(want, int) or got == want:
                continue
            fixed = f"{_dim(height)}x{_dim(width)}"
            if got is None:
                raise ConfigValidationError(
                    f"input '{name}': the images' size depends on each image but {where} takes "
                    f"{fixed} (height x width)",
                    f"add 'crop: [{_dim(height)}, {_dim(width)}]' after the resize, or use "
                    f"'resize: [{_dim(height)}, {_dim(width)}]'",
                )
            side = ("height", "width")[axis]
            raise ConfigValidationError(
                f"input '{name}': the pipeline makes {made[0]}x{made[1]} images but {where} "
                f"takes {fixed} (height x width; the {side} differs)",
                self._size_hint(height, width),
            )

    # -- steps ---------------------------------------------------------------------------------
    def prepared(self, value: Any) -> Image.Image:
        """Decoded, oriented and converted to RGB or L: what every placement starts from (and
        what a chain crops its regions from)."""
        image = decode_image(value, self.name, allow_files=self.allow_files)
        if self.spec.orientation:
            image = _orient(image)
        return _to_mode(image, self._mode, self.name)

    def _placements(self, sizes: list[tuple[int, int]]) -> list[geometry.Placement]:
        """Where each image of a batch goes: its resize, then its padding or crop."""
        spec, resize = self.spec, self.spec.resize
        if spec.letterbox is not None:
            box = spec.letterbox
            return [
                geometry.letterbox(size, (box.size[0], box.size[1]), anchor=box.anchor.value)
                for size in sizes
            ]
        if resize is not None and resize.height is not None:
            return self._to_height(sizes, resize)
        if resize is not None and resize.limit_side is not None:
            return [
                geometry.resize_limit_side(
                    size, resize.limit_side, resize.limit_type.value, multiple=resize.multiple_of
                )
                for size in sizes
            ]
        placements = []
        for size in sizes:
            resized = self._resized_size(*size)
            if spec.crop is None:
                placements.append(geometry.resize(size, resized))
                continue
            crop = (spec.crop[0], spec.crop[1])
            if crop[0] > resized[0] or crop[1] > resized[1]:
                raise InputError(
                    f"input '{self.name}': crop [{crop[0]}, {crop[1]}] is larger than the image, "
                    f"[{resized[0]}, {resized[1]}] (height, width) at that point",
                    f"resize first (resize: {{shorter_side: {max(crop)}}})",
                )
            placements.append(geometry.center_crop(size, resized, crop))
        return placements

    def _to_height(self, sizes: list[tuple[int, int]], resize: Any) -> list[geometry.Placement]:
        """Recognisers: every image scaled to ``height``, the batch as wide as its widest image
        (at least ``min_width``, at most ``max_width``, up to a multiple of ``multiple_of``), as
        rapidocr's ``max_wh_ratio`` makes it: ``int(height * max(min_width / height,
        max(width / height)))``."""
        height = resize.height
        widest = max(width / image_height for image_height, width in sizes)
        if resize.min_width is not None:
            widest = max(widest, resize.min_width / height)
        width = max(1, int(height * widest))
        if resize.max_width is not None:
            width = min(width, resize.max_width)
        multiple = resize.multiple_of
        width = -(-width // multiple) * multiple
        return [geometry.resize_to_height(size, height, width=width) for size in sizes]

    def _place(
        self, image: Image.Image, placement: geometry.Placement, out: np.ndarray[Any, Any]
    ) -> None:
        """Resize ``image`` as ``placement`` says, crop or pad it, and write it normalised
        into ``out``, one image of the batch."""
        height, width = placement.resized
        if (height, width) != (image.height, image.width):
            if self._opencv is not None:
                pixels = cv_resize.resize(np.asarray(image), height, width, self._opencv)
            else:
                pixels = np.asarray(image.resize((width, height), self._resample))
        else:
            pixels = np.asarray(image)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if placement.crop is not None:
            crop = placement.crop
            pixels = pixels[crop.top : crop.top + crop.height, crop.left : crop.left + crop.width]
        pad = placement.padding
        if not any(pad):
            self._write(pixels, out)
            return
        fill = self._fill()
        if fill is None:  # zero in the tensor: write the image into a zeroed batch slot
            out[...] = 0
            rows = slice(pad.top, pad.top + pixels.shape[0])
            columns = slice(pad.left, pad.left + pixels.shape[1])
            self._write(pixels, out[:, rows, columns] if self._nchw else out[rows, columns])
            return
        padded = np.pad(
            pixels,
            ((pad.top, pad.bottom), (pad.left, pad.right), (0, 0)),
            constant_values=fill,
        )
        self._write(padded, out)

    def _fill(self) -> int | None:
        """The padding's pixel value, or None for 0 in the tensor (after normalising)."""
        if self.spec.letterbox is not None:
            return self.spec.letterbox.fill
        resize = self.spec.resize
        if resize is not None and isinstance(resize.fill, int):
            return resize.fill
        return None

    def _resized_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` the resize step gives an image of ``height`` x ``width``."""
        resize = self.spec.resize
        if resize is None:
            return self._default_size or (height, width)
        if resize.size is not None:
            height, width = resize.size
        else:
            short, long = min(height, width), max(height, width)
            if resize.shorter_side is not None:
                ratio = resize.shorter_side / short
            else:
                assert resize.longer_side is not None
                ratio = resize.longer_side / long
            height, width = max(1, round(height * ratio)), max(1, round(width * ratio))
        multiple = resize.multiple_of
        if multiple > 1:
            height, width = (
                _round_to_multiple(height, multiple),
                _round_to_multiple(width, multiple),
            )
        return height, width

    def _write(self, pixels: np.ndarray[Any, Any], out: np.ndarray[Any, Any]) -> None:
        """Normalise uint8 ``[H, W, C]`` pixels into ``out`` (one image of the batch)."""
        if self._bgr:
            pixels = pixels[:, :, ::-1]
        if self._nchw:
            pixels = pixels.transpose(2, 0, 1)
        if self._dtype == np.uint8:
            np.copyto(out, pixels)
            return
        # Straight into the destination: no float copy of the whole image first.
        target = out if self._dtype == np.float32 else np.empty(out.shape, np.float32)
        np.multiply(pixels, self._scale, out=target)
        np.add(target, self._offset, out=target)
        if target is not out:
            np.copyto(out, target, casting="same_kind")

    # -- checks --------------------------------------------------------------------------------
    def _target_hwc(self) -> tuple[Dim, Dim, Dim]:
        shape = self.target.shape
        if shape is None or len(shape) != 4:
            return None, None, None
        if self._nchw:
            return shape[2], shape[3], shape[1]
        return shape[1], shape[2], shape[3]

    def _channel_hint(self, channels: int) -> str:
        shape = self.target.shape or []
        other_axis = shape[3] if self._nchw else shape[1]
        if other_axis == self._channels:
            other = "NHWC" if self._nchw else "NCHW"
            return f"the model looks {other}: set layout: {other}"
        if channels == 1:
            return "set color: L"
        if channels == 3:
            return "set color: RGB (or BGR)"
        return f"point 'to:' at an image input (this one has {channels} channels)"

    def _size_hint(self, height: Dim, width: Dim) -> str:
        size = f"[{_dim(height)}, {_dim(width)}]"
        spec = self.spec
        if spec.letterbox is not None:
            return f"set letterbox: {{size: {size}}}"
        if spec.crop is not None:
            return f"set crop: {size}"
        if spec.resize is not None and spec.resize.multiple_of > 1:
            return f"set resize: {{size: {size}}} with a multiple_of that divides both sides"
        return f"set resize: {size}"

    def _check_crop_fits(self) -> None:
        """A crop larger than every resized image would fail on every request: say so now."""
        spec = self.spec
        if spec.crop is None or spec.resize is None:
            return
        crop_height, crop_width = spec.crop
        resize = spec.resize
        multiple = resize.multiple_of
        problem = ""
        if resize.size is not None:
            height, width = self._exact_resize()
            if crop_height > height or crop_width > width:
                problem = f"resize.size gives {height}x{width}"
        elif resize.shorter_side is not None:
            short = _round_to_multiple(resize.shorter_side, multiple)
            if min(crop_height, crop_width) > short:
                problem = f"the shorter side is resized to {short}"
        elif resize.longer_side is not None:
            long = _round_to_multiple(resize.longer_side, multiple)
            if max(crop_height, crop_width) > long:
                problem = f"the longer side is resized to {long}"
        if problem:
            raise ConfigValidationError(
                f"input '{self.name}': crop [{crop_height}, {crop_width}] is larger than every "
                f"resized image ({problem})",
                f"crop at most what the resize gives, or resize to at least "
                f"{max(crop_height, crop_width)}",
            )

    def _exact_resize(self) -> tuple[int, int]:
        resize = self.spec.resize
        assert resize is not None and resize.size is not None
        multiple = resize.multiple_of
        return (
            _round_to_multiple(resize.size[0], multiple),
            _round_to_multiple(resize.size[1], multiple),
        )


def _dim(value: Dim) -> str:
    return "?" if value is None else str(value)


__all__ = ["ImagePreprocessor", "decode_image"]
