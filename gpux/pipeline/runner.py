"""Items users send -> pre-processing -> model -> post-processing -> results.

One code path for ``gpux run``, the Python API (``Model.predict``) and the server. An *item* is
a mapping from pipeline input names (and raw model input names) to values; a model with a
single pipeline input also takes the bare value. Text and image items are batched into one
model call (images that become different sizes, one call per size); audio items run one at a time (their lengths differ), window by window when the
GPUXfile declares frames, carrying any recurrent state.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpux.config.pipeline import PipelineInput, PipelineOutput
from gpux.errors import InputError, MixedSizesError, UsageError
from gpux.pipeline import steps
from gpux.pipeline.geometry import ImageTransform
from gpux.runtime.tensors import items_first

if TYPE_CHECKING:
    from gpux.pipeline.handler import Handler
    from gpux.runtime.model import Model

Array = np.ndarray[Any, Any]
Images = dict[str, list[ImageTransform]]  # pipeline image input -> each item's placement


class Pipeline:
    """The GPUXfile's ``preprocess``/``postprocess`` bound to a loaded model."""

    def __init__(
        self,
        model: Model,
        gpuxfile: Mapping[str, Any],
        tokenizers: Mapping[str, Path],
        *,
        allow_files: bool = True,
        handler: Handler | None = None,
    ) -> None:
        """``allow_files=False`` (the server): image and audio values may be bytes or base64,
        never a path, so a client cannot make the server read its files. ``handler``: the
        image's code, run after the declarative steps (gpux/pipeline/handler.py)."""
        self.model = model
        self.gpuxfile = gpuxfile
        self.handler = handler
        self.entries = [PipelineInput.model_validate(e) for e in gpuxfile.get("preprocess", [])]
        self.results = [PipelineOutput.model_validate(r) for r in gpuxfile.get("postprocess", [])]
        self.labels: list[str] | None = gpuxfile.get("labels")
        model_inputs = {t.name for t in model.inputs}
        self._processors: dict[str, Any] = {}
        fed: set[str] = set()
        for entry in self.entries:
            name = str(entry.name)
            if entry.text is not None:
                from gpux.pipeline.text import TextPreprocessor

                processor: Any = TextPreprocessor(entry.text, tokenizers[name], model_inputs, name)
                fed.update(processor.targets.values())
            elif entry.image is not None:
                from gpux.pipeline.image import ImagePreprocessor

                assert entry.image.to is not None  # completed at build
                target = next(t for t in model.inputs if t.name == entry.image.to)
                processor = ImagePreprocessor(entry.image, name, target, allow_files=allow_files)
                fed.add(entry.image.to)
            else:
                from gpux.pipeline.audio import AudioPreprocessor

                assert entry.audio is not None and entry.audio.to is not None
                processor = AudioPreprocessor(entry.audio, name, allow_files=allow_files)
                fed.add(entry.audio.to)
                fed.update(s.input for s in entry.audio.state)
                if entry.audio.sample_rate_input:
                    fed.add(entry.audio.sample_rate_input)
            self._processors[name] = processor
        self.tensor_inputs = [t.name for t in model.inputs if t.name not in fed]
        # What users send to the handler's preprocess: named in the GPUXfile, else the tensors
        # no declarative entry feeds (the handler computes them from what it is sent).
        self.handler_inputs: list[str] = []
        if handler is not None and handler.preprocess is not None:
            named = (gpuxfile.get("handler") or {}).get("inputs")
            self.handler_inputs = [str(n) for n in named] if named else list(self.tensor_inputs)
        first = model.inputs[0].shape if model.inputs else None
        self._batchable = not any(e.audio for e in self.entries) and not (first and first[0] == 1)

    @property
    def input_names(self) -> list[str]:
        """What users send: pipeline inputs, then model inputs no pipeline input feeds."""
        if self.handler_inputs:
            return [str(e.name) for e in self.entries] + self.handler_inputs
        return [str(e.name) for e in self.entries] + self.tensor_inputs

    def processor(self, name: str) -> Any:
        """The preprocessor of pipeline input ``name`` (text, image or audio)."""
        return self._processors[name]

    def kind(self, name: str) -> str:
        """``text``, ``image``, ``audio``, ``tensor``, or ``value`` (a handler's input: any
        JSON value, given to its preprocess as sent)."""
        entry = next((e for e in self.entries if e.name == name), None)
        if entry is None and name in self.handler_inputs:
            return "value"
        return entry.kind if entry is not None else "tensor"

    def item(self, value: Any) -> dict[str, Any]:
        """A bare value becomes an item for the only input; a mapping is checked."""
        names = self.input_names
        if isinstance(value, Mapping):  # never a bare value: no input kind takes a mapping
            unknown = sorted(set(value) - set(names))
            if unknown:
                raise InputError(
                    f"unknown input '{unknown[0]}'", f"the model takes: {', '.join(names)}"
                )
            return dict(value)
        if len(names) == 1:
            return {names[0]: value}
        raise UsageError(
            "this model takes several inputs, so a bare value is ambiguous",
            f"name each one: {', '.join(f'{n}=...' for n in names)}",
        )

    def run(self, items: Sequence[Mapping[str, Any]], raw: bool = False) -> list[dict[str, Any]]:
        """One result per item: ``{result name: value}`` (plus ``outputs`` when ``raw``)."""
        if not items:
            return []
        for item in items:
            missing = [n for n in self.input_names if n not in item]
            if missing:
                raise InputError(
                    f"input '{missing[0]}' is missing",
                    f"the model takes: {', '.join(self.input_names)}",
                )
        if self._batchable:
            try:
                feed, images = self._batch_feed(items)
            except MixedSizesError as exc:
                return self._run_by_size(items, raw, exc.targets)
            return self._decode(feed, self.model.run(feed), items, raw, images)
        results = []
        for item in items:
            feed, outputs, images = self._run_one(item)
            results.extend(self._decode(feed, outputs, [item], raw, images))
        return results

    def _run_by_size(
        self, items: Sequence[Mapping[str, Any]], raw: bool, targets: list[tuple[int, int]]
    ) -> list[dict[str, Any]]:
        """Images that become different sizes (a detector's ``limit_side`` over photos of other
        shapes): one batch per size, results back in input order."""
        groups: dict[tuple[int, int], list[int]] = {}
        for index, target in enumerate(targets):
            groups.setdefault(target, []).append(index)
        results: list[dict[str, Any] | None] = [None] * len(items)
        for indices in groups.values():
            # Another image input may split a group further: run() handles it the same way.
            for index, result in zip(
                indices, self.run([items[i] for i in indices], raw), strict=True
            ):
                results[index] = result
        assert all(result is not None for result in results)
        return [result for result in results if result is not None]

    # -- pre-processing ------------------------------------------------------------------------

    def _batch_feed(self, items: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], Images]:
        """The model's feed for a batch, and how each image input's images were placed."""
        feed: dict[str, Any] = {}
        images: Images = {}
        for entry in self.entries:
            values = [item[str(entry.name)] for item in items]
            processor = self._processors[str(entry.name)]
            if entry.text is not None:
                feed.update(processor(values))
            else:
                assert entry.image is not None and entry.image.to is not None
                feed[entry.image.to], images[str(entry.name)] = processor.batch(values)
        if self.handler_inputs:
            feed.update(self._handler_feed(items, feed))
            return feed, images
        for name in self.tensor_inputs:
            arrays = [np.asarray(item[name]) for item in items]
            feed[name] = arrays[0] if len(arrays) == 1 else _concatenate(name, arrays)
        return feed, images

    def _handler_feed(
        self, items: Sequence[Mapping[str, Any]], feed: dict[str, Any]
    ) -> dict[str, Any]:
        """The tensors the handler's preprocess makes from the items (and the declarative
        entries' tensors, in ``context.feed``)."""
        from gpux.errors import HandlerError

        assert self.handler is not None
        context = self._context(items, dict(feed))
        produced = self.handler.call_preprocess([dict(item) for item in items], context)
        names = {t.name for t in self.model.inputs}
        unknown = sorted(set(produced) - names)
        missing = [n for n in self.tensor_inputs if n not in produced and n not in feed]
        if unknown or missing:
            problem = (
                f"returned '{unknown[0]}', which the model does not take"
                if unknown
                else f"did not return the model input '{missing[0]}'"
            )
            raise HandlerError(
                f"{self.handler.entry}: preprocess {problem}",
                f"return the model inputs {', '.join(self.tensor_inputs)} (one row per item)",
            )
        return produced

    def _context(self, items: Sequence[Mapping[str, Any]], feed: dict[str, Any]) -> Any:
        from gpux.pipeline.handler import HandlerContext

        assert self.handler is not None
        return HandlerContext(
            batch_size=len(items),
            items=items,
            labels=self.labels,
            config=self.gpuxfile,
            files=self.handler.files,
            run=self.model.run,
            feed=feed,
        )

    def _run_one(self, item: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Array], Images]:
        if not any(e.audio for e in self.entries):
            feed, images = self._batch_feed([item])
            return feed, self.model.run(feed), images
        entry = next(e for e in self.entries if e.audio is not None)
        audio = entry.audio
        assert audio is not None and audio.to is not None
        processor = self._processors[str(entry.name)]
        samples = processor.samples(item[str(entry.name)])
        base: dict[str, Any] = (
            self._handler_feed([item], {})
            if self.handler_inputs
            else {name: item[name] for name in self.tensor_inputs}
        )
        if audio.sample_rate_input:
            signature = next(t for t in self.model.inputs if t.name == audio.sample_rate_input)
            base[audio.sample_rate_input] = np.array(audio.sample_rate, dtype=signature.np_dtype)
        if audio.frame is None:
            feed = {**base, audio.to: samples[None, :]}
            return feed, self.model.run(feed), {}
        from gpux.pipeline.audio import initial_states

        state = initial_states(audio)
        carried = {s.output for s in audio.state}
        collected: dict[str, list[Array]] = {}
        for window in processor.frames(samples):
            outputs = self.model.run({**base, **state, audio.to: window[None, :]})
            for spec in audio.state:
                state[spec.input] = outputs[spec.output]
            for name, value in outputs.items():
                if name not in carried:
                    collected.setdefault(name, []).append(value)
        # [frames, 1, ...] per output -> [1 item, frames, ...]
        stacked = {name: np.concatenate(values)[None] for name, values in collected.items()}
        return base, stacked, {}

    # -- post-processing -----------------------------------------------------------------------

    def _frame_seconds(self) -> float | None:
        for entry in self.entries:
            if entry.audio is not None and entry.audio.frame is not None:
                return entry.audio.frame.size / entry.audio.sample_rate
        return None

    def _decode(
        self,
        feed: Mapping[str, Any],
        outputs: Mapping[str, Array],
        items: Sequence[Mapping[str, Any]],
        raw: bool,
        images: Images,
    ) -> list[dict[str, Any]]:
        count = len(items)
        results: list[dict[str, Any]] = [{} for _ in range(count)]
        axes = {s.name: s.batch_axis for s in self.model.outputs}
        first = _ItemsFirst(outputs, axes, count)
        if self.results:
            for spec in self.results:
                assert spec.source is not None  # completed at build
                context = steps.StepContext(
                    feed=feed,
                    labels=self.labels,
                    frame_seconds=self._frame_seconds(),
                    result=spec.name,
                    images=images,
                    outputs=first,
                )
                batch = first[spec.source]
                decoded = steps.apply(batch, spec.steps, context)
                for result, value in zip(results, decoded, strict=True):
                    result[spec.name] = value
        decodes = bool(self.results)
        if self.handler is not None and self.handler.postprocess is not None:
            decodes = True
            context = self._context(items, dict(feed))
            context.results = results
            for result, extra in zip(
                results, self.handler.call_postprocess(first, context), strict=True
            ):
                result.update(extra)
        if raw or not decodes:
            for position, result in enumerate(results):
                per_item = {
                    name: _item(value, axes.get(name, 0), position, count)
                    for name, value in outputs.items()
                }
                if decodes:
                    result["outputs"] = per_item  # arrays: callers choose how to show them
                else:
                    result.update({k: np.asarray(v).tolist() for k, v in per_item.items()})
        return results


class _ItemsFirst(Mapping[str, Array]):
    """The model's outputs with each one's batch axis moved to the front, on first use (an
    output no step reads is never checked: shared outputs and states may not hold items)."""

    def __init__(self, outputs: Mapping[str, Array], axes: Mapping[str, int | None], count: int):
        self._outputs, self._axes, self._count = outputs, axes, count
        self._done: dict[str, Array] = {}

    def __getitem__(self, name: str) -> Array:
        if name not in self._done:
            value = np.asarray(self._outputs[name])
            self._done[name] = items_first(name, value, self._axes.get(name, 0), self._count)
        return self._done[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)


def _item(value: Array, axis: int | None, position: int, count: int) -> Array:
    """One item's part of an output: along its batch axis, or all of it when the output does
    not hold one row per item (shared by the batch)."""
    array = np.asarray(value)
    if axis is None or array.ndim <= axis or array.shape[axis] != count:
        return array
    part: Array = np.take(array, position, axis=axis)
    return part


def _concatenate(name: str, arrays: list[Array]) -> Array:
    try:
        return np.concatenate(arrays)
    except ValueError:
        shapes = sorted({str(list(a.shape)) for a in arrays})
        raise InputError(
            f"input '{name}': items have different shapes ({', '.join(shapes)}) and cannot "
            "share a batch",
            "send them in separate runs, or with --batch-size 1",
        ) from None
