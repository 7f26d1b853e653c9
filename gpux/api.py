"""The Python API: ``gpux.load``, ``gpux.build`` and ``verify``. The CLI and the server use these too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpux.config.schema import Backend, Runtime
from gpux.errors import NotFoundError
from gpux.runtime.backend import Backend as BackendBase
from gpux.runtime.backend import Placement
from gpux.runtime.tensors import TensorSignature, check_feed
from gpux.store import Image, Store, mediatypes

if TYPE_CHECKING:
    from gpux.builder.build import BuildResult
    from gpux.builder.progress import Reporter
    from gpux.pipeline.runner import Pipeline
    from gpux.store.blobs import Progress
    from gpux.store.verify import Verification


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
        self.pipeline: Pipeline | None = None
        """Set when the image declares pre/post-processing: ``predict`` goes through it."""

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
        pipeline = self.pipeline or self._plain_pipeline()
        return pipeline.run([pipeline.item(value) for value in values], raw=raw)

    def _plain_pipeline(self) -> Pipeline:
        from gpux.pipeline.runner import Pipeline

        self.pipeline = Pipeline(self, {}, {})
        return self.pipeline

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


class Chain(Model):
    """A chain image's models, loaded each on its own backend, run as one by ``predict``.

    ``components`` holds each model (run one alone with ``chain.components["det"].predict``);
    ``placement`` is the detect model's, ``placements`` every model's.
    """

    def __init__(self, image: Image, components: dict[str, Model]) -> None:
        from pydantic import ValidationError

        from gpux.config.chain import ChainSteps
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

    def chain_pipeline(self, *, allow_files: bool) -> Pipeline:
        from gpux.pipeline.chain import ChainPipeline

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


def looks_like_path(text: str) -> bool:
    """Paths start with '.', '/', '~' or name an .onnx file; anything else is an image name."""
    return text.startswith((".", "/", "~")) or text.endswith(".onnx") or "\\" in text


def load(
    name_or_path: str | Path,
    *,
    backend: str | None = None,
    warmup: bool | None = None,
    store: Store | None = None,
    reporter: Reporter | None = None,
) -> Model:
    """Load an image (``name[:tag]`` or digest), a project folder (built first) or an .onnx file.

    ``backend`` overrides the GPUXfile's ``runtime.backend`` (``auto``, ``cpu``, ``cuda`` ...);
    ``warmup`` its ``runtime.warmup`` (one run at load so the first real call is not the slow one).
    """
    store = store or Store()
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or looks_like_path(text):
        path = Path(text).expanduser()
        if path.suffix == ".onnx":
            return _load_onnx_file(path, backend)
        # Loading a project runs it: the declared variants are for `gpux build`, not for this.
        result = build(path, backend=backend, store=store, reporter=reporter, variants=[])
        return load_image(result.image, backend, warmup)
    try:
        image = store.get(text)
    except NotFoundError as exc:
        if Path(text).is_dir():
            raise NotFoundError(
                exc.message, f"to use the project folder '{text}', write ./{text}"
            ) from None
        raise
    return load_image(image, backend, warmup)


def load_image(image: Image, backend: str | None = None, warmup: bool | None = None) -> Model:
    from gpux.runtime.registry import engine

    if image.components:
        components: dict[str, Model] = {}
        try:
            for key in image.components:
                components[key] = load_image(image.component(key), backend, warmup)
        except BaseException:
            for part in components.values():
                part.close()
            raise
        return Chain(image, components)
    config = image.config
    gpuxfile = config.get("gpuxfile", {})
    runtime = Runtime.model_validate(gpuxfile.get("runtime", {}))
    if backend:
        runtime.backend = Backend(backend)
    media = (
        mediatypes.MODEL_OPTIMIZED
        if image.layer(mediatypes.MODEL_OPTIMIZED)
        else (mediatypes.MODEL)
    )
    model_path = image.layer_path(media)
    inputs = [TensorSignature.from_json(t) for t in gpuxfile.get("inputs", [])]
    outputs = [TensorSignature.from_json(t) for t in gpuxfile.get("outputs", [])]
    labels = gpuxfile.get("labels")
    layer = image.layer(media)
    cache = image.store.root / "cache" / "tensorrt" / (layer.digest[7:19] if layer else "model")
    loaded = engine().load(
        model_path,
        runtime,
        cache_dir=cache,
        dimensions=gpuxfile_dimensions(config),
    )
    model = Model(loaded, inputs, outputs, image=image, labels=labels)
    if gpuxfile.get("preprocess") or gpuxfile.get("postprocess"):
        from gpux.pipeline.runner import Pipeline

        tokenizers = {
            str(entry["name"]): image.layer_path(
                mediatypes.TOKENIZER, f"{entry['name']}.tokenizer.json"
            )
            for entry in gpuxfile.get("preprocess", [])
            if "text" in entry
        }
        model.pipeline = Pipeline(model, gpuxfile, tokenizers)
    if runtime.warmup if warmup is None else warmup:
        from gpux.builder.smoke import generate_inputs

        model.run(generate_inputs(inputs))
    return model


def gpuxfile_dimensions(config: dict[str, Any]) -> dict[str, int]:
    """Symbolic dimensions the GPUXfile fixed (``shape: [1, 4]`` where the model says
    ``[batch, 4]``), recorded at build; ONNX Runtime is told, so it can plan (and graph) them."""
    dimensions = config.get("model", {}).get("fixed_dimensions", {})
    return {str(k): int(v) for k, v in dimensions.items()}


def _load_onnx_file(path: Path, backend: str | None) -> Model:
    """Run a bare .onnx file without a build: signature straight from the model."""
    from gpux.builder.analyze import load_checked, model_signature
    from gpux.runtime.registry import engine

    if not path.is_file():
        raise NotFoundError(
            f"model file '{path}' not found",
            "check the path; to run a stored image, give its name without '.onnx'",
        )
    inputs, outputs = model_signature(load_checked(path, str(path), full_check=False))
    runtime = Runtime(backend=Backend(backend or "auto"))
    return Model(engine().load(path, runtime), inputs, outputs)


def build(
    location: str | Path = ".",
    *,
    tag: str | None = None,
    optimize: bool = True,
    backend: str | None = None,
    force: bool = False,
    store: Store | None = None,
    reporter: Reporter | None = None,
    variants: list[str] | None = None,
    samples: str | None = None,
    accuracy: dict[str, float | None] | None = None,
) -> BuildResult:
    """Build the project at ``location`` into the store (a no-op when nothing changed).

    ``variants`` (specs like ``"fp16"``, ``"fused+fp16"``) replace the GPUXfile's
    ``build.optimize`` (``[]``: none); ``samples`` and ``accuracy`` override ``build.samples``
    and ``build.accuracy``.
    """
    from gpux.builder.build import BuildOptions
    from gpux.builder.build import build as run_build

    options = BuildOptions(
        tag=tag,
        optimize=optimize,
        backend=backend,
        force=force,
        variants=variants,
        samples=samples,
        accuracy=accuracy,
    )
    return run_build(location, options, store=store, reporter=reporter)


def verify(
    name: str | None = None, *, store: Store | None = None, progress: Progress | None = None
) -> Verification:
    """Re-hash every blob of every stored image (or of ``name``) against its digest, ignoring
    the stamps that let loads skip hashing (what ``gpux verify`` runs).

    The result lists each image with its ``problems``; ``result.ok`` is False when one is
    damaged, and ``result.error()`` is the error to raise, naming the images and the fix.
    ``progress`` is called with the bytes of each chunk hashed.
    """
    from gpux.store.verify import verify as verify_store

    return verify_store(store or Store(), name, progress=progress)
