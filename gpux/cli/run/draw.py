"""``gpux run --draw out.png``: the boxes of detection results drawn on the input image.

Detection results are those of the ``yolo``, ``nms`` and ``detections`` steps: lists of
``{box: [x0, y0, x1, y1], score, class, label?}`` in the pixels of the image the user sent
(oriented by its EXIF tag when the pipeline applies it), so they are drawn on that image.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpux.errors import UsageError
from gpux.pipeline.runner import Pipeline

DETECTION_STEPS = ("yolo", "nms", "detections")
# Distinct, saturated colours (one per class, cycling): Tableau 10.
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


def check_draw_path(path: Path) -> None:
    """Refuse a suffix Pillow cannot write before anything runs."""
    from PIL import Image

    Image.init()
    if Image.registered_extensions().get(path.suffix.lower()) not in Image.SAVE:
        raise UsageError(
            f"cannot draw into '{path.name}': not an image file type Pillow writes",
            "name an image file, e.g. --draw boxes.png or boxes.jpg",
        )


def drawing_plan(pipeline: Pipeline) -> tuple[str, list[str]]:
    """The image input to draw on and the names of the detection results; refuses a pipeline
    with neither."""
    images = [str(entry.name) for entry in pipeline.entries if entry.image is not None]
    results: list[str] = []
    chosen: set[str] = set()
    for result in pipeline.results:
        if not result.steps or result.steps[-1].name not in DETECTION_STEPS:
            continue
        results.append(result.name)
        named = result.steps[-1].options.image
        if named is not None:
            chosen.add(named)
        elif len(images) == 1:
            chosen.add(images[0])
    if not results or not images:
        raise UsageError(
            "--draw draws boxes on the input image, but this model has no detection results "
            "on an image input",
            "use --draw with a pipeline whose results end in a yolo, nms or detections step",
        )
    if len(chosen) != 1:
        raise UsageError(
            "--draw needs one image to draw on, but the detection results are in the pixels "
            f"of {len(chosen) or 'none'} of the image inputs",
            "draw with a model whose detections refer to one image input",
        )
    return chosen.pop(), results


def draw_detections(
    pipeline: Pipeline, item: Mapping[str, Any], result: Mapping[str, Any], path: Path
) -> int:
    """Draw every detection of ``result`` on the item's image, save it to ``path``; returns
    the number of boxes drawn."""
    from PIL import Image, ImageDraw, ImageFont, ImageOps

    from gpux.pipeline.image import decode_image

    name, results = drawing_plan(pipeline)
    entry = next(e for e in pipeline.entries if e.name == name)
    assert entry.image is not None
    image: Image.Image = decode_image(item[name], name)
    if entry.image.orientation:
        image = ImageOps.exif_transpose(image)
    image = image.convert("RGB")
    canvas = ImageDraw.Draw(image)
    side = min(image.size)
    width = max(2, round(side / 250))
    font = ImageFont.load_default(size=max(12, round(side / 40)))
    drawn = 0
    for result_name in results:
        for detection in result.get(result_name) or []:
            x0, y0, x1, y1 = (float(v) for v in detection["box"])
            colour = PALETTE[int(detection.get("class", 0)) % len(PALETTE)]
            canvas.rectangle((x0, y0, x1, y1), outline=colour, width=width)
            caption = _caption(detection)
            if caption:
                left, top, right, bottom = canvas.textbbox((0, 0), caption, font=font)
                height = bottom - top + 2 * width
                above = y0 - height if y0 - height >= 0 else y0
                canvas.rectangle(
                    (x0, above, x0 + right - left + 2 * width, above + height), fill=colour
                )
                canvas.text(
                    (x0 + width - left, above + width - top), caption, fill="white", font=font
                )
            drawn += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return drawn


def _caption(detection: Mapping[str, Any]) -> str:
    label = detection.get("label", detection.get("class"))
    score = detection.get("score")
    parts = [str(label)] if label is not None else []
    if isinstance(score, int | float):
        parts.append(f"{score:.2f}")
    return " ".join(parts)
