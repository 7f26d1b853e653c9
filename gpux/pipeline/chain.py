"""A chain's pipeline: the detect model finds regions, each region is cut out of the original
image, the crops go through the second model in batches, and each region gets its results.

It is a :class:`Pipeline` to its callers (``gpux run``, ``Model.predict``, the server): the same
inputs as the detect model's, one result (``chain.output``) listing the merged regions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gpux.config.chain import ChainSteps
from gpux.config.pipeline import PipelineOutput
from gpux.errors import ModelError, UsageError
from gpux.pipeline.crop import crop_quad, sort_reading_order
from gpux.pipeline.runner import Pipeline
from gpux.runtime.backend import Placement
from gpux.runtime.model import Model

if TYPE_CHECKING:
    from gpux.store import Image

Array = np.ndarray[Any, Any]


class ChainPipeline(Pipeline):
    """``detect`` -> crops -> ``each``, merged per region."""

    def __init__(
        self,
        chain: Model,
        steps: ChainSteps,
        detect: Model,
        each: Model,
        *,
        allow_files: bool = True,
    ) -> None:
        self.steps = steps
        self.detect = _own_pipeline(detect, allow_files)
        self.each = _own_pipeline(each, allow_files=False)  # crops are arrays, never paths
        # What callers of a Pipeline read: the detect model's inputs, the chain's one result.
        self.model = chain
        self.entries = self.detect.entries
        self.results = [PipelineOutput(name=steps.output)]
        self.labels = None
        self._processors = self.detect._processors
        self.tensor_inputs = []
        self.handler = None  # each model runs its own handler inside its own pipeline
        self.handler_inputs = []
        self.gpuxfile = {}
        self._batchable = True
        (self._input,) = self.detect.input_names  # one image input: checked at build

    def run(self, items: Sequence[Mapping[str, Any]], raw: bool = False) -> list[dict[str, Any]]:
        if raw:
            raise UsageError(
                "a chain's results are merged from several models, so it has no raw tensors",
                "run one model of the chain on its own for its tensors (gpux run NAME-KEY --raw)",
            )
        if not items:
            return []
        processor = self._processors[self._input]
        images = [np.asarray(processor.prepared(item[self._input])) for item in items]
        found = self.detect.run([{self._input: image} for image in images])
        regions = [self._regions(result) for result in found]
        crops: list[tuple[int, int, Array]] = []  # (item, region, pixels)
        for position, (image, listed) in enumerate(zip(images, regions, strict=True)):
            for index, region in enumerate(listed):
                pixels = crop_quad(image, _quad(region["box"]), self.steps.crop.rotate_tall)
                if pixels.size:
                    crops.append((position, index, pixels))
        merged: list[list[tuple[dict[str, Any], list[str]] | None]] = [
            [None] * len(r) for r in regions
        ]
        for position, index, results in self._read(crops):
            merged[position][index] = _merge(regions[position][index], results, self.steps.fields)
        return [{self.steps.output: self._finish(m)} for m in merged]

    def _regions(self, result: Mapping[str, Any]) -> list[dict[str, Any]]:
        listed = result.get(self.steps.regions)
        if not isinstance(listed, list) or not all(
            isinstance(r, dict) and "box" in r for r in listed
        ):
            raise ModelError(  # checked at build; kept for images built by hand
                f"the chain's regions '{self.steps.regions}' are not a list of boxes",
                "rebuild the image with 'gpux build'",
            )
        order = self.steps.order
        if order == "reading" and listed:
            listed = [
                listed[i] for i in sort_reading_order(np.stack([_quad(r["box"]) for r in listed]))
            ]
        elif order == "score":
            listed = sorted(listed, key=lambda r: -float(r.get("score", 0.0)))
        return listed

    def _read(self, crops: list[tuple[int, int, Array]]) -> list[tuple[int, int, dict[str, Any]]]:
        """The second model's results per crop, in batches of crops of similar aspect ratio
        (less padding, and the batches RapidOCR forms)."""
        ordered = sorted(crops, key=lambda c: c[2].shape[1] / c[2].shape[0])
        size = self.steps.batch_size
        read: list[tuple[int, int, dict[str, Any]]] = []
        for start in range(0, len(ordered), size):
            chunk = ordered[start : start + size]
            results = self.each.run([{self.each.input_names[0]: c[2]} for c in chunk])
            read.extend((c[0], c[1], r) for c, r in zip(chunk, results, strict=True))
        return read

    def _finish(
        self, merged: list[tuple[dict[str, Any], list[str]] | None]
    ) -> list[dict[str, Any]]:
        kept = []
        for entry in merged:
            if entry is None:  # an empty crop: nothing to read
                continue
            region, unwanted = entry
            if all(_number(region.get(k)) >= low for k, low in self.steps.minimum.items()):
                kept.append({k: v for k, v in region.items() if k not in unwanted})
        return kept


def _own_pipeline(model: Model, allow_files: bool) -> Pipeline:
    gpuxfile = model.image.config.get("gpuxfile", {}) if model.image else {}
    return Pipeline(model, gpuxfile, {}, allow_files=allow_files)


def _quad(box: Any) -> Array:
    """Four corners, clockwise from the top-left, from a quad or an ``[x0, y0, x1, y1]`` box."""
    array = np.asarray(box, dtype=np.float64)
    if array.shape == (4,):
        x0, y0, x1, y1 = array
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    if array.shape == (4, 2):
        return array
    raise ModelError(
        f"a region's box has shape {list(array.shape)}; a chain crops quads (4 corners) and "
        "[x0, y0, x1, y1] boxes",
        "use box_type: quad in the db step (polygons cannot be cropped)",
    )


def _merge(
    region: Mapping[str, Any], results: Mapping[str, Any], wanted: list[str] | None
) -> tuple[dict[str, Any], list[str]]:
    """The region's fields, then the second model's: a result that is a mapping has its fields
    merged in (``{"text": "...", "confidence": 0.9}``), others go under their result's name. A
    field the region already has keeps the region's value; the other is prefixed with the
    result's name (``class_score`` beside the detector's ``score``). Also the merged keys of
    the second model's fields that ``wanted`` leaves out (None: it keeps all), dropped once the
    minimums are checked."""
    merged = dict(region)
    unwanted = []
    for name, value in results.items():
        fields = value if isinstance(value, Mapping) else {name: value}
        for key, item in fields.items():
            merged_key = key if key not in merged else f"{name}_{key}"
            merged[merged_key] = item
            if wanted is not None and key not in wanted:
                unwanted.append(merged_key)
    return merged, unwanted


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("-inf")


class Chain(Model):
    """A chain image's models, loaded each on its own backend, run as one by ``predict``.

    ``components`` holds each model (run one alone with ``chain.components["det"].predict``);
    ``placement`` is the detect model's, ``placements`` every model's.
    """

    def __init__(self, image: Image, components: dict[str, Model]) -> None:
        from pydantic import ValidationError

        from gpux.errors import StoreError
        from gpux.store.images import repair_hint

        try:
            self.steps = ChainSteps.model_validate(image.config.get("gpuxfile", {}).get("chain"))
        except ValidationError as exc:
            raise StoreError(
                f"image '{image.name}': its chain is not one GPUX can run "
                f"({exc.error_count()} problems)",
                repair_hint(image.names, image.digest),
            ) from exc
        if {self.steps.detect, self.steps.each} - set(components):
            raise StoreError(
                f"image '{image.name}': its chain names models it does not hold",
                repair_hint(image.names, image.digest),
            )
        self.components = components
        super().__init__(components[self.steps.detect].backend, [], [], image=image)
        self.pipeline = self.chain_pipeline(allow_files=True)

    def chain_pipeline(self, *, allow_files: bool) -> ChainPipeline:
        return ChainPipeline(
            self,
            self.steps,
            self.components[self.steps.detect],
            self.components[self.steps.each],
            allow_files=allow_files,
        )

    @property
    def placements(self) -> dict[str, Placement]:
        return {key: model.placement for key, model in self.components.items()}

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
        from gpux.errors import UsageError

        name = self.image.name if self.image else "chain"
        raise UsageError(
            f"'{name}' is a chain of models ({', '.join(self.components)}): it takes what "
            "its pipeline takes, not tensors",
            "use predict (gpux run with an image, POST /v1/models/NAME/predict), or run one "
            "model of the chain on its own",
        )

    def close(self) -> None:
        for model in self.components.values():
            model.close()

    def __repr__(self) -> str:
        name = self.image.name if self.image else "chain"
        return f"<gpux.Chain {name}: {', '.join(self.components)}>"
