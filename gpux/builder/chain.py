"""``gpux build`` of a chain: each model is built as the image of its own project (stored as
NAME-KEY, cached like any build), the connections are checked, and one image holds them all.

The chain's image lists every model's layers under ``KEY/`` titles and embeds every model's
image config, so it is pushed, pulled, saved and verified as one image, and blobs shared with
the models' own images are stored once.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gpux.config.load import ChainProject
from gpux.config.pipeline import PipelineOutput
from gpux.errors import ConfigValidationError
from gpux.store import Image, LayerSource, Store, mediatypes
from gpux.store.reference import Reference, parse

if TYPE_CHECKING:
    from gpux.builder.build import BuildOptions, BuildResult
    from gpux.builder.progress import Reporter

REGION_STEPS = ("db", "yolo", "nms", "detections")
"""Steps whose result lists regions with a ``box``, which a chain crops."""


def build_chain(
    chain: ChainProject,
    reference: Reference,
    options: BuildOptions,
    store: Store,
    reporter: Reporter,
) -> BuildResult:
    from gpux.builder.build import CONFIG_SCHEMA, BuildResult, build_image, tool_versions

    if options.variants:
        raise ConfigValidationError(
            f"{chain.path}: variants are built per model, not for a chain",
            "build the variant in the model's own project (gpux build FOLDER --variant ...)",
        )
    images: dict[str, Image] = {}
    for key, project in chain.models.items():
        part = parse(f"{reference.repository}-{key}:{reference.tag}")
        with reporter.step(f"model {key}") as step:
            step.detail = f"{project.path} -> {part.name}"
        images[key] = build_image(project, part, options, store, reporter).image
    with reporter.step("check chain") as step:
        check_connections(chain, images)
        step.detail = f"{chain.config.chain.detect} -> crops -> {chain.config.chain.each}"
    material = {
        "chain": chain.config.model_dump(mode="json"),
        "models": {key: image.config.get("build", {}).get("key") for key, image in images.items()},
        "config_schema": CONFIG_SCHEMA,
    }
    key = "sha256:" + hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    if not options.force and store.build_key(reference.name) == key:
        reporter.skip("write image", "unchanged since the last build")
        return BuildResult(store.get(reference.name), reference, True, reporter)
    with reporter.step("write image") as step:
        gpuxfile = chain.config.model_dump(mode="json", exclude_none=True)
        gpuxfile["name"] = gpuxfile.get("name") or chain.default_name
        placements = {k: i.config.get("smoke", {}).get("placement") for k, i in images.items()}
        config: dict[str, Any] = {
            "schema": CONFIG_SCHEMA,
            "gpuxfile": gpuxfile,
            "components": {k: image.config for k, image in images.items()},
            "smoke": {"placement": placements[chain.config.chain.detect], "models": placements},
            "build": {
                "key": key,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "versions": tool_versions(),
            },
        }
        layers = [
            LayerSource(layer.media_type, f"{k}/{layer.title}", digest=layer.digest)
            for k, image in images.items()
            for layer in image.layers
        ]
        detect = images[chain.config.chain.detect].annotations
        annotations = {
            mediatypes.BUILD_KEY: key,
            mediatypes.TITLE: reference.repository,
            mediatypes.VERSION: reference.tag,
            "dev.gpux.chain": ",".join(images),
            **{k: v for k, v in detect.items() if k.startswith("dev.gpux.placement.")},
        }
        if chain.config.description:
            annotations[mediatypes.DESCRIPTION] = chain.config.description
        image = store.write_image(reference, config, layers, annotations)
        step.detail = f"{reference.name} {image.digest[7:19]}"
    return BuildResult(image, reference, False, reporter)


def check_connections(chain: ChainProject, images: dict[str, Image]) -> None:
    """The detect model lists regions under ``chain.regions``, and both models take one image."""
    steps = chain.config.chain
    where = str(chain.path)
    detect = images[steps.detect].config.get("gpuxfile", {})
    results = {r["name"]: r for r in detect.get("postprocess", [])}
    if steps.regions not in results:
        raise ConfigValidationError(
            f"{where}: chain.regions is '{steps.regions}', but model '{steps.detect}' has no "
            f"such result (its results: {', '.join(results) or 'none'})",
            f"name the result of its {', '.join(REGION_STEPS)} step",
        )
    listed = PipelineOutput.model_validate(results[steps.regions]).steps
    name = listed[-1].name if listed else None
    if name not in REGION_STEPS:
        raise ConfigValidationError(
            f"{where}: result '{steps.regions}' of model '{steps.detect}' does not list regions "
            f"(its last step is {name or 'none'})",
            f"end it with one of the steps {', '.join(REGION_STEPS)}",
        )
    for key in (steps.detect, steps.each):
        inputs = images[key].config.get("gpuxfile", {}).get("preprocess", [])
        if len(inputs) != 1 or "image" not in inputs[0]:
            raise ConfigValidationError(
                f"{where}: model '{key}' must take one image (one image input under "
                "preprocess) to be part of a chain",
                "declare its image input in its GPUXfile",
            )
