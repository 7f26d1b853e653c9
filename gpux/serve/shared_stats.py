"""Triton statistics summed over the worker processes of one server (gpux/serve/workers.py).

Each worker writes its own report to ``<shared>/stats/<pid>.json`` within :data:`WRITE_EVERY`
of a change and whenever it answers a statistics request; the answer adds up every file there.
Files of workers that died stay and keep counting: the statistics are totals since the server
started, as Triton's are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

# Seconds a statistics answer may lag behind the other processes' counts. perf_analyzer reads
# the statistics around each of its measurement windows and stops ("failed to find the
# requested model version") when a window sees no queue count grow: with the shared engine
# (which queues every request) writing each second, windows of 333 ms failed on the 2-core
# machine; at 0.1 s they pass. Each look dumps the report to compare it with the last written
# (3 models of 6 batch sizes: 3.3 KB, ~90 us, under 0.1% of a core) and writes only a change:
# an idle server writes nothing.
WRITE_EVERY = 0.1


def write(folder: Path, report: dict[str, Any]) -> None:
    """This process's report, replaced atomically (a reader never sees half of it)."""
    _write_text(folder, json.dumps(report))


def _write_text(folder: Path, text: str) -> None:
    path = folder / f"{os.getpid()}.json"
    partial = path.with_suffix(".part")
    partial.write_text(text)
    partial.replace(path)


def read_all(folder: Path) -> list[dict[str, Any]]:
    reports = []
    for path in sorted(folder.glob("*.json")):
        with contextlib.suppress(OSError, ValueError):  # a worker writing now: its last is there
            reports.append(json.loads(path.read_text()))
    return reports


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Several ``{"model_stats": [...]}`` answers as one: counts and durations added, per model
    (in the first report's order) and per batch size."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for report in reports:
        for entry in report.get("model_stats", []):
            key = (entry["name"], entry["version"])
            if key not in merged:
                merged[key] = json.loads(json.dumps(entry))  # a deep copy to add into
                continue
            total = merged[key]
            total["last_inference"] = max(total["last_inference"], entry["last_inference"])
            for field in ("inference_count", "execution_count"):
                total[field] += entry[field]
            total.setdefault("instances", []).extend(entry.get("instances", []))
            for stage, duration in entry["inference_stats"].items():
                _add(total["inference_stats"].setdefault(stage, {"count": 0, "ns": 0}), duration)
            sizes = {b["batch_size"]: b for b in total["batch_stats"]}
            for batch in entry["batch_stats"]:
                mine = sizes.get(batch["batch_size"])
                if mine is None:
                    total["batch_stats"].append(json.loads(json.dumps(batch)))
                    continue
                for stage in ("compute_input", "compute_infer", "compute_output"):
                    _add(mine[stage], batch[stage])
            total["batch_stats"].sort(key=lambda b: b["batch_size"])
    return {"model_stats": list(merged.values())}


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    total["count"] += more["count"]
    total["ns"] += more["ns"]


async def keep_writing(folder: Path, report: Any, every: float = WRITE_EVERY) -> None:
    """Write ``report()`` whenever it has changed, looked at every ``every`` seconds, until
    cancelled."""
    written = None
    while True:
        text = json.dumps(report())
        if text != written:
            await asyncio.to_thread(_write_text, folder, text)
            written = text
        await asyncio.sleep(every)
