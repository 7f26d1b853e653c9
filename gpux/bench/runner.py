"""``benchmark()``: every backend x every batch size, each warmed up, timed and summarised.

Each backend loads the model separately (and is closed before the next one loads). A backend
that cannot start is reported as skipped, with the reason, when others were asked for too; when
it is the only one, its error is the benchmark's error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpux.bench import feeds
from gpux.bench.machine import machine
from gpux.bench.memory import HostPeak, current_rss, device_memory
from gpux.bench.observer import Observer
from gpux.bench.report import BenchReport, BenchResult, Skipped, placement_summary
from gpux.bench.settings import BenchSettings
from gpux.bench.timing import Phase, latency_stats
from gpux.errors import BackendError, GPUXError, UsageError
from gpux.store import Store, mediatypes, parse

if TYPE_CHECKING:
    from gpux.api import Model
    from gpux.builder.progress import Reporter


def benchmark(
    target: str | Path,
    settings: BenchSettings | None = None,
    *,
    inputs: feeds.FeedSource = None,
    store: Store | None = None,
    observer: Observer | None = None,
    reporter: Reporter | None = None,
    trust_code: bool = False,
    gpus: str | int | list[int] | None = None,
) -> BenchReport:
    """Measure ``target`` (an image name or digest, a project folder, an .onnx file).

    ``inputs``: None to generate them from the model's signature, ``{input: value}`` tensors,
    a list of pipeline items (sentences, image paths ...) or a function of the loaded model.
    ``reporter`` draws the build of a project folder. ``trust_code``: run the handler code of
    an image not built on this machine. ``gpus``: instances on several devices, as ``--gpus``
    (with ``concurrency`` above 1, the callers' calls spread over them).
    """
    settings = settings or BenchSettings()
    observer = observer or Observer()
    load = _loader(target, store or Store(), reporter, trust_code, gpus)
    results: list[BenchResult] = []
    skipped: list[Skipped] = []
    prepared: dict[int, feeds.Feed] | None = None
    image: dict[str, Any] = {}
    for requested in settings.backends:
        observer.loading(requested)
        try:
            model = load(requested)
        except BackendError as exc:
            if len(settings.backends) == 1:
                raise
            skip = Skipped(str(requested), exc.message, exc.hint)
            skipped.append(skip)
            observer.skipped(skip)
            continue
        try:
            if prepared is None:
                image = _image_facts(model, target)
                prepared = _prepare(model, settings, inputs, image["name"])
            for size, feed in prepared.items():
                result = _measure(model, feed, size, settings, observer)
                results.append(result)
                observer.result(result)
        finally:
            model.close()
    if not results:
        raise BackendError(
            "none of the backends could run the model: "
            + "; ".join(f"{s.backend}: {s.reason}" for s in skipped),
            "see 'gpux doctor' for what this machine offers",
        )
    return BenchReport(
        image=image,
        machine=machine(),
        settings=settings.to_json(),
        inputs="generated" if inputs is None else "given",
        results=results,
        skipped=skipped,
    )


def _loader(
    target: str | Path,
    store: Store,
    reporter: Reporter | None,
    trust_code: bool = False,
    gpus: str | int | list[int] | None = None,
) -> Callable[[str | None], Model]:
    from gpux.api import build, load, load_image, looks_like_path

    text = str(target)
    if (isinstance(target, Path) or looks_like_path(text)) and not text.endswith(".onnx"):
        # A project is built once, for its own backend, then loaded on each one benchmarked.
        image = build(Path(text).expanduser(), store=store, reporter=reporter).image
        return lambda backend: _tensor_model(load_image(image, backend, warmup=False, gpus=gpus))
    return lambda backend: _tensor_model(
        load(target, backend=backend, warmup=False, store=store, trust_code=trust_code, gpus=gpus)
    )


def _tensor_model(loaded: Any) -> Model:
    """``gpux bench`` times tensor models; a generative one is refused before any timing."""
    from gpux.api import Model

    if not isinstance(loaded, Model):
        loaded.close()
        raise UsageError(
            "gpux bench times models that take tensors; this image is a generative model",
            "time it with 'gpux run IMAGE --input PROMPT --json' (time to first token, tokens/s)",
        )
    return loaded


def _image_facts(model: Model, target: str | Path) -> dict[str, Any]:
    image = model.image
    if image is None:  # a bare .onnx file
        digest = hashlib.sha256()
        with Path(target).expanduser().open("rb") as source:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
        return {"name": str(target), "digest": f"sha256:{digest.hexdigest()}", "model": "file"}
    optimized = image.layer(mediatypes.MODEL_OPTIMIZED)
    layer = optimized or image.layer(mediatypes.MODEL)
    try:
        asked: str | None = parse(str(target)).name  # the name used, of an image with several
    except GPUXError:
        asked = None
    return {
        "name": asked if asked in image.names else image.name,
        "names": image.names,
        "digest": image.digest,
        "model": "optimized" if optimized else "original",
        "model_digest": layer.digest if layer else None,
    }


def _prepare(
    model: Model, settings: BenchSettings, inputs: feeds.FeedSource, name: str
) -> dict[int, feeds.Feed]:
    """One feed per batch size, made before anything is timed."""
    example = feeds.example_feed(model, inputs)
    sizes = settings.batch_sizes or [feeds.feed_batch(example, model.inputs)]
    feeds.check_batch_sizes(model.inputs, sizes, name)
    return {size: feeds.resize(example, model.inputs, size) for size in sizes}


def _measure(
    model: Model,
    feed: feeds.Feed,
    size: int,
    settings: BenchSettings,
    observer: Observer,
) -> BenchResult:
    placement = model.placement
    label = f"{placement.backend} batch {size}"
    warmup_runs = 0
    if settings.warmup_runs != 0:
        warm = Phase(
            model.run,
            feed,
            runs=settings.warmup_runs,
            seconds=settings.warmup_s if settings.warmup_runs is None else None,
            callers=settings.concurrency,
        )
        observer.phase(f"{label} warm-up", warm, settings.warmup_runs, settings.warmup_s, True)
        try:
            warm.run()
        finally:
            observer.phase_done()
        warmup_runs = warm.done()
    timed = Phase(
        model.run,
        feed,
        runs=settings.runs,
        seconds=settings.duration_s,
        callers=settings.concurrency,
    )
    rss_before = current_rss()
    observer.phase(label, timed, settings.runs, settings.duration_s, False)
    try:
        with HostPeak() as peak:
            timing = timed.run()
    finally:
        observer.phase_done()
    device = device_memory(placement.backend, int(placement.details.get("device_index", 0)))
    calls = len(timing.latencies_ns)
    elapsed_s = timing.elapsed_ns / 1e9
    return BenchResult(
        placement=placement_summary(placement),
        batch_size=size,
        concurrency=settings.concurrency,
        warmup_runs=warmup_runs,
        runs=calls,
        elapsed_s=round(elapsed_s, 6),
        latency_ms=latency_stats(timing.latencies_ns),
        throughput=round(size * calls / elapsed_s, 3),
        calls_per_s=round(calls / elapsed_s, 3),
        memory={
            "host_peak_rss_bytes": peak.bytes,
            "host_rss_before_bytes": rss_before,
            "host_method": peak.method,
            "device": device,
        },
        input_shapes={name: list(value.shape) for name, value in feed.items()},
        latencies_ns=timing.latencies_ns,
    )
