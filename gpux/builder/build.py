"""``gpux build``: GPUXfile -> verified, optimised, smoke-tested image in the store.

Steps: load GPUXfile, resolve model, check (onnx.checker full + shape inference), signature
(declared vs model), optimise (ORT basic, offline), smoke run, write image; then the variants of
``build.optimize`` (fp16, int8, fused ...), each its own image (``gpux.builder.variants``).

A build key (hash of the resolved GPUXfile, the model's sha256, the options and the tool
versions) is recorded on the image. Rebuilding an unchanged project finds the key on the tagged
image and stops before importing onnx or onnxruntime: a no-op in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpux import __version__
from gpux.builder import sources
from gpux.builder.progress import Reporter
from gpux.config.load import ChainProject, Project, load_any
from gpux.config.schema import Backend
from gpux.store import Image, LayerSource, Store, mediatypes
from gpux.store.reference import Reference, parse

if TYPE_CHECKING:
    from gpux.builder.variants import VariantResult

CONFIG_SCHEMA = 1
# The optimised graph is stored (beside the original) only when its file is at least this much
# smaller: an equal-sized copy would double the image for rewrites ONNX Runtime redoes at load.
# File sizes, not timings, decide, so the same inputs always give the same image.
MIN_OPTIMIZED_SAVING = 0.05


@dataclass
class BuildOptions:
    tag: str | None = None
    optimize: bool = True
    backend: str | None = None  # overrides runtime.backend for the smoke run
    force: bool = False  # rebuild even when the build key matches
    variants: list[str] | None = None  # --variant specs; None: the GPUXfile's build.optimize
    samples: str | None = None  # --samples; None: the GPUXfile's build.samples
    accuracy: dict[str, float | None] | None = None  # bounds given as flags, over build.accuracy


@dataclass
class BuildResult:
    image: Image
    reference: Reference
    cached: bool
    reporter: Reporter
    variants: list[VariantResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        config = self.image.config
        return {
            "image": self.reference.name,
            "digest": self.image.digest,
            "cached": self.cached,
            "size": self.image.size,
            "placement": config.get("smoke", {}).get("placement"),
            "smoke": {k: v for k, v in config.get("smoke", {}).items() if k != "placement"},
            "steps": [
                {
                    "step": s.title,
                    "seconds": round(s.seconds, 4),
                    "detail": s.detail,
                    "skipped": s.skipped,
                }
                for s in self.reporter.steps
            ],
            "warnings": self.reporter.warnings,
            "variants": [variant.to_json() for variant in self.variants],
        }


@cache
def tool_versions() -> dict[str, str]:
    """Versions that make a build key (installed packages do not change under a process)."""
    from gpux.runtime.discovery import installed_versions

    return {
        "gpux": __version__,
        "python": platform.python_version(),
        **installed_versions("onnxruntime", "onnxruntime-gpu", "onnx"),
    }


def build_key(project: Project, hashes: dict[str, str], options: BuildOptions) -> str:
    """Everything the image depends on: the GPUXfile, its files' hashes, options, versions."""
    material = {
        # build.* shapes the variants, not this image: variants have keys of their own.
        "gpuxfile": project.config.model_dump(mode="json", exclude={"build"}),
        "sources_sha256": hashes,
        "optimize": options.optimize,
        "backend": options.backend,
        "versions": tool_versions(),
        "config_schema": CONFIG_SCHEMA,
    }
    encoded = json.dumps(material, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def _quick_hashes(project: Project) -> dict[str, str] | None:
    """The sources' pinned hashes without downloading anything, when that is possible."""
    if not sources.is_pinned(project):
        return None
    hashes = {}
    for what, spec in sources.file_sources(project).items():
        kind = sources.source_kind(spec.source)
        if kind == "local":
            path = (project.root / spec.source).resolve()
            if not path.is_file():
                return None
            hashes[what] = sources.sha256_hex(path)
        elif spec.sha256:
            hashes[what] = spec.sha256.lower()
        else:
            return None
    return hashes


def build(
    location: str | Path,
    options: BuildOptions | None = None,
    store: Store | None = None,
    reporter: Reporter | None = None,
) -> BuildResult:
    """Build the image, then its variants (``build.optimize`` or ``options.variants``)."""
    options = options or BuildOptions()
    store = store or Store()
    reporter = reporter or Reporter()

    with reporter.step("read GPUXfile") as step:
        loaded = load_any(location)
        reference = parse(options.tag or f"{loaded.default_name}:{loaded.default_tag}")
        step.detail = str(loaded.path)
    if isinstance(loaded, ChainProject):
        from gpux.builder.chain import build_chain

        for member in loaded.models.values():
            if options.backend:
                member.config.runtime.backend = Backend(options.backend)
        return build_chain(loaded, reference, options, store, reporter)
    project = loaded
    if options.backend:
        project.config.runtime.backend = Backend(options.backend)

    from gpux.builder.variants import build_variants, plan

    plans = plan(project, reference, options)  # a mistake in build: fails before any work
    result = build_image(project, reference, options, store, reporter)
    if plans:
        result.variants = build_variants(project, result.image, plans, options, store, reporter)
    return result


def build_image(
    project: Project,
    reference: Reference,
    options: BuildOptions,
    store: Store,
    reporter: Reporter,
) -> BuildResult:
    if project.config.model.generative:
        from gpux.builder.generative import build_generative

        return build_generative(project, reference, options, store, reporter)
    code = None
    if project.config.handler is not None:
        from gpux.builder.handler_code import pack

        with reporter.step("pack handler") as step:
            code = pack(project.root, project.config.handler)
            project.config.handler.requirements = code.requirements  # stored as a list
            step.detail = _code_detail(code)
    quick = None if options.force else _quick_hashes(project)
    if quick is not None and code is not None:
        quick["handler"] = code.sha256
    if quick is not None:
        cached = cached_build(store, reference, build_key(project, quick, options), reporter)
        if cached is not None:
            return cached

    with reporter.step("resolve model") as step:
        local = quick["model"] if quick and sources.local_path(project) is not None else None
        resolved = sources.resolve(project, progress=reporter.transfer, local_sha256=local)
        step.detail = f"{resolved.kind} {resolved.sha256[:12]}"
        files: dict[str, sources.ResolvedModel] = {"model": resolved}
        for what, spec in sources.file_sources(project).items():
            if what != "model":
                files[what] = sources.resolve_file(
                    project.root, spec, what.replace(".", " "), progress=reporter.transfer
                )
    for fetched in files.values():
        for message in fetched.warnings:
            reporter.warn(message)
    pinned = {what: f.pinned for what, f in files.items()}
    if code is not None:
        pinned["handler"] = code.sha256
    key = build_key(project, pinned, options)
    if not options.force:
        cached = cached_build(store, reference, key, reporter)
        if cached is not None:
            return cached

    from gpux.builder import analyze, signature

    with reporter.step("check model") as step:
        model = analyze.load_checked(resolved.path, project.config.model.source)
        analyze.refuse_external_data(model, project.config.model.source)
        info = analyze.model_info(model, resolved.path)
        step.detail = f"opset {info['opsets'].get('ai.onnx', '?')}, {info['nodes']} nodes"

    with reporter.step("match inputs and outputs") as step:
        model_inputs, model_outputs = analyze.model_signature(model)
        inputs = signature.merge(project.config.inputs, model_inputs, "inputs")
        info["fixed_dimensions"] = signature.fixed_dimensions(project.config.inputs, model_inputs)
        outputs = signature.with_batch_axes(
            project.config.outputs,
            inputs,
            signature.merge(project.config.outputs, model_outputs, "outputs"),
        )
        metadata = {prop.key: prop.value for prop in model.metadata_props}
        del model
        step.detail = f"{len(inputs)} in, {len(outputs)} out"

    if project.config.preprocess or project.config.postprocess:
        from gpux.pipeline import plan

        with reporter.step("check pipeline") as step:
            tokenizers = {
                what.removesuffix(".tokenizer"): f.path
                for what, f in files.items()
                if what.endswith(".tokenizer")
            }
            plan.complete(
                project.config,
                inputs,
                outputs,
                tokenizers,
                str(project.path),
                root=project.root,
                metadata=metadata,
            )
            step.detail = ", ".join(
                [f"{e.name} ({e.kind})" for e in project.config.preprocess]
                + [r.name for r in project.config.postprocess]
            )

    workdir = Path(tempfile.mkdtemp(prefix="gpux-build-"))
    try:
        runnable = resolved.path
        optimization: dict[str, Any] = {"applied": False}
        if options.optimize:
            from gpux.builder.optimize import OFFLINE_LEVEL, optimize

            with reporter.step("optimise") as step:
                optimized_path = workdir / "model.optimized.onnx"
                optimize(resolved.path, optimized_path)
                original_bytes = resolved.path.stat().st_size
                optimized_bytes = optimized_path.stat().st_size
                optimization = {
                    "applied": True,
                    "level": OFFLINE_LEVEL,
                    "original_bytes": original_bytes,
                    "optimized_bytes": optimized_bytes,
                }
                saving = 1 - optimized_bytes / original_bytes
                if saving >= MIN_OPTIMIZED_SAVING:
                    runnable = optimized_path
                    optimization["reason"] = (
                        f"the optimised file is {saving:.1%} smaller (kept when at least "
                        f"{MIN_OPTIMIZED_SAVING:.0%} smaller)"
                    )
                    step.detail = f"{_mib(original_bytes)} -> {_mib(optimized_bytes)}"
                else:
                    # Constant folding can even expand compressed weights (int8 + Cast/Mul ->
                    # fp32); either way ONNX Runtime redoes the same rewrites at load.
                    optimization["applied"] = False
                    optimization["reason"] = (
                        f"the optimised file would be {_ratio(optimized_bytes, original_bytes)} "
                        f"(kept only when at least {MIN_OPTIMIZED_SAVING:.0%} smaller): ONNX "
                        "Runtime applies the same rewrites when it loads the model"
                    )
                    step.detail = (
                        "kept the original (optimised file would be "
                        f"{_ratio(optimized_bytes, original_bytes)})"
                    )
        else:
            reporter.skip("optimise", "--no-optimize")

        from gpux.builder.smoke import PipelineSpec, smoke_run

        pipeline_spec: PipelineSpec | None = None
        if project.config.preprocess or project.config.postprocess or code is not None:
            pipeline_spec = PipelineSpec(
                stored_gpuxfile(project, inputs, outputs),
                {
                    what.removesuffix(".tokenizer"): f.path
                    for what, f in files.items()
                    if what.endswith(".tokenizer")
                },
                handler=None if code is None else _load_packed(code, workdir),
            )
        with reporter.step("smoke run") as step:
            smoke = smoke_run(
                runnable,
                project.config.runtime,
                inputs,
                reference_path=resolved.path if runnable != resolved.path else None,
                dimensions=info["fixed_dimensions"],
                outputs=outputs,
                pipeline=pipeline_spec,
            )
            placement = smoke["placement"]
            step.detail = f"{placement['backend']}, {smoke['median_ms']:.2f} ms"
            if pipeline_spec is not None:
                step.detail += " at " + ", ".join(
                    str(shape) for shape in smoke["input_shapes"].values()
                )
            if placement.get("fallback_reason"):
                reporter.warn_once(
                    f"backend 'auto' fell back to {placement['backend']}: "
                    f"{placement['fallback_reason']}",
                    key=placement["fallback_reason"],
                )
            diff = smoke.get("optimized_vs_original", {}).get("max_abs_diff", 0.0)
            if diff > 1e-3:
                reporter.warn(
                    f"the optimised model differs from the original by up to {diff:.3g}; "
                    "rebuild with --no-optimize if that matters"
                )
        if pipeline_spec is not None:
            from gpux.builder.mistakes import pipeline_warnings

            for message in pipeline_warnings(project.config, resolved.path, outputs, smoke):
                reporter.warn(message)

        with reporter.step("write image") as step:
            config = _image_config(
                project, resolved, inputs, outputs, info, optimization, smoke, key
            )
            layers = [
                LayerSource(
                    mediatypes.MODEL,
                    Path(project.config.model.member or project.config.model.source).name
                    or "model.onnx",
                    path=resolved.path,
                ),
            ]
            if runnable != resolved.path:
                layers.append(
                    LayerSource(mediatypes.MODEL_OPTIMIZED, "model.optimized.onnx", path=runnable)
                )
            for what, fetched in files.items():
                if what.endswith(".tokenizer"):
                    layers.append(
                        LayerSource(mediatypes.TOKENIZER, f"{what}.json", path=fetched.path)
                    )
            if code is not None:
                from gpux.builder.handler_code import ARCHIVE_TITLE

                layers.append(LayerSource(mediatypes.HANDLER, ARCHIVE_TITLE, data=code.data))
                config["handler"] = {
                    "entry": code.entry,
                    "files": code.files,
                    "requirements": code.requirements,
                }
            if project.config.labels:
                assert isinstance(project.config.labels, list)
                layers.append(
                    LayerSource(
                        mediatypes.LABELS,
                        "labels.txt",
                        data=("\n".join(project.config.labels) + "\n").encode(),
                    )
                )
            annotations = {
                mediatypes.BUILD_KEY: key,
                mediatypes.TITLE: reference.repository,
                mediatypes.VERSION: reference.tag,
                "dev.gpux.placement.backend": placement["backend"],
                "dev.gpux.placement.device": str(placement.get("device") or ""),
                "dev.gpux.model.source": resolved.origin,
                "dev.gpux.model.sha256": resolved.sha256,
            }
            if project.config.description:
                annotations[mediatypes.DESCRIPTION] = project.config.description
            image = store.write_image(reference, config, layers, annotations)
            step.detail = f"{reference.name} {image.digest[7:19]}"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return BuildResult(image, reference, False, reporter)


def cached_build(
    store: Store, reference: Reference, key: str, reporter: Reporter
) -> BuildResult | None:
    """The image already built from exactly these inputs, under this name or another one."""
    if store.build_key(reference.name) == key:
        reporter.skip("build", "unchanged since the last build")
        return BuildResult(store.get(reference.name), reference, True, reporter)
    twin = store.find_by_build_key(key)
    if twin is not None:
        image = store.tag(twin, reference.name)
        reporter.skip("build", f"same inputs as {twin}: tagged it {reference.name}")
        return BuildResult(image, reference, True, reporter)
    return None


def _code_detail(code: Any) -> str:
    size = sum(int(f["size"]) for f in code.files)
    count = len(code.files)
    return f"{code.entry} ({count} file{'s' if count != 1 else ''}, {size / 1e3:.1f} kB)"


def _load_packed(code: Any, workdir: Path) -> Any:
    """The handler as the image will hold it: packed, unpacked with the checks a pulled image
    gets, requirements checked, then imported (so the smoke run tests what is stored)."""
    from gpux.pipeline.handler import Handler
    from gpux.store.code import unpack

    archive = workdir / "handler.tar"
    archive.write_bytes(code.data)
    unpack(archive, workdir / "handler", code.entry, "(being built)")
    return Handler(workdir / "handler", code.entry, code.requirements)


def _mib(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _ratio(size: int, original: int) -> str:
    """``12% smaller``, ``as large``, ``1.4x larger``: a file against the original's."""
    if size < original:
        return f"{1 - size / original:.1%} smaller"
    if size == original:
        return "as large"
    if size >= 1.1 * original:
        return f"{size / original:.1f}x larger"
    return f"{size / original - 1:.0%} larger"


def stored_gpuxfile(project: Project, inputs: list[Any], outputs: list[Any]) -> dict[str, Any]:
    """The completed GPUXfile as the image stores it (what ``run`` builds its pipeline from)."""
    resolved_file = project.config.model_copy(deep=True)
    resolved_file.name = resolved_file.name or project.default_name
    gpuxfile = resolved_file.model_dump(
        mode="json", exclude_none=True, by_alias=True, exclude={"build"}
    )
    gpuxfile["inputs"] = [tensor.to_json() for tensor in inputs]
    gpuxfile["outputs"] = [tensor.to_json() for tensor in outputs]
    return gpuxfile


def _image_config(
    project: Project,
    resolved: sources.ResolvedModel,
    inputs: list[Any],
    outputs: list[Any],
    info: dict[str, Any],
    optimization: dict[str, Any],
    smoke: dict[str, Any],
    key: str,
) -> dict[str, Any]:
    gpuxfile = stored_gpuxfile(project, inputs, outputs)
    gpuxfile["model"]["sha256"] = resolved.sha256
    return {
        "schema": CONFIG_SCHEMA,
        "gpuxfile": gpuxfile,
        "source": resolved.to_json(),
        "model": info,
        "optimization": optimization,
        "smoke": smoke,
        "build": {
            "key": key,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": tool_versions(),
        },
    }
