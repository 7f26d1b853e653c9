"""The build's smoke run: generated inputs through the model on the chosen backend.

It proves the image runs before it is stored, records which backend really ran it (and why
``auto`` fell back, if it did) and the latency, and checks that the optimised model gives the
same answers as the original.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from gpux.config.schema import Runtime
from gpux.errors import BackendError, InputError, ModelError
from gpux.runtime.engines import engine
from gpux.runtime.tensors import TensorSignature, check_shape, coerce

FIRST_SYMBOLIC = 1  # batch-like leading dimensions
OTHER_SYMBOLIC = 32  # sequence lengths, image sides: large enough for strided convolutions
TIMED_RUNS = 5


def generate_inputs(
    signatures: list[TensorSignature], seed: int = 0
) -> dict[str, np.ndarray[Any, Any]]:
    """One value per input: the declared ``example``, else data generated from dtype and shape."""
    rng = np.random.default_rng(seed)
    # A symbol names the same size everywhere (``batch`` is axis 0 of one input and axis 1 of
    # another); one that leads any shape is batch-like and gets 1.
    leading = {s.shape[0] for s in signatures if s.shape and isinstance(s.shape[0], str)}
    # Declared examples come first: they fix the sizes of the symbols they use, so generated
    # inputs agree with them (an example input_ids [1, 3] makes attention_mask [1, 3] too).
    examples: dict[str, np.ndarray[Any, Any]] = {}
    bound: dict[str, tuple[int, str]] = {}
    for signature in signatures:
        if signature.example is None:
            continue
        try:
            value = coerce(signature.name, signature.example, signature)
            check_shape(signature, value.shape, bound)
        except InputError as exc:
            raise ModelError(
                f"example value of input '{signature.name}' is invalid: {exc.message}",
                "fix inputs[].example in the GPUXfile: " + (exc.hint or ""),
            ) from None
        examples[signature.name] = value
    feed = {}
    for signature in signatures:
        if signature.name in examples:
            feed[signature.name] = examples[signature.name]
            continue
        shape = [
            dim
            if isinstance(dim, int)
            else bound[dim][0]
            if isinstance(dim, str) and dim in bound
            else FIRST_SYMBOLIC
            if axis == 0 or dim in leading
            else OTHER_SYMBOLIC
            for axis, dim in enumerate(signature.shape or [])
        ]
        dtype = signature.np_dtype
        if dtype.kind == "f":
            feed[signature.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "O":
            feed[signature.name] = np.full(shape, "gpux", dtype=object)
        else:
            feed[signature.name] = np.zeros(shape, dtype=dtype)
    return feed


def smoke_run(
    model_path: Path,
    runtime: Runtime,
    inputs: list[TensorSignature],
    reference_path: Path | None = None,
    dimensions: dict[str, int] | None = None,
) -> dict[str, Any]:
    feed = generate_inputs(inputs)
    backend_class = engine()
    started = time.perf_counter()
    backend = backend_class.load(model_path, runtime, dimensions=dimensions)
    load_ms = (time.perf_counter() - started) * 1e3
    try:
        started = time.perf_counter()
        outputs = _run(backend, feed)
        first_ms = (time.perf_counter() - started) * 1e3
        timings = []
        for _ in range(TIMED_RUNS):
            started = time.perf_counter()
            _run(backend, feed)
            timings.append((time.perf_counter() - started) * 1e3)
        race = (
            _race(backend, reference_path, runtime, feed, outputs, dimensions)
            if reference_path
            else None
        )
    finally:
        placement = backend.placement
        backend.close()
    report: dict[str, Any] = {
        "placement": placement.to_json(),
        "load_ms": round(load_ms, 3),
        "first_run_ms": round(first_ms, 3),
        "median_ms": round(statistics.median(timings), 3),
        "runs": TIMED_RUNS,
        "input_shapes": {name: list(array.shape) for name, array in feed.items()},
        "output_shapes": {name: list(np.shape(value)) for name, value in outputs.items()},
    }
    if race is not None:
        report["optimized_vs_original"] = race
    return report


def _race(
    optimized: Any,
    original_path: Path,
    runtime: Runtime,
    feed: dict[str, np.ndarray[Any, Any]],
    optimized_outputs: dict[str, np.ndarray[Any, Any]],
    dimensions: dict[str, int] | None = None,
) -> dict[str, float]:
    """The optimised model against the original, on the same backend: latency and agreement.

    The offline (basic) rewrites can hide patterns that ONNX Runtime's own fusions look for at
    load (attention, layer norm), so an "optimised" graph may run slower; the build keeps it
    only if it is not. Same backend on both sides, so the difference is the optimisation's own
    (not TF32 on a GPU against fp32 on a CPU). Alternating blocks, about a second in all.
    """
    original = engine().load(original_path, runtime, dimensions=dimensions)
    try:
        reference = _run(original, feed)
        contestants = {"optimized": optimized, "original": original}
        times: dict[str, list[float]] = {name: [] for name in contestants}
        budget = time.perf_counter() + 1.0
        while time.perf_counter() < budget or min(len(t) for t in times.values()) < 6:
            for name, backend in contestants.items():
                for _ in range(3):
                    started = time.perf_counter()
                    backend.run(feed)
                    times[name].append((time.perf_counter() - started) * 1e3)
            if min(len(t) for t in times.values()) >= 60:
                break
    finally:
        original.close()
    worst = 0.0
    for name, value in reference.items():
        a, b = np.asarray(value), np.asarray(optimized_outputs[name])
        if a.dtype.kind in "fc" and a.size:
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
        elif not np.array_equal(a, b):
            worst = float("inf")
    result = {f"{name}_ms": round(statistics.median(t), 4) for name, t in times.items()}
    result["max_abs_diff"] = worst
    return result


def _run(backend: Any, feed: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    try:
        result: dict[str, np.ndarray[Any, Any]] = backend.run(feed)
        return result
    except (BackendError, InputError) as exc:  # a feed the runtime refuses is an InputError
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feed.items())
        raise ModelError(
            f"smoke run failed with generated inputs ({shapes}): {exc.message.split(': ', 1)[-1]}",
            "declare realistic inputs in the GPUXfile: fixed sizes in inputs[].shape, or a "
            "value in inputs[].example (e.g. 'example: 16000' for a sample rate)",
        ) from exc
