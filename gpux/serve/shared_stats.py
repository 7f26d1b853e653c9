"""Triton statistics summed over the worker processes of one server (gpux/serve/workers.py).

Each worker writes its own report to ``<shared>/stats/<pid>.json`` every second and whenever it
answers a statistics request; the answer adds up every file there. Files of workers that died
stay and keep counting: the statistics are totals since the server started, as Triton's are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

WRITE_EVERY = 1.0  # seconds: what a statistics answer may lag behind the other workers


def write(folder: Path, report: dict[str, Any]) -> None:
    """This process's report, replaced atomically (a reader never sees half of it)."""
    path = folder / f"{os.getpid()}.json"
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(report))
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


async def keep_writing(folder: Path, report: Any) -> None:
    """Write ``report()`` every :data:`WRITE_EVERY` seconds until cancelled."""
    while True:
        await asyncio.to_thread(write, folder, report())
        await asyncio.sleep(WRITE_EVERY)
