"""A GPUXfile that chains models, as Triton ensembles do: one model finds regions in an image,
each region is cut out and goes through a second model in batches, and the results are merged.

    name: ocr
    models:
      det: ./det        # a project folder with its own GPUXfile
      rec: ./rec
    chain:
      detect: det       # runs on the chain's input (an image)
      regions: boxes    # the detector's result holding the regions
      each: rec         # runs on every region's crop
      output: lines

Each model keeps its own GPUXfile (source, pre/post-processing, runtime), its own build and its
own placement report; the chain's image holds all of them, so it is pushed, pulled and run as one.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gpux.config.common import Strict
from gpux.config.schema import (
    IMAGE_NAME,
    Serving,
    check_image_name,
    check_version,
    version_as_text,
)

_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_MODELS = 8
"""A chain is two or three models; eight leaves room, and bounds what a hostile file can ask."""


class Crop(Strict):
    """How regions are cut out of the original image before the second model sees them."""

    rotate_tall: float | None = Field(
        default=1.5,
        gt=0,
        description="Crops at least this many times taller than wide are turned 90 degrees "
        "counter-clockwise (vertical text lines, as RapidOCR and PaddleOCR do); null keeps them "
        "as they are.",
    )


class ChainSteps(Strict):
    """What runs on what, and how the results are merged."""

    detect: str = Field(description="The model (a key of ``models``) run on the chain's input.")
    regions: str = Field(
        description="The detect model's result that lists the regions: a ``db``, ``yolo``, "
        "``nms`` or ``detections`` step's output (each region has a ``box``: four corners or "
        "``[x0, y0, x1, y1]``, in the original image's pixels)."
    )
    each: str = Field(description="The model (a key of ``models``) run on every region's crop.")
    batch_size: int = Field(
        default=6,
        ge=1,
        le=1024,
        description="Crops per call of the ``each`` model. Crops are sorted by aspect ratio "
        "first, so that each batch pads little (RapidOCR batches 6).",
    )
    order: Literal["reading", "score", "none"] = Field(
        default="reading",
        description="Order of the merged regions: ``reading`` (top to bottom, then left to "
        "right within a line, as RapidOCR sorts), ``score`` (highest first) or ``none`` (as "
        "the detector lists them).",
    )
    crop: Crop = Field(default_factory=Crop, description="How regions are cut out.")
    minimum: dict[str, float] = Field(
        default={},
        description="Regions whose merged field is below its minimum are dropped, e.g. "
        "``{confidence: 0.5}`` drops text lines read with a mean confidence under 0.5 "
        "(RapidOCR's ``text_score``).",
    )
    fields: list[str] | None = Field(
        default=None,
        description="The fields of the ``each`` model's results that each region keeps, e.g. "
        "``[text, confidence]`` (CTC's per-character ``characters`` left out); null keeps all.",
    )
    output: str = Field(
        default="regions",
        pattern=r"^[A-Za-z_][\w.-]*$",
        description="Name of the chain's one result: the list of merged regions.",
    )


class ChainFile(Strict):
    """A GPUX project of several models connected as a chain."""

    name: str | None = Field(
        default=None,
        json_schema_extra={"pattern": IMAGE_NAME.pattern},
        description="Image name (default: the folder name). Each model is also stored as "
        "NAME-KEY, so that it can be run on its own.",
    )
    version: str | None = Field(default=None, description="Image tag (default: ``latest``).")
    description: str | None = Field(default=None, description="Free text shown by inspect.")
    models: dict[str, str] = Field(
        description="Each model of the chain: a key (lowercase letters, digits, _) and the "
        "project folder, inside this one, that holds its GPUXfile."
    )
    chain: ChainSteps = Field(description="How the models are connected.")
    serving: Serving = Field(default_factory=Serving, description="HTTP serving settings.")

    _check_name = field_validator("name")(check_image_name)
    _version_as_text = field_validator("version", mode="before")(version_as_text)
    _check_version = field_validator("version")(check_version)

    @field_validator("models")
    @classmethod
    def _check_models(cls, models: dict[str, str]) -> dict[str, str]:
        if not 2 <= len(models) <= MAX_MODELS:
            raise ValueError(f"a chain connects 2 to {MAX_MODELS} models, got {len(models)}")
        for key, folder in models.items():
            if not _KEY.match(key):
                raise ValueError(
                    f"model key {key!r} must be lowercase letters, digits and _ (at most 32), "
                    "starting with a letter"
                )
            if not folder.strip():
                raise ValueError(f"model {key!r}: give the folder of its project")
        return models

    @model_validator(mode="after")
    def _steps_name_models(self) -> ChainFile:
        for role in ("detect", "each"):
            key = getattr(self.chain, role)
            if key not in self.models:
                raise ValueError(
                    f"chain.{role} is {key!r}, which is not one of the models "
                    f"({', '.join(self.models)})"
                )
        if self.chain.detect == self.chain.each:
            raise ValueError("chain.detect and chain.each must be different models")
        return self
