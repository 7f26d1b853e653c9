"""benchmarks/serve.py's per-step batch profile, from two reads of Triton statistics as
gpux/serve/statistics.py reports them: only what happened between the reads counts."""

from __future__ import annotations

import pytest

from benchmarks.serve import batch_profile, describe
from gpux.serve.statistics import BatchTiming, Statistics


def test_a_step_counts_only_the_calls_between_its_two_reads() -> None:
    stats = Statistics("m", "1")
    stats.batch(BatchTiming(8, 0, [0.001] * 8, joined=0.001, ran=0.004))  # before the step
    before = stats.report()
    stats.batch(BatchTiming(8, 2, [0.002] * 6, joined=0.002, ran=0.006))
    stats.batch(BatchTiming(16, 0, [0.004] * 16, joined=0.003, ran=0.010))
    stats.batch(BatchTiming(16, 1, [0.004] * 15, joined=0.003, ran=0.010))
    profile = batch_profile(before, stats.report())
    assert profile["calls_by_batch_size"] == {8: 1, 16: 2}
    assert profile["rows_per_call"] == pytest.approx((8 + 16 + 16) / 3, abs=0.01)
    assert profile["join_ms_per_call"] == pytest.approx((2 + 3 + 3) / 3, abs=0.001)
    assert profile["run_ms_per_call"] == pytest.approx((6 + 10 + 10) / 3, abs=0.001)
    # per request: 6 waited 2 ms, 31 waited 4 ms
    assert profile["queue_ms_per_request"] == pytest.approx((6 * 2 + 31 * 4) / 37, abs=0.001)
    assert describe(profile).startswith("b16 x2, b8 x1; 13.33 rows/call")


def test_a_step_without_calls_says_so() -> None:
    stats = Statistics("m", "1")
    report = stats.report()
    profile = batch_profile(report, report)
    assert profile["calls_by_batch_size"] == {}
    assert profile["rows_per_call"] is None and profile["queue_ms_per_request"] is None
