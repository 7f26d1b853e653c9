"""The Python API: ``gpux.load``, ``gpux.build`` and ``verify``. The CLI and the server use these too.

The public facade: the loaded model is ``gpux.runtime.model.Model`` (a chain's,
``gpux.pipeline.chain.Chain``; a generative model's, ``gpux.runtime.generative.GenerativeModel``),
re-exported here; no module under ``gpux/runtime``,
``gpux/pipeline`` or ``gpux/builder`` imports this one (tests/test_layering.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpux.config.schema import Backend, Runtime
from gpux.errors import NotFoundError
from gpux.runtime.model import Model, gpuxfile_dimensions
from gpux.store import Image, Store

if TYPE_CHECKING:
    from gpux.builder.build import BuildResult
    from gpux.builder.progress import Reporter
    from gpux.pipeline.chain import Chain
    from gpux.runtime.generative import GenerativeModel
    from gpux.runtime.speech import SpeechModel
    from gpux.store.blobs import Progress
    from gpux.store.verify import Verification


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
    trust_code: bool = False,
    gpus: str | int | list[int] | None = None,
) -> Model | GenerativeModel | SpeechModel:
    """Load an image (``name[:tag]`` or digest), a project folder (built first) or an .onnx file.

    A generative image (``model.format: genai``) loads as a
    :class:`~gpux.runtime.generative.GenerativeModel`: ``generate(prompt, stream=True)`` and
    ``chat(messages, stream=True)`` iterate over text pieces as they are decoded. A speech image
    (a Whisper folder) loads as a :class:`~gpux.runtime.speech.SpeechModel`:
    ``transcribe(audio)`` returns the text, ``transcribe(audio, stream=True)`` its pieces.

    ``backend`` overrides the GPUXfile's ``runtime.backend`` (``auto``, ``cpu``, ``cuda`` ...);
    ``warmup`` its ``runtime.warmup`` (one run at load so the first real call is not the slow one).
    ``trust_code``: run the handler code of an image that was not built on this machine.
    ``gpus``: instances on several devices, as ``--gpus``: ``"all"``, a count, or device ids
    (``[0, 1]`` or ``"0,1"``); calls go to the least busy instance.
    """
    store = store or Store()
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or looks_like_path(text):
        path = Path(text).expanduser()
        if path.suffix == ".onnx":
            return _load_onnx_file(path, backend)
        # Loading a project runs it: the declared variants are for `gpux build`, not for this.
        result = build(path, backend=backend, store=store, reporter=reporter, variants=[])
        # Built here: its code is the user's.
        return load_image(result.image, backend, warmup, gpus=gpus)
    try:
        image = store.get(text)
    except NotFoundError as exc:
        if Path(text).is_dir():
            raise NotFoundError(
                exc.message, f"to use the project folder '{text}', write ./{text}"
            ) from None
        raise
    return load_image(image, backend, warmup, trust_code, gpus)


def load_image(
    image: Image,
    backend: str | None = None,
    warmup: bool | None = None,
    trust_code: bool = False,
    gpus: str | int | list[int] | None = None,
) -> Model | GenerativeModel | SpeechModel:
    """A stored image loaded on ``backend`` (None: its GPUXfile's), with its pipeline."""
    from gpux.errors import UsageError
    from gpux.pipeline.loading import load_image as load_stored
    from gpux.runtime.generative import is_generative, load_generative
    from gpux.runtime.instances import GpuRequest
    from gpux.runtime.speech import is_speech, load_speech

    request = GpuRequest.parse(gpus) if gpus is not None else None
    if request is not None and (is_speech(image) or is_generative(image)):
        raise UsageError(
            f"--gpus is for tensor models; '{image.name}' is generative and runs on one device",
            "drop --gpus, or choose the device with --backend and runtime.device",
        )
    if is_speech(image):
        return load_speech(image, backend)
    if is_generative(image):
        return load_generative(image, backend)

    return load_stored(image, backend, warmup, trust_code, gpus=request)


def _load_onnx_file(path: Path, backend: str | None) -> Model:
    """Run a bare .onnx file without a build: signature straight from the model."""
    from gpux.builder.analyze import load_checked, model_signature
    from gpux.pipeline.runner import Pipeline
    from gpux.runtime.engines import engine_for

    if not path.is_file():
        raise NotFoundError(
            f"model file '{path}' not found",
            "check the path; to run a stored image, give its name without '.onnx'",
        )
    inputs, outputs = model_signature(load_checked(path, str(path), full_check=False))
    runtime = Runtime(backend=Backend(backend or "auto"))
    model = Model(engine_for(runtime.backend).load(path, runtime), inputs, outputs)
    model.plain = Pipeline(model, {}, {})
    return model


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


__all__ = [
    "Chain",
    "GenerativeModel",
    "Model",
    "SpeechModel",
    "build",
    "diagnose",
    "gpuxfile_dimensions",
    "load",
    "load_image",
    "looks_like_path",
    "verify",
]


def __getattr__(name: str) -> Any:
    if name == "Chain":  # imported on first use: it pulls in the whole pipeline
        from gpux.pipeline.chain import Chain

        return Chain
    if name == "GenerativeModel":
        from gpux.runtime.generative import GenerativeModel

        return GenerativeModel
    if name == "SpeechModel":
        from gpux.runtime.speech import SpeechModel

        return SpeechModel
    raise AttributeError(f"module 'gpux.api' has no attribute {name!r}")


def diagnose(model: str | None = None, gpus: str | None = None) -> dict[str, Any]:
    """``gpux doctor``: the machine's GPUs, backends and libraries; with ``model`` (an image,
    project or .onnx file), also where that model really runs; with ``gpus`` (as ``--gpus``),
    the instances a model would get here (loaded so, with ``model``)."""
    from gpux.errors import GPUXError
    from gpux.runtime.doctor import diagnose as machine

    report = machine(gpus)
    if model is not None:
        try:
            loaded = load(model, warmup=False, gpus=gpus)
            try:
                from gpux.runtime.generative import GenerativeModel
                from gpux.runtime.speech import SpeechModel

                if isinstance(loaded, GenerativeModel | SpeechModel):
                    loaded.prove_placement()  # its sessions are genai's: read ONNX Runtime's log
                report["model"] = {"target": model, "placement": loaded.placement.to_json()}
            finally:
                loaded.close()
        except GPUXError as exc:
            report["model"] = {"target": model, "error": exc.message, "hint": exc.hint}
    return report
