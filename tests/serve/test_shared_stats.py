"""Triton statistics across processes (gpux/serve/shared_stats.py): each process's report file,
rewritten soon after it changes, and the answer that adds them up."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from gpux.serve import shared_stats


def entry(name: str, inferences: int, queued_ns: int, batch: int = 1) -> dict[str, Any]:
    stage = {"count": inferences, "ns": queued_ns}
    return {
        "name": name,
        "version": "1",
        "last_inference": inferences,
        "inference_count": inferences,
        "execution_count": inferences,
        "inference_stats": {"success": dict(stage), "queue": dict(stage)},
        "batch_stats": [
            {
                "batch_size": batch,
                "compute_input": dict(stage),
                "compute_infer": dict(stage),
                "compute_output": dict(stage),
            }
        ],
    }


def test_a_changed_report_is_written_soon_and_an_unchanged_one_is_not_rewritten(
    tmp_path: Path,
) -> None:
    report = {"model_stats": [entry("m", 1, 10)]}
    path = tmp_path / f"{os.getpid()}.json"

    async def wait_for(count: int) -> None:
        for _ in range(200):  # 2 s at most
            if (
                path.exists()
                and json.loads(path.read_text())["model_stats"][0]["inference_count"] == count
            ):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the report with {count} inferences was not written")

    async def main() -> tuple[int, int]:
        writer = asyncio.create_task(shared_stats.keep_writing(tmp_path, lambda: report, 0.01))
        try:
            await wait_for(1)
            first = path.stat().st_ino
            await asyncio.sleep(0.1)  # ten looks at an unchanged report
            unchanged = path.stat().st_ino
            report["model_stats"] = [entry("m", 2, 20)]
            await wait_for(2)
            return first, unchanged
        finally:
            writer.cancel()

    first, unchanged = asyncio.run(main())
    # Each write replaces the file (a new inode): none happened while nothing changed.
    assert unchanged == first
    assert not list(tmp_path.glob("*.part"))


def test_reports_add_up_per_model_and_batch_size() -> None:
    merged = shared_stats.merge(
        [
            {"model_stats": [entry("a", 3, 30), entry("b", 1, 5)]},
            {"model_stats": [entry("a", 4, 40, batch=8)]},
            {"model_stats": [entry("a", 2, 20)]},
        ]
    )
    a, b = merged["model_stats"]
    assert (a["name"], b["name"]) == ("a", "b")
    assert a["inference_count"] == 9 and a["execution_count"] == 9
    assert a["inference_stats"]["queue"] == {"count": 9, "ns": 90}
    assert a["last_inference"] == 4
    sizes = {s["batch_size"]: s["compute_infer"]["count"] for s in a["batch_stats"]}
    assert sizes == {1: 5, 8: 4}
    assert b["inference_count"] == 1
