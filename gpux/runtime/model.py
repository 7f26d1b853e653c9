"""A model loaded on a backend: the object ``gpux.load`` returns.

It lives below the pipeline and the builder, which both hold one; the loader (``gpux.pipeline.
loading``) attaches the pipeline that ``predict`` runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from gpux.errors import UsageError
from gpux.runtime.backend import Backend as BackendBase
from gpux.runtime.backend import Placement
from gpux.runtime.tensors import TensorSignature, check_feed

if TYPE_CHECKING:
    from gpux.store import Image


class Predictor(Protocol):
    """What ``predict`` needs from a pipeline (``gpux.pipeline.runner.Pipeline``)."""

    def item(self, value: Any) -> dict[str, Any]: ...

    def run(
        self, items: Sequence[Mapping[str, Any]], raw: bool = False
    ) -> list[dict[str, Any]]: ...


class Model:
    """A model loaded on a backend, ready to run.

    ``inputs``/``outputs`` are the signatures recorded at build (declared in the GPUXfile or read
    from the model). ``run`` checks names, dtypes and shapes before the backend sees them.
    """

    def __init__(
        self,
        backend: BackendBase,
        inputs: list[TensorSignature],
        outputs: list[TensorSignature],
        image: Image | None = None,
        labels: list[str] | None = None,
    ) -> None:
        self._backend = backend
        self.inputs = inputs
        self.outputs = outputs
        self.image = image
        self.labels = labels
        self._run = backend.run
        self.pipeline: Predictor | None = None
        """The image's pre/post-processing, when it declares one (set by the loader)."""
        self.plain: Predictor | None = None
        """What ``predict`` runs without one: tensors in, tensors out (set by the loader)."""

    @property
    def placement(self) -> Placement:
        """Where the model really runs (backend, providers, device, fallback reason)."""
        return self._backend.placement

    @property
    def backend(self) -> BackendBase:
        return self._backend

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
        """Run one inference: ``{"input name": array-like}`` -> ``{"output name": array}``."""
        return self._run(check_feed(inputs, self.inputs))

    def predict(self, value: Any, *, raw: bool = False) -> dict[str, Any]:
        """Run the GPUXfile's pipeline on one input: a sentence, an image file or bytes, an audio
        file ... (or ``{name: value}`` for several inputs) -> the decoded results."""
        return self.predict_batch([value], raw=raw)[0]

    def predict_batch(self, values: Sequence[Any], *, raw: bool = False) -> list[dict[str, Any]]:
        """``predict`` for many inputs at once, batched into as few model calls as possible."""
        pipeline = self.pipeline or self.plain
        if pipeline is None:
            raise UsageError(
                "this model was made without a pipeline, so it takes tensors only",
                "load it with gpux.load(...), or call Model.run with tensors",
            )
        return pipeline.run([pipeline.item(value) for value in values], raw=raw)

    def run_on_device(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Like ``run``, but outputs stay in device memory (ONNX Runtime OrtValues).

        numpy inputs are checked like ``run``'s; OrtValue inputs already on the device are passed
        as they are. Needs a backend with device outputs (the ONNX Runtime engine).
        """
        arrays = {k: v for k, v in inputs.items() if isinstance(v, np.ndarray | list | int | float)}
        checked = check_feed(arrays, [s for s in self.inputs if s.name in arrays]) if arrays else {}
        run_on_device = getattr(self._backend, "run_on_device", None)
        if run_on_device is None:
            from gpux.errors import BackendError

            raise BackendError(
                f"the {self.placement.backend} backend cannot keep outputs on the device",
                "use Model.run",
            )
        result: dict[str, Any] = run_on_device({**inputs, **checked})
        return result

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        name = self.image.name if self.image else "model"
        return f"<gpux.Model {name} on {self.placement.backend}>"


def gpuxfile_dimensions(config: dict[str, Any]) -> dict[str, int]:
    """Symbolic dimensions the GPUXfile fixed (``shape: [1, 4]`` where the model says
    ``[batch, 4]``), recorded at build; ONNX Runtime is told, so it can plan (and graph) them."""
    dimensions = config.get("model", {}).get("fixed_dimensions", {})
    return {str(k): int(v) for k, v in dimensions.items()}
