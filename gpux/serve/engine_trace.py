"""Where a shared-engine call's time goes, for ``benchmarks/serve.py``.

With ``GPUX_ENGINE_TRACE=<folder>``, the engine stamps each answer with when its loop had read
the call and when the model's batcher answered it; each front-end adds when it wrote the call
and when it read the answer, and sums per stage:

- ``to_engine``: the front-end's write until the engine has read the whole call;
- ``in_batcher``: the engine's queue, batch and model call, and its threads' hand-overs;
- ``back``: the answer's write until the front-end's loop has read it.

The stamps are ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process of a Linux
machine). Each front-end rewrites ``<folder>/<pid>.json`` every ``EVERY`` answers: the sums
and the count, which a benchmark reads before and after a measurement. Off (no stamps, no
files) unless the variable is set.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

STAGES = ("to_engine", "in_batcher", "back")
EVERY = 256


class CallTimes:
    """A front-end's sums, per stage, over the calls it has had answered."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{os.getpid()}.json"
        self.sums = dict.fromkeys(STAGES, 0.0)
        self.count = 0
        self._sent: dict[int, float] = {}

    def sent(self, call_id: int) -> None:
        self._sent[call_id] = time.monotonic()

    def answered(self, call_id: int, stamps: tuple[float, float]) -> None:
        """The engine's ``stamps`` (read, answered) of an answer read just now."""
        now = time.monotonic()
        sent = self._sent.pop(call_id, None)
        if sent is None:
            return
        read, done = stamps
        for stage, seconds in zip(STAGES, (read - sent, done - read, now - done), strict=True):
            self.sums[stage] += seconds
        self.count += 1
        if self.count % EVERY == 0:
            self.write()

    def write(self) -> None:
        partial = self.path.with_suffix(".part")
        partial.write_text(json.dumps({"count": self.count, "seconds": self.sums}))
        partial.replace(self.path)


def read_sums(folder: Path) -> tuple[int, dict[str, float]]:
    """Every front-end's counts and sums in ``folder``, added up."""
    count, sums = 0, dict.fromkeys(STAGES, 0.0)
    for path in folder.glob("*.json"):
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a file being replaced
        count += int(found["count"])
        for stage in STAGES:
            sums[stage] += float(found["seconds"][stage])
    return count, sums
