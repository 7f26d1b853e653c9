"""Load the images a server will serve, each with its pipeline and its own inference thread; a
generative image with its engine (served on the OpenAI routes, gpux/serve/openai_api.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gpux.config.schema import Serving
from gpux.errors import UsageError
from gpux.pipeline.runner import Pipeline
from gpux.runtime.sized_sessions import batch_sizes
from gpux.serve.app import Limits, ServedModel, inference_threads
from gpux.store import Store

if TYPE_CHECKING:
    from gpux.serve.engine_client import EngineClient


def load_served(
    names: list[str],
    backend: str | None,
    store: Store | None = None,
    overrides: dict[str, Any] | None = None,
    trust_code: bool = False,
    gpus: str | None = None,
    engine: EngineClient | None = None,
    shared_engine: bool = False,
) -> list[ServedModel]:
    """``names``: images in ``store``, or model folders (gpux/store/folder.py). ``overrides``:
    command-line values for the GPUXfile's serving settings (max_batch_size,
    max_batch_delay_ms, timeout, max_queue, max_tokens), applied to every model. ``gpus``:
    ``--gpus`` (instances on several devices, gpux/runtime/instances.py) for every model.
    ``engine``: the shared engine that runs the tensor models (a front-end of ``--shared-engine``,
    gpux/serve/engine.py); they are not loaded here. ``shared_engine``: this is the shared
    engine's own load: generative images are left out (the front-ends serve those), and its
    models run the calls of every front-end (more of them in flight by default,
    ``inference_threads``)."""
    from gpux.pipeline.loading import load_image
    from gpux.runtime.generative import is_generative
    from gpux.runtime.instances import GpuRequest, instance_count
    from gpux.runtime.speech import is_speech
    from gpux.store.folder import images

    request = GpuRequest.parse(gpus) if gpus is not None else None

    served: list[ServedModel] = []
    for image in images(names, store or Store()):
        serving = Serving.model_validate(image.config.get("gpuxfile", {}).get("serving", {}))
        values = {
            **serving.model_dump(),
            **{k: v for k, v in (overrides or {}).items() if v is not None},
        }
        max_batch_size = int(values["max_batch_size"])
        given = _listed(values.get("preferred_batch_sizes"))
        started = time.perf_counter()
        if is_generative(image):
            if shared_engine:
                continue
            generative_model = _served_generative(image, backend, values, started, is_speech(image))
            if any(s.name == generative_model.name for s in served):
                raise UsageError(
                    f"two images named '{generative_model.name}' cannot be served together",
                    "serve one tag of each model",
                )
            served.append(generative_model)
            continue
        if engine is not None:
            served.append(_served_by_engine(image, backend, values, engine, trust_code))
            continue
        model = load_image(  # warm-up as the GPUXfile says
            image,
            backend,
            trust_code=trust_code,
            # Sessions per size where sizes are slow to change (CUDA); used only there.
            batch_sizes=preferred_sizes(given, max_batch_size, "cuda"),
            gpus=request,
        )
        seconds = time.perf_counter() - started
        repository, _, tag = image.name.rpartition(":")
        if any(s.name == repository for s in served):
            raise UsageError(
                f"two images named '{repository}' cannot be served together",
                "serve one tag of each model",
            )
        pipeline = _server_pipeline(model)
        limits = Limits(
            max_batch_size=max_batch_size,
            max_batch_delay_ms=float(values["max_batch_delay_ms"]),
            timeout=float(values["timeout"]),
            max_queue=int(values["max_queue"]),
            preferred_batch_sizes=_padding_sizes(model, given, max_batch_size),
            max_tokens=values.get("max_tokens"),
        )
        served.append(
            ServedModel(
                repository or image.name,
                tag or "latest",
                model,
                seconds,
                pipeline,
                limits,
                # Each instance keeps its own calls in flight: the pool sends each to the
                # least busy one.
                inference_threads(model.placement.backend, shared_engine)
                * instance_count(model.backend),
            )
        )
    return served


def _served_by_engine(
    image: Any, backend: str | None, values: dict[str, Any], engine: EngineClient, trust_code: bool
) -> ServedModel:
    """A front-end's model that runs in the shared engine: the pipeline runs here, each model
    call there. The engine pads and batches across every front-end (its batcher has the
    preferred sizes and the delay); this side only keeps a few calls in flight, unpadded and
    without waiting, so that a request reaches the engine at once."""
    from gpux.pipeline.loading import load_image
    from gpux.serve.engine_client import FRONT_END_CALLS, RemoteBackend

    started = time.perf_counter()
    timeout = float(values["timeout"])
    model = load_image(
        image,
        backend,
        warmup=False,  # the engine warmed the model before it listened
        trust_code=trust_code,
        session=lambda part: RemoteBackend(engine, part.name, timeout),
    )
    repository, _, tag = image.name.rpartition(":")
    limits = Limits(
        max_batch_size=int(values["max_batch_size"]),
        max_batch_delay_ms=0.0,
        timeout=timeout,
        max_queue=int(values["max_queue"]),
        max_tokens=values.get("max_tokens"),
    )
    return ServedModel(
        repository or image.name,
        tag or "latest",
        model,
        time.perf_counter() - started,
        _server_pipeline(model),
        limits,
        FRONT_END_CALLS,
        remote=True,
    )


def _served_generative(
    image: Any, backend: str | None, values: dict[str, Any], started: float, speech: bool
) -> ServedModel:
    """A generative (or speech) image: its engine, and a stand-in ``Model`` that carries its
    placement to the routes that report it and refuses tensors (gpux/serve/generation.py)."""
    from gpux.runtime.generative import GenerativeModel, load_generative
    from gpux.runtime.model import Model
    from gpux.runtime.speech import load_speech
    from gpux.serve.generation import GenerativeBackend

    engine = load_speech(image, backend) if speech else load_generative(image, backend)
    repository, _, tag = image.name.rpartition(":")
    limits = Limits(
        timeout=float(values["timeout"]),
        max_queue=int(values["max_queue"]),
        max_tokens=values.get("max_tokens"),
    )
    stand_in = Model(GenerativeBackend(engine), [], [], image=image)
    seconds = time.perf_counter() - started
    return ServedModel(
        repository or image.name,
        tag or "latest",
        stand_in,
        seconds,
        None,
        limits,
        1,
        generative=engine if isinstance(engine, GenerativeModel) else None,
        speech=None if isinstance(engine, GenerativeModel) else engine,
    )


# Backends where a batch size the session has not just run costs 0.1-0.85 s (docs/benchmarks.md),
# and the wgpu engine, which builds an executor per batch size (its buckets are these sizes:
# padded to by the server, they are all built by the warm-up before the model is ready).
SHAPE_SENSITIVE = frozenset({"cuda", "tensorrt", "wgpu"})


def preferred_sizes(given: list[int] | None, max_batch_size: int, backend: str) -> tuple[int, ...]:
    """The batch sizes a model runs: as given, else powers of two up to ``max_batch_size`` (and
    it) on backends where new sizes are slow, else none (padding would only cost)."""
    if max_batch_size <= 1 or (given is None and backend not in SHAPE_SENSITIVE):
        return ()
    return batch_sizes(given, max_batch_size)


def _padding_sizes(model: Any, given: list[int] | None, max_batch_size: int) -> tuple[int, ...]:
    """The sizes batches are padded to: as given; by default on CUDA only when the loader found
    batch-size changes slow for this model (and made sessions per size), where padding pays."""
    from gpux.runtime.instances import InstancePool
    from gpux.runtime.sized_sessions import SizedSessions

    backend = model.placement.backend
    loaded = model.backend
    if isinstance(loaded, InstancePool):  # every instance was made alike: ask the first
        loaded = loaded.instances[0].backend
    if given is None and backend == "cuda" and not isinstance(loaded, SizedSessions):
        return ()
    return preferred_sizes(given, max_batch_size, backend)


def _listed(value: Any) -> list[int] | None:
    """The GPUXfile's list, or the command line's text ("1,8,32" or "none")."""
    if isinstance(value, str):
        return [] if value == "none" else [int(part) for part in value.split(",")]
    return None if value is None else [int(n) for n in value]


def _server_pipeline(model: object) -> Pipeline:
    """The image's pipeline, rebuilt so that clients cannot name files on the server."""
    from gpux.pipeline.chain import Chain
    from gpux.runtime.model import Model
    from gpux.store import mediatypes

    if isinstance(model, Chain):
        return model.chain_pipeline(allow_files=False)
    assert isinstance(model, Model)
    gpuxfile = model.image.config.get("gpuxfile", {}) if model.image else {}
    tokenizers = {
        str(entry["name"]): model.image.layer_path(
            mediatypes.TOKENIZER, f"{entry['name']}.tokenizer.json"
        )
        for entry in gpuxfile.get("preprocess", [])
        if "text" in entry and model.image is not None
    }
    handler = model.pipeline.handler if isinstance(model.pipeline, Pipeline) else None
    return Pipeline(model, gpuxfile, tokenizers, allow_files=False, handler=handler)
