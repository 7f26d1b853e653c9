"""Variants: optimised copies of a built image (fp16, int8, fused ...), each measured against it.

``gpux build`` writes the image as always, then one image per variant of ``build.optimize``
(or ``--variant``), named ``NAME:TAG-<variant>``. Each variant is made from the model the image
runs, then compared with it in the same process, on the same backend:

* size: the variant's model file against the image's;
* latency: both sessions warmed up, then timed in alternating blocks, medians compared
  (``gpux.builder.head_to_head``);
* accuracy: both run on the sample feeds (``gpux.builder.samples``), outputs compared by
  ``gpux.builder.accuracy``.

The report is stored in the variant's config (``variant``) and shown by ``gpux inspect``. A
variant that misses a bound of ``build.accuracy`` is not stored (an earlier image of that name is
removed, so that no stale variant stays behind), and the build fails naming the metric, its value
and the bound. Variants carry their own build key: an unchanged variant is not rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpux.builder.progress import Reporter
from gpux.config.schema import AccuracyBounds, Variant, VariantStep
from gpux.config.schema import Backend as BackendName
from gpux.errors import ConfigValidationError, GPUXError, ModelError, UsageError
from gpux.store import Image, LayerSource, Store, mediatypes
from gpux.store.reference import Reference, parse

if TYPE_CHECKING:
    from gpux.builder.build import BuildOptions
    from gpux.builder.samples import Samples
    from gpux.config.load import Project
    from gpux.runtime.backend import Backend

VARIANT_SCHEMA = 1
VARIANT_ANNOTATION = "dev.gpux.variant"
VARIANT_OF_ANNOTATION = "dev.gpux.variant.of"


@dataclass
class VariantResult:
    reference: Reference
    image: Image
    cached: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.reference.name,
            "digest": self.image.digest,
            "cached": self.cached,
            "variant": self.image.config.get("variant"),
        }


def declared(project: Project, options: BuildOptions) -> list[Variant]:
    """The variants to build: ``--variant`` flags when given, else ``build.optimize``."""
    if options.variants is None:
        return list(project.config.build.optimize)
    from pydantic import ValidationError

    variants = []
    for text in options.variants:
        try:
            variants.append(Variant.model_validate(text))
        except ValidationError as exc:
            error = exc.errors()[0]
            raise UsageError(
                f"--variant '{text}': {error['msg']}",
                "write steps joined by '+': "
                + ", ".join(step.value for step in VariantStep)
                + " (e.g. --variant fp16 --variant fused+fp16)",
            ) from None
    suffixes = [variant.suffix for variant in variants]
    repeated = next((s for s in suffixes if suffixes.count(s) > 1), None)
    if repeated:
        raise UsageError(f"--variant '{repeated}' is given twice", "pass each variant once")
    return variants


def bounds_for(variant: Variant, project: Project, options: BuildOptions) -> AccuracyBounds:
    """``build.accuracy``, then the variant's own bounds, then the command-line flags."""
    merged = project.config.build.accuracy.model_dump()
    if variant.accuracy is not None:
        merged.update(variant.accuracy.model_dump(include=variant.accuracy.model_fields_set))
    merged.update(options.accuracy or {})
    return AccuracyBounds.model_validate(merged)


@dataclass
class Plan:
    """One declared variant, checked before anything is built."""

    variant: Variant
    reference: Reference
    bounds: AccuracyBounds
    calibration: Path | None  # int8-static: the inputs it calibrates on


def plan(project: Project, base_reference: Reference, options: BuildOptions) -> list[Plan]:
    """The declared variants, with every setting checked (names, bounds, sample and calibration
    paths), so that a mistake in ``build:`` fails the build before the image is made."""
    samples_text, samples_key, samples_root = _samples_setting(project, options)
    if samples_text is not None:
        from gpux.builder.samples import resolve

        resolve(samples_root, samples_text, samples_key)
    plans = []
    for variant in declared(project, options):
        calibration = _calibration_path(project, variant, samples_text, samples_root)
        if VariantStep.int8_static in variant.steps and calibration is None:
            raise ConfigValidationError(
                f"variant '{variant.suffix}': int8-static needs real inputs to calibrate on",
                "set build.samples (or the variant's calibration) to a folder or .jsonl of "
                "inputs, or pass --samples",
            )
        plans.append(
            Plan(
                variant,
                _variant_reference(base_reference, variant),
                bounds_for(variant, project, options),
                calibration,
            )
        )
    return plans


def build_variants(
    project: Project,
    base: Image,
    plans: list[Plan],
    options: BuildOptions,
    store: Store,
    reporter: Reporter,
) -> list[VariantResult]:
    """Build (or find unchanged) every planned variant of ``base``; fail after trying all."""
    samples_text, samples_key, samples_root = _samples_setting(project, options)
    results: list[VariantResult] = []
    pending = []
    for item in plans:
        key = _variant_key(base, item, samples_text, samples_root, options)
        name = item.reference.name
        if not options.force and store.build_key(name) == key:
            reporter.skip(f"variant {item.variant.suffix}", f"unchanged: {name}")
            results.append(VariantResult(item.reference, store.get(name), True))
        else:
            pending.append((item, key))
    if not pending:
        return results

    workdir = Path(tempfile.mkdtemp(prefix="gpux-variants-"))
    session = _Session(base, reporter)
    failures: list[GPUXError] = []
    try:
        samples = session.samples(samples_text, samples_key, samples_root)
        for item, key in pending:
            try:
                image = session.build_one(item, key, samples, workdir, store)
                results.append(VariantResult(item.reference, image, False))
            except GPUXError as exc:
                _remove_stale(store, item.reference, reporter)
                failures.append(exc)
    finally:
        session.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise ModelError(
            f"{len(failures)} variants failed:\n" + "\n".join(f.message for f in failures),
            "; ".join(dict.fromkeys(f.hint for f in failures if f.hint)),
        )
    return results


class _Session:
    """The original model loaded once for every variant of one build, and its sample feeds."""

    def __init__(self, base: Image, reporter: Reporter) -> None:
        from gpux.config.schema import Runtime
        from gpux.runtime.model import gpuxfile_dimensions
        from gpux.runtime.tensors import TensorSignature

        self.base = base
        self.reporter = reporter
        self.gpuxfile: dict[str, Any] = base.config.get("gpuxfile", {})
        self.runtime = Runtime.model_validate(self.gpuxfile.get("runtime", {}))
        self.inputs = [TensorSignature.from_json(t) for t in self.gpuxfile.get("inputs", [])]
        self.outputs = [TensorSignature.from_json(t) for t in self.gpuxfile.get("outputs", [])]
        self.dimensions = gpuxfile_dimensions(base.config)
        media = (
            mediatypes.MODEL_OPTIMIZED
            if base.layer(mediatypes.MODEL_OPTIMIZED)
            else mediatypes.MODEL
        )
        self.model_path = base.layer_path(media)
        self.tokenizers = {
            str(entry["name"]): base.layer_path(
                mediatypes.TOKENIZER, f"{entry['name']}.tokenizer.json"
            )
            for entry in self.gpuxfile.get("preprocess", [])
            if "text" in entry
        }
        self._original: Backend | None = None
        self._feeds: dict[str, Samples] = {}
        self._warned = False

    @property
    def original(self) -> Backend:
        if self._original is None:
            from gpux.runtime.engines import engine_for

            self._original = engine_for(self.runtime.backend).load(
                self.model_path, self.runtime, dimensions=self.dimensions
            )
        return self._original

    def samples(self, text: str | None, key: str, root: Path) -> Samples:
        from gpux.builder import samples as sample_inputs

        if text is None:
            return sample_inputs.generated_feeds(self.inputs)
        return self.calibration(sample_inputs.resolve(root, text, key), key)

    def calibration(self, path: Path, key: str) -> Samples:
        from gpux.builder import samples as sample_inputs

        if str(path) not in self._feeds:
            with self.reporter.step(f"read {key}") as step:
                found = sample_inputs.read_feeds(
                    path,
                    key,
                    self.original,
                    self.gpuxfile,
                    self.inputs,
                    self.outputs,
                    self.tokenizers,
                )
                step.detail = f"{found.items} inputs, {len(found.feeds)} model calls"
            self._feeds[str(path)] = found
        return self._feeds[str(path)]

    def build_one(
        self, item: Plan, key: str, samples: Samples, workdir: Path, store: Store
    ) -> Image:
        from gpux.builder import accuracy, transforms

        variant, reference, bounds = item.variant, item.reference, item.bounds
        calibration_samples = samples
        if item.calibration is not None:
            calibration_samples = self.calibration(
                item.calibration, f"build.optimize[{variant.suffix}].calibration"
            )
        if samples.kind != "real" and calibration_samples.kind == "real":
            samples = calibration_samples  # real inputs beat generated ones
        if samples.kind == "generated" and not self._warned:
            self._warned = True
            self.reporter.warn(
                f"no build.samples: variants are compared with the original on "
                f"{len(samples.feeds)} generated inputs, weaker evidence than real ones; give "
                "build.samples (a folder or .jsonl of real inputs) or --samples"
            )
        with self.reporter.step(f"variant {variant.suffix}") as step:
            context = transforms.Context(workdir, calibration_samples.feeds)
            model_path, steps = transforms.apply(self.model_path, variant, context)
            step.detail = "; ".join(s["detail"] for s in steps)
        with self.reporter.step(f"{variant.suffix}: compare") as step:
            report, gpuxfile = self._measure(variant, model_path, samples)
            report.update(
                {
                    "name": variant.suffix,
                    "of": self.base.name,
                    "of_digest": self.base.digest,
                    "steps": steps,
                    "settings": _settings(variant, calibration_samples),
                }
            )
            report["accuracy"]["bounds"] = bounds.model_dump()
            missed = accuracy.check(report["accuracy"], bounds)
            report["accuracy"]["passed"] = not missed
            step.detail = (
                f"size {report['size']['ratio']:.2f}x, latency {report['latency']['ratio']:.2f}x, "
                + accuracy.summary(report["accuracy"])
            )
        for warning in fit_warnings(variant.suffix, report):
            self.reporter.warn(warning)
        if missed:
            raise ModelError(
                accuracy.failure_text(reference.name, report, missed),
                accuracy.failure_hint(samples.kind),
            )
        with self.reporter.step(f"{variant.suffix}: write image") as step:
            smoke = self._smoke(model_path, gpuxfile)
            image = self._write(reference, variant, model_path, report, smoke, gpuxfile, key, store)
            step.detail = f"{reference.name} {image.digest[7:19]}"
        return image

    def _smoke(self, model_path: Path, gpuxfile: dict[str, Any]) -> dict[str, Any]:
        """The variant's smoke run, as for any image: generated inputs, the same backend."""
        from gpux.builder.smoke import smoke_run
        from gpux.runtime.tensors import TensorSignature

        runtime = self.runtime.model_copy(deep=True)
        runtime.backend = BackendName(self.original.placement.backend)
        inputs = [TensorSignature.from_json(t) for t in gpuxfile["inputs"]]
        return smoke_run(model_path, runtime, inputs, dimensions=self.dimensions)

    def _measure(
        self, variant: Variant, model_path: Path, samples: Samples
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Size, latency and accuracy against the original; the variant's resolved GPUXfile."""
        from gpux.builder import accuracy, analyze
        from gpux.builder.head_to_head import race
        from gpux.runtime.engines import engine_for
        from gpux.runtime.tensors import check_feed

        model = analyze.load_checked(model_path, f"variant {variant.suffix}", full_check=False)
        inputs, outputs = analyze.model_signature(model)
        del model
        gpuxfile = json.loads(json.dumps(self.gpuxfile))
        # fp16 with keep_io_types: false changes the dtypes users send and receive.
        for tensors, found in (("inputs", inputs), ("outputs", outputs)):
            dtypes = {t.name: t.dtype for t in found}
            for tensor in gpuxfile[tensors]:
                tensor["dtype"] = dtypes.get(tensor["name"], tensor["dtype"])
        original = self.original
        placement = original.placement
        runtime = self.runtime.model_copy(deep=True)
        runtime.backend = BackendName(placement.backend)  # the same backend, explicitly
        candidate = engine_for(runtime.backend).load(
            model_path, runtime, dimensions=self.dimensions
        )
        try:
            variant_feeds = [check_feed(feed, inputs) for feed in samples.feeds]
            changed = [candidate.run(feed) for feed in variant_feeds]
            expected = [original.run(feed) for feed in samples.feeds]
            classifiers = accuracy.classifier_outputs(self.gpuxfile, self.gpuxfile["outputs"])
            compared = accuracy.compare(expected, changed, classifiers)
            compared["samples"] = samples.to_json()
            latency = race(original, candidate, samples.feeds[0], variant_feeds[0])
            placement_report = _placement_report(placement, candidate.placement)
        finally:
            candidate.close()
        original_bytes = self.model_path.stat().st_size
        variant_bytes = model_path.stat().st_size
        report = {
            "size": {
                "original_bytes": original_bytes,
                "variant_bytes": variant_bytes,
                "ratio": round(variant_bytes / original_bytes, 4),
            },
            "latency": {"backend": placement.backend, "device": placement.device, **latency},
            "placement": placement_report,
            "accuracy": compared,
        }
        return report, gpuxfile

    def _write(
        self,
        reference: Reference,
        variant: Variant,
        model_path: Path,
        report: dict[str, Any],
        smoke: dict[str, Any],
        gpuxfile: dict[str, Any],
        key: str,
        store: Store,
    ) -> Image:
        from datetime import UTC, datetime

        from gpux.builder import analyze
        from gpux.builder.build import CONFIG_SCHEMA, tool_versions

        model = analyze.load_checked(model_path, f"variant {variant.suffix}", full_check=False)
        info = analyze.model_info(model, model_path)
        del model
        info["fixed_dimensions"] = self.base.config.get("model", {}).get("fixed_dimensions", {})
        config = {
            "schema": CONFIG_SCHEMA,
            "gpuxfile": gpuxfile,
            "source": self.base.config.get("source"),
            "model": info,
            "optimization": {
                "applied": False,
                "reason": f"variant {variant.suffix} of {self.base.name}: stored as built",
            },
            "smoke": smoke,
            "variant": report,
            **({"handler": self.base.config["handler"]} if "handler" in self.base.config else {}),
            "build": {
                "key": key,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "versions": {**tool_versions(), **_variant_versions()},
            },
        }
        layers = [LayerSource(mediatypes.MODEL, f"model-{variant.suffix}.onnx", path=model_path)]
        for layer in self.base.layers:
            if layer.media_type in (mediatypes.TOKENIZER, mediatypes.LABELS, mediatypes.HANDLER):
                layers.append(
                    LayerSource(
                        layer.media_type,
                        layer.title or "",
                        path=self.base.layer_path(layer.media_type, layer.title),
                    )
                )
        annotations = {
            **{
                k: v
                for k, v in self.base.annotations.items()
                if k not in (mediatypes.CREATED, mediatypes.BUILD_KEY)
            },
            mediatypes.BUILD_KEY: key,
            mediatypes.TITLE: reference.repository,
            mediatypes.VERSION: reference.tag,
            "dev.gpux.placement.backend": smoke["placement"]["backend"],
            "dev.gpux.placement.device": str(smoke["placement"].get("device") or ""),
            "dev.gpux.model.sha256": _sha256(model_path),
            VARIANT_ANNOTATION: variant.suffix,
            VARIANT_OF_ANNOTATION: f"{self.base.name}@{self.base.digest}",
        }
        return store.write_image(reference, config, layers, annotations)

    def close(self) -> None:
        if self._original is not None:
            self._original.close()


# -- names, keys and settings ------------------------------------------------------------------


def _variant_reference(base: Reference, variant: Variant) -> Reference:
    text = f"{base.repository}:{base.tag}-{variant.suffix}"
    try:
        return parse(text)
    except UsageError:
        raise ConfigValidationError(
            f"variant '{variant.suffix}' would be named '{text}', which is not a valid image "
            "name (a tag is at most 128 letters, digits, '_', '.', '-')",
            "give the variant a shorter name, or the image a shorter tag",
        ) from None


def _samples_setting(project: Project, options: BuildOptions) -> tuple[str | None, str, Path]:
    """(samples as written, the setting's name for messages, the folder it is relative to)."""
    if options.samples is not None:
        return options.samples, "--samples", Path.cwd()
    return project.config.build.samples, "build.samples", project.root


def _calibration_path(
    project: Project, variant: Variant, samples: str | None, samples_root: Path
) -> Path | None:
    from gpux.builder.samples import resolve

    if VariantStep.int8_static not in variant.steps:
        return None
    if variant.calibration is not None:
        key = f"build.optimize[{variant.suffix}].calibration"
        return resolve(project.root, variant.calibration, key)
    if samples is not None:
        return resolve(samples_root, samples, "build.samples")
    return None


def _variant_key(
    base: Image, item: Plan, samples: str | None, samples_root: Path, options: BuildOptions
) -> str:
    """Everything a variant depends on: the model it is made from, its settings, its bounds,
    the sample and calibration inputs, the backend and the tool versions."""
    from gpux.builder.build import tool_versions
    from gpux.builder.samples import fingerprint, resolve

    material = {
        "schema": VARIANT_SCHEMA,
        # The image's content, not its digest (which changes with its creation time): a
        # variant stays valid while the model, tokenizers, labels and resolved GPUXfile do.
        "layers": sorted(layer.digest for layer in base.layers),
        "gpuxfile": base.config.get("gpuxfile"),
        "variant": item.variant.model_dump(mode="json", exclude={"accuracy"}),
        "bounds": item.bounds.model_dump(),
        "samples": fingerprint(resolve(samples_root, samples, "build.samples"))
        if samples
        else None,
        "calibration": fingerprint(item.calibration) if item.calibration else None,
        "backend": options.backend,
        "versions": {**tool_versions(), **_variant_versions()},
    }
    encoded = json.dumps(material, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def _variant_versions() -> dict[str, str]:
    from gpux.runtime.discovery import installed_versions

    return dict(installed_versions("onnxslim"))


def _settings(variant: Variant, calibration: Samples) -> dict[str, Any]:
    """The settings that shaped this variant (only those its steps use)."""
    steps = set(variant.steps)
    settings: dict[str, Any] = {}
    if VariantStep.fp16 in steps:
        settings["keep_io_types"] = variant.keep_io_types
    if steps & {VariantStep.int8, VariantStep.int8_static}:
        settings["per_channel"] = variant.per_channel
        settings["reduce_range"] = variant.reduce_range
    if VariantStep.int8_static in steps:
        settings["calibration"] = calibration.to_json()
    if VariantStep.fused in steps:
        settings["model_type"] = variant.model_type
        settings["num_heads"] = variant.num_heads
        settings["hidden_size"] = variant.hidden_size
    return settings


def _remove_stale(store: Store, reference: Reference, reporter: Reporter) -> None:
    """A variant that failed leaves no image behind, not even one from an earlier build."""
    if store.find(reference.name) is None:
        return
    try:
        store.remove(reference.name)
    except GPUXError:
        return
    reporter.warn(f"removed {reference.name}, built earlier: its rebuild failed")


def _sha256(path: Path) -> str:
    from gpux.builder.sources import sha256_hex

    return sha256_hex(path)


SLOWER = 1.1  # a variant this much slower than its original gets a warning


def _placement_report(original: Any, variant: Any) -> dict[str, Any]:
    """How much of each graph the backend took: a variant's new ops may not exist there."""

    def share(placement: Any) -> dict[str, Any]:
        assignment = placement.details.get("assignment", {})
        if not assignment.get("known"):
            return {"known": False}
        keys = ("nodes", "nodes_on_backend", "share", "elsewhere")
        return {"known": True, **{key: assignment.get(key) for key in keys}}

    return {"backend": variant.backend, "original": share(original), "variant": share(variant)}


def fit_warnings(suffix: str, report: dict[str, Any]) -> list[str]:
    """What makes a variant a poor fit for the backend it was measured on, said at build time:
    nodes that leave the backend (int8 ops a GPU provider lacks run on the CPU) and plain
    slowness (fp16 through casts on a CPU)."""
    from gpux.runtime.backend import describe_elsewhere

    warnings = []
    placement = report.get("placement", {})
    backend = placement.get("backend", report["latency"]["backend"])
    original, variant = placement.get("original", {}), placement.get("variant", {})
    ratio = report["latency"].get("ratio")
    slower = f"; it takes {ratio:.2f}x the original's time" if ratio else ""
    if (
        original.get("known")
        and variant.get("known")
        and variant["share"] < original["share"]
        and backend != "cpu"
    ):
        moved = variant["nodes"] - variant["nodes_on_backend"]
        ops = describe_elsewhere(variant["elsewhere"] or {})
        warnings.append(
            f"variant '{suffix}': {moved} of its {variant['nodes']} nodes run off {backend} "
            f"({ops}), against {original['nodes'] - original['nodes_on_backend']} for the "
            f"original{slower}. {backend} lacks kernels for them: prefer a variant whose ops "
            f"it has (fp16 on GPUs; int8 suits CPUs)"
        )
    elif ratio is not None and ratio > SLOWER:
        size = report["size"]["ratio"]
        warnings.append(
            f"variant '{suffix}' takes {ratio:.2f}x the original's time on {backend}: "
            + (
                f"it only saves size ({size:.2f}x)"
                if size < 0.9
                else "the original is the better choice there"
            )
        )
    return warnings
