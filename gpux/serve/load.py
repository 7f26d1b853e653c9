"""Load the images a server will serve, each with its pipeline and its own inference thread."""

from __future__ import annotations

import time

from gpux.config.schema import Serving
from gpux.errors import UsageError
from gpux.pipeline.runner import Pipeline
from gpux.serve.app import Limits, ServedModel, inference_threads
from gpux.store import Store


def load_served(
    names: list[str],
    backend: str | None,
    store: Store | None = None,
    overrides: dict[str, float | None] | None = None,
    trust_code: bool = False,
) -> list[ServedModel]:
    """``overrides``: command-line values for the GPUXfile's serving settings (max_batch_size,
    max_batch_delay_ms, timeout, max_queue), applied to every model."""
    from gpux.api import load_image

    store = store or Store()
    served: list[ServedModel] = []
    for name in names:
        image = store.get(name)
        started = time.perf_counter()
        model = load_image(image, backend, trust_code=trust_code)  # warm-up as the GPUXfile says
        seconds = time.perf_counter() - started
        repository, _, tag = image.name.rpartition(":")
        if any(s.name == repository for s in served):
            raise UsageError(
                f"two images named '{repository}' cannot be served together",
                "serve one tag of each model",
            )
        pipeline = _server_pipeline(model)
        serving = Serving.model_validate(image.config.get("gpuxfile", {}).get("serving", {}))
        values = {
            **serving.model_dump(),
            **{k: v for k, v in (overrides or {}).items() if v is not None},
        }
        limits = Limits(
            max_batch_size=int(values["max_batch_size"]),
            max_batch_delay_ms=float(values["max_batch_delay_ms"]),
            timeout=float(values["timeout"]),
            max_queue=int(values["max_queue"]),
        )
        served.append(
            ServedModel(
                repository or image.name,
                tag or "latest",
                model,
                seconds,
                pipeline,
                limits,
                inference_threads(model.placement.backend),
            )
        )
    return served


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
