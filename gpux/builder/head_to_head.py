"""Two loaded models timed against each other in one process: warm-up, alternating blocks,
medians. Used for the variant reports (``gpux.builder.variants``) and benchmarks/variants.py."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from gpux.runtime.backend import Backend

Feed = dict[str, np.ndarray[Any, Any]]
LATENCY_SECONDS = 2.0  # both models together
LATENCY_BLOCK_SECONDS = 0.2  # one model runs this long, then the other
LATENCY_MIN_RUNS = 5  # per model, however slow it is
WARMUP_RUNS = 3


def race(
    original: Backend,
    variant: Backend,
    feed: Feed,
    variant_feed: Feed,
    seconds: float | None = None,
) -> dict[str, Any]:
    """Median latencies of two loaded models on the same input, timed in alternating blocks.

    Blocks of about 0.2 s, not call-by-call interleaving: ONNX Runtime's intra-op threads keep
    spinning after a run, and two sessions' spinners fight over the cores. On the 2-core CI VM,
    MiniLM timed against itself call by call measured 3.8 ms on both sides, in blocks of 5 calls
    3.5 ms, in blocks of 50 calls 1.95 ms: its time alone. The block order alternates so that
    neither model always runs after the other.
    """
    budget = LATENCY_SECONDS if seconds is None else seconds
    contestants = [("original", original, feed), ("variant", variant, variant_feed)]
    blocks = {}
    for name, backend, inputs in contestants:
        started = time.perf_counter()
        for _ in range(WARMUP_RUNS):
            backend.run(inputs)
        per_call = (time.perf_counter() - started) / WARMUP_RUNS
        blocks[name] = max(1, round(LATENCY_BLOCK_SECONDS / max(per_call, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name, _, _ in contestants}
    deadline = time.perf_counter() + budget
    turn = 0
    while (
        time.perf_counter() < deadline
        or turn < 2
        or min(map(len, times.values())) < LATENCY_MIN_RUNS
    ):
        order = contestants if turn % 2 == 0 else contestants[::-1]
        for name, backend, inputs in order:
            for _ in range(blocks[name]):
                started = time.perf_counter()
                backend.run(inputs)
                times[name].append((time.perf_counter() - started) * 1e3)
        turn += 1
    original_ms = statistics.median(times["original"])
    variant_ms = statistics.median(times["variant"])
    return {
        "original_ms": float(f"{original_ms:.6g}"),
        "variant_ms": float(f"{variant_ms:.6g}"),
        "ratio": round(variant_ms / original_ms, 4) if original_ms else None,
        "runs": len(times["variant"]),
        "input_shapes": {k: list(v.shape) for k, v in feed.items()},
    }
