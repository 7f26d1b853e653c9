"""GPUXfile v1: declarative pre- and post-processing (``preprocess:`` and ``postprocess:``).

A *pipeline input* is what a user sends (a sentence, a photo, a recording); ``preprocess`` says
how each one becomes model input tensors. ``postprocess`` turns model outputs into named
results (an embedding, labels with scores, speech segments) through a chain of steps.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from gpux.config.common import FileSource, Strict, TensorName

Size = Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)]


def _file_shorthand(value: Any) -> Any:
    return {"source": value} if isinstance(value, str) else value


# ----------------------------------------------------------------------------------------- text
class Padding(StrEnum):
    longest = "longest"
    max_length = "max_length"


class TextInput(Strict):
    """Sentences -> token ids, attention mask and token type ids (Hugging Face ``tokenizers``)."""

    tokenizer: FileSource = Field(
        description="A ``tokenizer.json``: a project-relative path, an https URL (with sha256, "
        "optionally a ``member`` inside a zip/wheel/tar archive) or ``hf:org/repo/tokenizer.json@rev``. "
        "Stored in the image at build.",
    )
    max_length: int = Field(default=512, ge=1, description="Longest token sequence.")
    truncation: bool = Field(
        default=True,
        description="Cut longer texts to max_length. When false, a longer text is an error.",
    )
    padding: Padding = Field(
        default=Padding.longest,
        description="``longest``: pad a batch to its longest text; ``max_length``: always pad to max_length.",
    )
    pairs: bool = Field(
        default=False,
        description="Each value is a pair of texts ``[first, second]`` (cross-encoders, NLI).",
    )
    ids: TensorName | None = Field(
        default="input_ids", description="Model input that receives the token ids."
    )
    mask: TensorName | None = Field(
        default="attention_mask",
        description="Model input that receives the attention mask (null: none).",
    )
    type_ids: TensorName | None = Field(
        default="token_type_ids",
        description="Model input that receives the token type ids (null: none). Skipped when the model has no such input.",
    )

    _shorthand = field_validator("tokenizer", mode="before")(_file_shorthand)


# ---------------------------------------------------------------------------------------- image
class ColorOrder(StrEnum):
    RGB = "RGB"
    BGR = "BGR"
    L = "L"


class Interpolation(StrEnum):
    nearest = "nearest"
    bilinear = "bilinear"
    bicubic = "bicubic"
    lanczos = "lanczos"
    box = "box"
    hamming = "hamming"
    # OpenCV's cv2.resize, as the authors of most detectors and OCR models resize (no
    # antialiasing when shrinking, unlike Pillow): within 1 of OpenCV on uint8.
    opencv_nearest = "opencv-nearest"
    opencv_linear = "opencv-linear"
    opencv_cubic = "opencv-cubic"
    opencv_area = "opencv-area"


class LimitType(StrEnum):
    min = "min"
    max = "max"


class Layout(StrEnum):
    NCHW = "NCHW"
    NHWC = "NHWC"


class ImageDType(StrEnum):
    float32 = "float32"
    float16 = "float16"
    uint8 = "uint8"


class Resize(Strict):
    """Exactly one of ``shorter_side``, ``longer_side``, ``size``, ``height`` or ``limit_side``."""

    shorter_side: int | None = Field(
        default=None, ge=1, description="Scale so the shorter side has this length."
    )
    longer_side: int | None = Field(
        default=None, ge=1, description="Scale so the longer side has this length."
    )
    size: Size | None = Field(
        default=None, description="Exact ``[height, width]``; the aspect ratio is not kept."
    )
    height: int | None = Field(
        default=None,
        ge=1,
        description="Scale to this height keeping the aspect ratio, the width being ceil(height x width / original height), as PaddleOCR's recognisers do. The images of a batch are padded on the right to the widest (at least ``min_width``).",
    )
    min_width: int | None = Field(
        default=None, ge=1, description="With ``height``: pad narrower images to this width."
    )
    max_width: int | None = Field(
        default=None,
        ge=1,
        description="With ``height``: squeeze wider images to this width (the aspect ratio is then not kept).",
    )
    fill: int | Literal["zero"] = Field(
        default="zero",
        description="With ``height``: the padding, ``zero`` (0 in the tensor, after normalising, as PaddleOCR pads) or a pixel value 0-255.",
    )
    limit_side: int | None = Field(
        default=None,
        ge=1,
        description="Scale so the side ``limit_type`` names reaches this length, then round both sides to ``multiple_of`` (PaddleOCR's DB detectors: 736 with min, 960 with max, multiple_of 32).",
    )
    limit_type: LimitType = Field(
        default=LimitType.min,
        description="With ``limit_side``: ``min`` scales a shorter side below it up to it; ``max`` a longer side above it down to it. Other images keep their size (rounded).",
    )
    multiple_of: int = Field(
        default=1,
        ge=1,
        description="Round both sides to a multiple of this (e.g. 32 for detection models). With ``height``: pad the batch's width up to a multiple of this.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"shorter_side": value}
        if isinstance(value, list):
            return {"size": value}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Resize:
        given = [self.shorter_side, self.longer_side, self.size, self.height, self.limit_side]
        if sum(v is not None for v in given) != 1:
            raise ValueError(
                "give exactly one of shorter_side, longer_side, size, height or limit_side"
            )
        # Compared with the defaults, not model_fields_set: an image stores every field.
        widths = [
            name
            for name, default in (("min_width", None), ("max_width", None), ("fill", "zero"))
            if getattr(self, name) != default
        ]
        if widths and self.height is None:
            raise ValueError(f"{' and '.join(widths)} go with height: add height")
        if self.limit_type != LimitType.min and self.limit_side is None:
            raise ValueError("limit_type goes with limit_side: add limit_side")
        if self.min_width and self.max_width and self.min_width > self.max_width:
            raise ValueError("min_width is larger than max_width")
        if isinstance(self.fill, int) and not 0 <= self.fill <= 255:
            raise ValueError("fill is a pixel value 0-255, or zero")
        return self


class Anchor(StrEnum):
    centered = "center"
    top_left = "top-left"


class Letterbox(Strict):
    """Scale to fit inside ``size`` keeping the aspect ratio, then pad."""

    size: Size = Field(description="``[height, width]`` of the result.")
    fill: int = Field(default=114, ge=0, le=255, description="Padding value (0-255).")
    anchor: Anchor = Field(
        default=Anchor.centered,
        description="Where the image sits: ``center`` (padding split on both sides, as ultralytics does) or ``top-left`` (padding right and below, as YOLOX and many exports do).",
    )


class NormalizePreset(StrEnum):
    imagenet = "imagenet"
    unit = "[0,1]"
    symmetric = "[-1,1]"
    none = "none"


NORMALIZE_PRESETS: dict[str, tuple[float, tuple[float, ...], tuple[float, ...]]] = {
    # name: (scale, mean, std), applied as (pixel * scale - mean) / std
    "imagenet": (1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "[0,1]": (1 / 255, (0.0,), (1.0,)),
    "[-1,1]": (1 / 255, (0.5,), (0.5,)),
    "none": (1.0, (0.0,), (1.0,)),
}


class Normalize(Strict):
    """``(pixel * scale - mean) / std`` per channel, pixels being 0-255."""

    scale: float = Field(default=1 / 255, gt=0, description="Multiplies 0-255 pixels first.")
    mean: list[float] = Field(
        default=[0.0], min_length=1, description="Subtracted after scaling (1 or 3 values)."
    )
    std: list[float] = Field(
        default=[1.0], min_length=1, description="Divides after subtracting (1 or 3 values)."
    )

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        if isinstance(value, str):
            names = [p.value for p in NormalizePreset]
            if value not in names:
                raise ValueError(f"unknown preset {value!r}; use one of: {', '.join(names)}")
            scale, mean, std = NORMALIZE_PRESETS[value]
            return {"scale": scale, "mean": list(mean), "std": list(std)}
        return value

    @field_validator("mean", "std")
    @classmethod
    def _one_or_three(cls, values: list[float]) -> list[float]:
        if len(values) not in (1, 3):
            raise ValueError("give 1 value (all channels) or 3 (one per channel)")
        return values

    @field_validator("std")
    @classmethod
    def _nonzero(cls, values: list[float]) -> list[float]:
        if any(v == 0 for v in values):
            raise ValueError("std values must not be 0")
        return values


class ImageInput(Strict):
    """Image files or bytes -> one float tensor. Steps run in the order of the keys below."""

    to: TensorName | None = Field(
        default=None,
        description="Model input that receives the tensor (default: the model's only input of rank 4).",
    )
    orientation: bool = Field(
        default=True, description="Apply the EXIF orientation tag (photos from phones)."
    )
    color: ColorOrder = Field(
        default=ColorOrder.RGB, description="Channel order: RGB, BGR or L (grey)."
    )
    resize: Resize | None = Field(
        default=None,
        description="``{shorter_side: N}``, ``{longer_side: N}`` or ``{size: [h, w]}`` (shorthands: ``256``, ``[224, 224]``). Default: the model's fixed height and width, when it has them.",
    )
    interpolation: Interpolation = Field(
        default=Interpolation.bilinear,
        description="Resampling filter: Pillow's (``bilinear`` ...), or OpenCV's (``opencv-linear``, ``opencv-area``, ``opencv-cubic``, ``opencv-nearest``) to match authors who resize with cv2.resize.",
    )
    crop: Size | None = Field(default=None, description="Center-crop to ``[height, width]``.")
    letterbox: Letterbox | None = Field(
        default=None,
        description="Fit inside ``size`` keeping the aspect ratio and pad. Replaces resize and crop.",
    )
    normalize: Normalize = Field(
        default_factory=Normalize,
        description="A preset (``imagenet``, ``[0,1]``, ``[-1,1]``, ``none``) or ``{scale, mean, std}``.",
    )
    layout: Layout = Field(default=Layout.NCHW, description="NCHW or NHWC.")
    dtype: ImageDType = Field(default=ImageDType.float32, description="Tensor element type.")

    @model_validator(mode="after")
    def _letterbox_alone(self) -> ImageInput:
        if self.letterbox is not None and (self.resize is not None or self.crop is not None):
            raise ValueError("letterbox resizes by itself: remove resize and crop, or letterbox")
        if self.dtype == ImageDType.uint8 and self.normalize != Normalize.model_validate("none"):
            raise ValueError("uint8 tensors hold raw pixels: use 'normalize: none' with uint8")
        return self


# ---------------------------------------------------------------------------------------- audio
class Framing(Strict):
    """Cut the signal into fixed windows; the model runs once per window."""

    size: int = Field(ge=1, description="New samples per window.")
    context: int = Field(
        default=0,
        ge=0,
        description="Samples of the previous window prepended to each one (zeros for the first).",
    )


class StateSpec(Strict):
    """A recurrent state carried from one window to the next."""

    input: TensorName = Field(description="Model input that receives the state.")
    output: TensorName = Field(description="Model output holding the next state.")
    shape: list[Annotated[int, Field(ge=1)]] = Field(description="Shape of the initial state.")
    dtype: str = Field(default="float32", description="Element type of the state.")
    initial: float = Field(default=0.0, description="Value the state starts from.")


class AudioInput(Strict):
    """wav/flac/ogg files or bytes -> mono float samples at the model's rate."""

    to: TensorName | None = Field(
        default=None,
        description="Model input that receives the samples (default: the model's only float input).",
    )
    sample_rate: int = Field(ge=1000, le=768000, description="Sample rate the model expects (Hz).")
    resample: bool = Field(
        default=True,
        description="Convert other rates to sample_rate. When false, another rate is an error.",
    )
    frame: Framing | None = Field(
        default=None, description="Run the model per window, for streaming models."
    )
    sample_rate_input: TensorName | None = Field(
        default=None, description="Model input that receives sample_rate as an int64 scalar."
    )
    state: list[StateSpec] = Field(
        default=[], description="States carried across windows (needs ``frame``)."
    )

    @model_validator(mode="after")
    def _state_needs_frames(self) -> AudioInput:
        if self.state and self.frame is None:
            raise ValueError("a state is carried across windows: add 'frame: {size: N}'")
        return self


# ------------------------------------------------------------------------------------ preprocess
class PipelineInput(Strict):
    """One input users send, and how it becomes tensors: exactly one of text, image, audio."""

    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.-]*$",
        description="What users call it (``--input name=...``, JSON key). Default: its kind (text/image/audio).",
    )
    text: TextInput | None = Field(default=None, description="Tokenise sentences.")
    image: ImageInput | None = Field(default=None, description="Decode and prepare images.")
    audio: AudioInput | None = Field(default=None, description="Decode and prepare audio.")

    @model_validator(mode="after")
    def _one_kind(self) -> PipelineInput:
        kinds = [k for k in ("text", "image", "audio") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of 'text', 'image' or 'audio'")
        if self.name is None:
            self.name = kinds[0]
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("text", "image", "audio") if getattr(self, k) is not None)


# ----------------------------------------------------------------------------------- postprocess
class Softmax(Strict):
    axis: int = Field(default=-1, description="Axis to normalise over.")


class Sigmoid(Strict):
    pass


class L2Normalize(Strict):
    axis: int = Field(default=-1, description="Axis to normalise over.")


class MeanPool(Strict):
    mask: TensorName | None = Field(
        default="attention_mask",
        description="Model input holding the attention mask; padded positions are left out. Null: plain mean.",
    )


Labels = list[str] | str | None


class ArgMax(Strict):
    labels: Labels = Field(
        default=None,
        description="Labels (inline list or a file, one per line). Default: the GPUXfile's labels.",
    )
    axis: int | None = Field(
        default=None,
        description="Give an axis to get the index of the largest value along it, as a tensor the chain goes on with (e.g. the best class per time step). Without it, argmax ends the chain with the best class of each item, and its label.",
    )

    @model_validator(mode="after")
    def _axis_or_labels(self) -> ArgMax:
        _not_the_batch(self.axis, "argmax")
        if self.axis is not None and self.labels is not None:
            raise ValueError("argmax over an axis gives indices, not labels: drop one of them")
        return self


def _not_the_batch(axis: int | None, step: str) -> None:
    if axis == 0:
        raise ValueError(
            f"{step}: axis 0 holds the items of a batch; count the item's own axes from 1 "
            "(or from the end: -1 is the last)"
        )


class Pick(Strict):
    """One index along an axis; the axis goes away (``[batch, 3, 80]`` -> ``[batch, 80]``)."""

    axis: int = Field(description="Axis to pick from (1 is each item's first axis; -1 the last).")
    index: int = Field(description="Position along it (negative counts from the end).")

    @model_validator(mode="after")
    def _not_batch(self) -> Pick:
        _not_the_batch(self.axis, "pick")
        return self


class Slice(Strict):
    """A range along an axis, as Python's ``start:stop:step``."""

    axis: int = Field(description="Axis to cut (1 is each item's first axis; -1 the last).")
    start: int | None = Field(default=None, description="First position (default: 0).")
    stop: int | None = Field(default=None, description="Position after the last (default: all).")
    step: int | None = Field(default=None, ge=1, description="Stride (default: 1).")

    @model_validator(mode="after")
    def _not_batch(self) -> Slice:
        _not_the_batch(self.axis, "slice")
        return self


class Transpose(Strict):
    """Reorder an item's axes: ``[batch, 4+C, anchors]`` -> ``[batch, anchors, 4+C]``."""

    axes: list[int] = Field(
        min_length=2,
        description="The new order of all axes, the batch axis first: [0, 2, 1] swaps the last two of a rank-3 tensor.",
    )

    @field_validator("axes")
    @classmethod
    def _permutation(cls, axes: list[int]) -> list[int]:
        if sorted(axes) != list(range(len(axes))) or axes[0] != 0:
            raise ValueError(
                "give every axis once, starting with 0 (the batch axis stays first), e.g. [0, 2, 1]"
            )
        return axes


class Squeeze(Strict):
    """Drop axes of size 1 (all of them but the batch axis, or the one given)."""

    axis: int | None = Field(
        default=None, description="The axis to drop (default: every size-1 axis)."
    )

    @model_validator(mode="after")
    def _not_batch(self) -> Squeeze:
        _not_the_batch(self.axis, "squeeze")
        return self


class TopK(Strict):
    k: int = Field(default=5, ge=1, description="How many classes to return.")
    labels: Labels = Field(
        default=None,
        description="Labels (inline list or a file, one per line). Default: the GPUXfile's labels.",
    )


class Threshold(Strict):
    value: float = Field(default=0.5, description="Values at or above it become true.")


class Segments(Strict):
    """Per-frame scores -> ``[{start, end}]`` in seconds (speech, events)."""

    threshold: float = Field(default=0.5, description="A frame at or above it is active.")
    min_duration_ms: float = Field(default=250, ge=0, description="Shorter segments are dropped.")
    min_gap_ms: float = Field(
        default=100, ge=0, description="Shorter gaps between segments are closed."
    )
    pad_ms: float = Field(default=30, ge=0, description="Added before and after each segment.")
    frame_ms: float | None = Field(
        default=None,
        gt=0,
        description="Duration of one frame; default: the audio input's window (frame.size / sample_rate).",
    )


class Boxes(Strict):
    """A per-pixel score map -> ``[{box: [x0, y0, x1, y1], score}]`` of connected regions (text detection)."""

    threshold: float = Field(default=0.3, description="A pixel at or above it belongs to a region.")
    min_score: float = Field(
        default=0.5, description="Regions whose mean score is lower are dropped."
    )
    min_area: int = Field(default=16, ge=1, description="Regions with fewer pixels are dropped.")


class Ctc(Strict):
    """Greedy CTC decoding (text recognisers such as PP-OCR rec, CRNN): the best class at each
    time step, repeats merged, blanks dropped -> ``{text, confidence, characters}``, as
    PaddleOCR's CTCLabelDecode does. Needs per-item ``[time, classes]`` scores."""

    charset: list[str] | str = Field(
        default="model",
        description="The characters: ``model`` reads them from the model's metadata (``metadata_key``; PaddleOCR's exports keep them there), a project-relative text file holds one per line (a PaddleOCR dict), or an inline list. With two fewer entries than the model has classes, the blank (class 0) and a final space are added, as PaddleOCR does; with one fewer, the blank at ``blank``. Read at build and stored in the image.",
    )
    metadata_key: str = Field(
        default="character",
        description="Metadata property holding the characters (``charset: model``).",
    )
    blank: int = Field(default=0, ge=0, description="Class index of the CTC blank.")
    softmax: bool = Field(
        default=False, description="The scores are logits: turn them into probabilities first."
    )
    merge_repeats: bool = Field(
        default=True, description="Merge a class repeated on consecutive steps into one character."
    )


class _Detection(Strict):
    """What every detection decoder shares: thresholds, NMS, labels, and the image whose
    placement maps boxes back to its pixels."""

    score_threshold: float = Field(
        default=0.25, ge=0, le=1, description="Candidates must score above this."
    )
    iou_threshold: float = Field(
        default=0.45, ge=0, le=1, description="NMS drops a box overlapping a better one by more."
    )
    class_agnostic: bool = Field(
        default=False,
        description="NMS across classes (a box suppresses any class's); default: per class.",
    )
    max_detections: int = Field(default=300, ge=1, description="At most this many per image.")
    labels: Labels = Field(
        default=None,
        description="Class names: an inline list, a file (one per line), or ``model`` for the names in the model's metadata (ultralytics exports keep them there). Default: the GPUXfile's labels.",
    )
    image: str | None = Field(
        default=None,
        description="The image input whose pixels boxes are given in (default: the only one). Without an image input, boxes stay in model-input pixels.",
    )


class Yolo(_Detection):
    """A raw YOLO head -> ``[{box, score, class, label}]`` in the original image's pixels."""

    style: Literal["auto", "v5", "v8"] = Field(
        default="auto",
        description="``v8`` (v8, v11: ``[N, 4+C, anchors]``, no objectness), ``v5`` (v5, v7: ``[N, anchors, 5+C]`` with objectness), or ``auto`` from the shape.",
    )


class Nms(_Detection):
    """Boxes and scores in separate outputs (SSD, PicoDet, RetinaFace-style, decoded to
    pixels): the result's ``from`` is the boxes, ``scores`` names the other output."""

    scores: str = Field(description="The model output holding the class scores.")
    box_format: Literal["xyxy", "xywh", "cxcywh"] = Field(
        default="xyxy", description="How a box's 4 numbers read."
    )
    normalized: bool = Field(
        default=False,
        description="Boxes are fractions of the model input's width and height (0-1), not pixels.",
    )


class Detections(_Detection):
    """A model with NMS inside: ``[N, k, 6]`` rows ``x0, y0, x1, y1, score, class`` (or
    ``[N, k, 7]`` with a leading batch index) -> the same JSON in the original image's pixels."""

    score_threshold: float = Field(
        default=0.0, ge=0, le=1, description="Rows must score above this (padding rows score 0)."
    )


class Db(Strict):
    """A DB text detector's probability map -> text regions as rotated quads (or polygons) in
    the original image's pixels, as PaddleOCR's DBPostProcess finds them."""

    thresh: float = Field(default=0.3, ge=0, le=1, description="Binarise the map at this.")
    box_thresh: float = Field(
        default=0.5, ge=0, le=1, description="Drop regions whose mean score is lower."
    )
    max_candidates: int = Field(default=1000, ge=1, description="Regions looked at, at most.")
    unclip_ratio: float = Field(
        default=1.6, gt=0, description="Grow each region by area x ratio / perimeter."
    )
    min_size: float = Field(default=3, ge=0, description="Drop regions whose short side is less.")
    score_mode: Literal["fast", "slow"] = Field(
        default="fast",
        description="``fast``: the mean inside the region's box; ``slow``: inside its outline.",
    )
    use_dilation: bool = Field(default=False, description="Dilate the bitmap by 2x2 first.")
    box_type: Literal["quad", "poly"] = Field(
        default="quad", description="``quad``: 4 corners; ``poly``: the outline's polygon."
    )
    image: str | None = Field(
        default=None,
        description="The image input whose pixels regions are given in (default: the only one).",
    )


class Step(Strict):
    """One step: a name, or ``{name: {options}}``."""

    softmax: Softmax | None = None
    sigmoid: Sigmoid | None = None
    pick: Pick | None = None
    slice: Slice | None = None
    transpose: Transpose | None = None
    squeeze: Squeeze | None = None
    l2_normalize: L2Normalize | None = None
    mean_pool: MeanPool | None = None
    argmax: ArgMax | None = None
    top_k: TopK | None = None
    threshold: Threshold | None = None
    segments: Segments | None = None
    boxes: Boxes | None = None
    ctc: Ctc | None = None
    yolo: Yolo | None = None
    nms: Nms | None = None
    detections: Detections | None = None
    db: Db | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in cls.model_fields:
                import difflib

                close = difflib.get_close_matches(value, list(cls.model_fields), n=1)
                guess = f"did you mean '{close[0]}'? " if close else ""
                raise ValueError(
                    f"unknown step '{value}': {guess}steps are {', '.join(cls.model_fields)}"
                )
            return {value: {}}
        if isinstance(value, dict):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Step:
        if len(self.model_fields_set) != 1:
            raise ValueError(f"a step has exactly one name: one of {', '.join(STEP_NAMES)}")
        return self

    @property
    def name(self) -> str:
        return next(iter(self.model_fields_set))

    @property
    def options(self) -> Any:
        return getattr(self, self.name)


STEP_NAMES = tuple(Step.model_fields)


class PipelineOutput(Strict):
    """One named result computed from one model output."""

    name: str = Field(pattern=r"^[A-Za-z_][\w.-]*$", description="Key of the result.")
    source: TensorName | None = Field(
        default=None,
        alias="from",
        description="Model output it starts from (default: the model's only/first output).",
    )
    steps: list[Step] = Field(default=[], description="Applied in order.")
