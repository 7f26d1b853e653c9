"""``gpux bench``: how fast a model runs, with the context that makes the figure quotable.

settings -> one feed per batch size (``feeds``) -> per backend: load, then per batch size a
warm-up and a timed phase (``timing``: ``perf_counter_ns`` around ``Model.run`` only), peak
memory (``memory``) -> a report with the machine and the placement (``report``, ``machine``)
-> table, JSON, CSV (the CLI) and plots (``plot``: PNG through matplotlib, ``html``: inline SVG).

    from gpux.bench import BenchSettings, benchmark
    report = benchmark("minilm", BenchSettings(batch_sizes=[1, 8], runs=200))
    print(report.results[0].latency_ms["p50"])

Names are imported on first use, so that ``gpux.bench.observer`` and ``gpux.bench.settings``
stay cheap for the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpux.bench.observer import Observer
    from gpux.bench.report import BenchReport, BenchResult, Skipped
    from gpux.bench.runner import benchmark
    from gpux.bench.settings import (
        BenchSettings,
        parse_backends,
        parse_batch_sizes,
        parse_warmup,
    )

_HOMES = {
    "BenchReport": "report",
    "BenchResult": "report",
    "Skipped": "report",
    "Observer": "observer",
    "benchmark": "runner",
    "BenchSettings": "settings",
    "parse_backends": "settings",
    "parse_batch_sizes": "settings",
    "parse_warmup": "settings",
}

__all__ = [
    "BenchReport",
    "BenchResult",
    "BenchSettings",
    "Observer",
    "Skipped",
    "benchmark",
    "parse_backends",
    "parse_batch_sizes",
    "parse_warmup",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"gpux.bench.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'gpux.bench' has no attribute {name!r}")
