"""The timed loop: ``perf_counter_ns`` around the model call, and nothing else inside it.

Inputs are prepared before the loop, which only appends one integer per call; whoever draws
progress reads ``Phase.done()`` from another thread, so a progress bar costs the loop nothing.
One caller runs in the calling thread, as a bare ONNX Runtime loop would; several run on
threads that share the model and start together at a barrier.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Call = Callable[[Mapping[str, Any]], object]


@dataclass
class Timing:
    latencies_ns: list[int]
    """One per call, in the order each caller made them (callers one after another)."""
    elapsed_ns: int
    """From the start of the phase to the end of its last call."""


class Phase:
    """Calls ``call(feed)`` ``runs`` times in all, or for ``seconds`` (whichever ends first),
    spread over ``callers`` threads. A call that raises stops every caller and is re-raised."""

    def __init__(
        self,
        call: Call,
        feed: Mapping[str, Any],
        *,
        runs: int | None,
        seconds: float | None,
        callers: int = 1,
    ) -> None:
        self._call = call
        self._feed = feed
        self._limit = runs if runs is not None else sys.maxsize
        self._span_ns = int(seconds * 1e9) if seconds is not None else sys.maxsize
        self._latencies: list[list[int]] = [[] for _ in range(callers)]
        self._ends = [0] * callers
        self._failure: BaseException | None = None
        self._stop = threading.Event()
        self.started_ns: int | None = None

    def done(self) -> int:
        """Calls finished so far (safe to read from any thread)."""
        return sum(len(times) for times in self._latencies)

    def run(self) -> Timing:
        clock = time.perf_counter_ns
        if len(self._latencies) == 1:
            self.started_ns = clock()
            self._ends[0] = self._single(self._latencies[0], self.started_ns)
        else:
            barrier = threading.Barrier(len(self._latencies) + 1)
            tickets = itertools.count()
            threads = [
                threading.Thread(
                    target=self._caller,
                    args=(index, barrier, tickets),
                    name=f"gpux-bench-{index}",
                    daemon=True,
                )
                for index in range(len(self._latencies))
            ]
            for thread in threads:
                thread.start()
            barrier.wait()
            self.started_ns = clock()
            try:
                for thread in threads:
                    thread.join()
            except BaseException:  # Ctrl-C: the callers stop after the call they are in
                self._stop.set()
                raise
            if self._failure is not None:
                raise self._failure
        latencies = [t for times in self._latencies for t in times]
        return Timing(latencies, max(self._ends) - self.started_ns)

    def _single(self, times: list[int], started: int) -> int:
        call, feed, clock, append = self._call, self._feed, time.perf_counter_ns, times.append
        deadline = started + self._span_ns
        end = started
        for _ in range(self._limit):
            start = clock()
            call(feed)
            end = clock()
            append(end - start)
            if end >= deadline:
                break
        return end

    def _caller(
        self, index: int, barrier: threading.Barrier, tickets: itertools.count[int]
    ) -> None:
        call, feed, clock = self._call, self._feed, time.perf_counter_ns
        append, limit, stop = self._latencies[index].append, self._limit, self._stop
        barrier.wait()
        end = deadline = clock()
        deadline += self._span_ns
        try:
            while next(tickets) < limit and not stop.is_set():
                start = clock()
                call(feed)
                end = clock()
                append(end - start)
                if end >= deadline:
                    break
        except BaseException as exc:
            self._failure = exc
            stop.set()
        self._ends[index] = end


def latency_stats(latencies_ns: list[int]) -> dict[str, float]:
    """min, mean, p50, p90, p99, max and standard deviation, in milliseconds.

    Percentiles interpolate linearly between the nearest calls (numpy's default), so
    min <= p50 <= p90 <= p99 <= max always holds.
    """
    values = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "min": round(float(values.min()), 4),
        "mean": round(float(values.mean()), 4),
        "p50": round(float(p50), 4),
        "p90": round(float(p90), 4),
        "p99": round(float(p99), 4),
        "max": round(float(values.max()), 4),
        "stdev": round(float(values.std(ddof=1)) if values.size > 1 else 0.0, 4),
    }
