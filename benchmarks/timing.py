"""One way to time contestants against each other, shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(contestants: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median wall time of each callable in ms, alternating between them call by call (so a
    busy moment of a shared machine falls on every contestant, not on one)."""
    for call in contestants.values():  # warm caches and lazy imports
        call()
    times: dict[str, list[int]] = {name: [] for name in contestants}
    order = list(contestants.items())
    clock = time.perf_counter_ns
    for round_number in range(runs):
        shift = round_number % len(order)
        for name, call in order[shift:] + order[:shift]:
            start = clock()
            call()
            times[name].append(clock() - start)
    return {name: statistics.median(values) / 1e6 for name, values in times.items()}
