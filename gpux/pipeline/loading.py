"""Load a stored image: its model (or a chain's models) on a backend, with the pipeline that
``predict`` runs. What ``gpux.load``, the server and ``bench`` call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpux.config.schema import Backend, Runtime
from gpux.errors import StoreError, UntrustedCodeError
from gpux.pipeline.chain import Chain
from gpux.pipeline.handler import Handler
from gpux.pipeline.runner import Pipeline
from gpux.runtime.instances import GpuRequest
from gpux.runtime.model import Model, gpuxfile_dimensions
from gpux.runtime.tensors import TensorSignature
from gpux.store import Image, mediatypes


def load_image(
    image: Image,
    backend: str | None = None,
    warmup: bool | None = None,
    trust_code: bool = False,
    batch_sizes: tuple[int, ...] = (),
    gpus: GpuRequest | None = None,
    session: Callable[[Image], Any] | None = None,
) -> Model:
    """``trust_code``: run the handler code of an image that was not built on this machine
    (pulled, loaded from an archive); without it such an image is refused before any import.
    ``batch_sizes``: on backends where a new batch size is slow (CUDA), one more session per
    size with the batch fixed (gpux/runtime/sized_sessions.py); on the wgpu engine, the batch
    buckets (default: the GPUXfile's serving sizes); the server's preferred sizes.
    ``gpus``: instances on several devices (gpux/runtime/instances.py); default the GPUXfile's
    ``runtime.gpus``, else one instance on ``runtime.device``. ``session``: makes the backend
    in place of loading one here (a server front-end's model that runs in the shared engine,
    gpux/serve/engine_client.py)."""
    from gpux.runtime.engines import engine_for
    from gpux.runtime.generative import is_generative

    if is_generative(image):
        from gpux.errors import UsageError

        raise UsageError(
            f"image '{image.name}' is a generative model, which takes prompts, not tensors",
            f"run it with 'gpux run {image.name} --input PROMPT' or gpux.load('{image.name}')"
            ".generate(...); serving it is not there yet",
        )
    if image.components:
        components: dict[str, Model] = {}
        try:
            for key in image.components:
                components[key] = load_image(
                    image.component(key), backend, warmup, trust_code, batch_sizes, gpus, session
                )
        except BaseException:
            for part in components.values():
                part.close()
            raise
        return Chain(image, components)
    config = image.config
    gpuxfile = config.get("gpuxfile", {})
    handler = image_handler(image, trust_code)  # refused or failing: before the model loads
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
    cache = image.store.scratch / "cache" / "tensorrt" / (layer.digest[7:19] if layer else "model")

    def load_session(runtime: Runtime) -> Any:
        loaded = engine_for(runtime.backend).load(
            model_path,
            runtime,
            cache_dir=cache,
            dimensions=gpuxfile_dimensions(config),
        )
        if batch_sizes and loaded.placement.backend in SIZED_SESSION_BACKENDS:
            loaded = _sized(loaded, inputs, batch_sizes, model_path, runtime, cache, config)
        if loaded.placement.backend == "wgpu":
            _bucketed(loaded, batch_sizes, gpuxfile)
        return loaded

    if gpus is None and runtime.gpus is not None:
        gpus = GpuRequest.parse(runtime.gpus, "runtime.gpus")
    if session is not None:
        loaded = session(image)
    elif gpus is None:
        loaded = load_session(runtime)
    else:
        loaded = _instances(gpus, runtime, load_session, inputs[0].name if inputs else None)
    model = Model(loaded, inputs, outputs, image=image, labels=labels)
    model.plain = Pipeline(model, {}, {})
    if gpuxfile.get("preprocess") or gpuxfile.get("postprocess") or handler is not None:
        tokenizers = {
            str(entry["name"]): image.layer_path(
                mediatypes.TOKENIZER, f"{entry['name']}.tokenizer.json"
            )
            for entry in gpuxfile.get("preprocess", [])
            if "text" in entry
        }
        model.pipeline = Pipeline(model, gpuxfile, tokenizers, handler=handler)
    if runtime.warmup if warmup is None else warmup:
        from gpux.builder.smoke import generate_inputs
        from gpux.runtime.instances import instance_count

        for _ in range(instance_count(loaded)):  # calls go round the instances
            model.run(generate_inputs(inputs))
    return model


def _instances(
    request: GpuRequest, runtime: Runtime, load_session: Any, batch_input: str | None
) -> Any:
    """An instance pool: the devices ``request`` names on the backend ``runtime`` asks for,
    one session (or set of sized sessions) on each. ``auto`` must find a GPU backend: asking
    for GPUs never ends on the CPU without a word."""
    import os

    from gpux.errors import BackendError
    from gpux.runtime import instances, selection

    backend = str(runtime.backend.value)
    if backend == "auto":
        found = selection.plan("auto")
        gpu = next(
            (c.backend for c in found.candidates if c.backend in instances.DEVICE_BACKENDS), None
        )
        if gpu is None:
            raise BackendError(
                f"{request.describe()}: no GPU backend works here"
                + (f" ({found.explanation('cpu')})" if found.explanation("cpu") else ""),
                "see `gpux doctor`; for copies on the CPU say so: --backend cpu --gpus N",
            )
        backend = gpu
    plans = instances.plan(request, instances.machine_gpus(backend), backend, os.cpu_count() or 1)

    def load_one(plan: instances.InstancePlan) -> Any:
        update: dict[str, Any] = {"backend": Backend(backend), "device": plan.device or 0}
        if plan.threads and not runtime.threads:
            update["threads"] = plan.threads
        return load_session(runtime.model_copy(update=update))

    return instances.load_all(plans, load_one, batch_input)


# Where one session per batch size pays: the CUDA EP re-plans on every batch-size change.
SIZED_SESSION_BACKENDS = frozenset({"cuda"})


def _sized(
    loaded: Any,
    inputs: list[TensorSignature],
    sizes: tuple[int, ...],
    model_path: Any,
    runtime: Runtime,
    cache: Any,
    config: dict[str, Any],
) -> Any:
    """``loaded`` plus a session per batch size, when every input shares one batch symbol."""
    from gpux import env
    from gpux.builder.smoke import generate_inputs
    from gpux.runtime.engines import engine_for
    from gpux.runtime.sized_sessions import changes_are_slow, wrap

    symbols = {t.shape[0] for t in inputs if t.shape}
    if not inputs or len(symbols) != 1 or not isinstance(next(iter(symbols)), str):
        return loaded  # a fixed or mixed batch: one session sees one shape already
    # A CUDA graph replays one shape: asked for, it needs a session per size whatever a change
    # costs (a fixed batch may also let ONNX Runtime fold shape arithmetic that it would keep
    # on the CPU, which rules a graph out).
    graphs = runtime.cuda.cuda_graphs
    if not graphs and not changes_are_slow(loaded, generate_inputs(inputs), inputs[0].name):
        return loaded  # no Conv-like state to rebuild: sizes are cheap, extra sessions are not
    symbol = str(next(iter(symbols)))
    fixed = gpuxfile_dimensions(config)
    return wrap(
        loaded,
        sizes,
        symbol,
        inputs[0].name,
        lambda batch: engine_for(runtime.backend).load(
            model_path, runtime, cache_dir=cache, dimensions={**fixed, **batch}
        ),
        copies=env.graph_copies(),
    )


def _bucketed(loaded: Any, sizes: tuple[int, ...], gpuxfile: dict[str, Any]) -> None:
    """The wgpu engine builds an executor per batch size: give it the few it pads batches up
    to (gpux/runtime/wgpu/buckets.py). The server's sizes; else the GPUXfile's
    ``serving.preferred_batch_sizes``, else powers of two up to its ``max_batch_size``."""
    from gpux.config.schema import Serving
    from gpux.runtime.sized_sessions import batch_sizes
    from gpux.runtime.wgpu.backend import WgpuBackend

    if not isinstance(loaded, WgpuBackend):
        return
    if not sizes:
        serving = Serving.model_validate(gpuxfile.get("serving", {}))
        sizes = batch_sizes(serving.preferred_batch_sizes, serving.max_batch_size)
    loaded.use_batch_buckets(sizes)


def image_handler(image: Image, trust_code: bool = False) -> Handler | None:
    """The image's handler code, imported; None when it has none. Code of an image this machine
    did not build runs only with ``trust_code`` (as ``trust_remote_code`` on the Hub)."""
    from gpux.store.code import handler_entry, unpacked

    entry = handler_entry(image)
    if entry is None:
        return None
    refuse_untrusted(image, trust_code)
    requirements = image.config.get("handler", {}).get("requirements", [])
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        raise StoreError(
            f"image '{image.name}' lists its handler's requirements in a form GPUX does not know",
            "rebuild the image with 'gpux build', or pull it again",
        )
    return Handler(unpacked(image), entry, requirements)


def refuse_untrusted(image: Image, trust_code: bool) -> None:
    """Raise :class:`UntrustedCodeError` when ``image`` (or a model of a chain) holds code and
    was not built on this machine, unless ``trust_code``. Cheap: reads no layer."""
    from gpux.store.code import built_here, code_files

    if trust_code or built_here(image):
        return
    files = code_files(image)
    if not files:
        return
    shown = ", ".join(files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
    raise UntrustedCodeError(
        f"image '{image.name}' holds Python code ({shown}) and was not built on this "
        "machine; running it gives that code your user's rights",
        f"read it first (gpux inspect {image.name} --code), then pass --trust-code "
        "(trust_code=True in Python) if you trust where it came from",
    )
