"""Load a stored image: its model (or a chain's models) on a backend, with the pipeline that
``predict`` runs. What ``gpux.load``, the server and ``bench`` call."""

from __future__ import annotations

from gpux.config.schema import Backend, Runtime
from gpux.pipeline.chain import Chain
from gpux.pipeline.runner import Pipeline
from gpux.runtime.model import Model, gpuxfile_dimensions
from gpux.runtime.tensors import TensorSignature
from gpux.store import Image, mediatypes


def load_image(image: Image, backend: str | None = None, warmup: bool | None = None) -> Model:
    from gpux.runtime.engines import engine

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
    model.plain = Pipeline(model, {}, {})
    if gpuxfile.get("preprocess") or gpuxfile.get("postprocess"):
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
