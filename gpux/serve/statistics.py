"""Per-model inference statistics in the shape of Triton's statistics extension.

``GET /v2/models/{m}/stats`` and the gRPC ``ModelStatistics`` answer :meth:`Statistics.report`;
perf_analyzer reads it to split a request's server time into queue and compute. The figures
follow Triton's definitions (docs of its ``model_statistics`` extension):

- ``success``/``fail``: requests and their time from entering the batcher to their answer;
- ``queue``: each request's wait before its batch started;
- ``compute_input`` / ``compute_infer`` / ``compute_output``: joining and padding the batch,
  the model call, and splitting the result, counted once per request of the batch (as Triton
  gives every request of a batch its batch's durations);
- ``inference_count``: rows answered (padding rows excluded); ``execution_count``: model calls;
- ``batch_stats``: per batch size the model ran (padding included), one count per call.

Every update runs on the event loop (the batcher reports after its call returns), so no lock.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += round(seconds * 1e9) * count

    def report(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchTiming:
    """One model call of a batcher: what the batch held and how long each stage took."""

    rows: int  # rows the model ran, padding included
    padding: int
    queued: Sequence[float]  # seconds each request waited before the call started
    joined: float = 0.0  # combine + pad
    ran: float = 0.0  # the model call
    split: float = 0.0

    @property
    def requests(self) -> int:
        """The requests behind the call (a front-end's call to the shared engine holds several)."""
        return len(self.queued)


@dataclass
class _Stage:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class Statistics:
    name: str
    version: str
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    stages: _Stage = field(default_factory=_Stage)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, _Stage] = field(default_factory=dict)

    def batch(self, timing: BatchTiming) -> None:
        """A model call finished (successfully: a failed batch is retried request by request)."""
        requests = len(timing.queued)
        for waited in timing.queued:
            self.queue.add(waited)
        self.stages.compute_input.add(timing.joined, requests)
        self.stages.compute_infer.add(timing.ran, requests)
        self.stages.compute_output.add(timing.split, requests)
        by_size = self.batches.setdefault(timing.rows, _Stage())
        by_size.compute_input.add(timing.joined)
        by_size.compute_infer.add(timing.ran)
        by_size.compute_output.add(timing.split)
        self.inference_count += timing.rows - timing.padding
        self.execution_count += 1
        self.last_inference_ms = int(time.time() * 1e3)

    def answered(self, seconds: float, ok: bool) -> None:
        (self.success if ok else self.fail).add(seconds)

    def report(self) -> dict[str, Any]:
        """One entry of Triton's ``model_stats`` list."""
        stages = self.stages
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.report(),
                "fail": self.fail.report(),
                "queue": self.queue.report(),
                "compute_input": stages.compute_input.report(),
                "compute_infer": stages.compute_infer.report(),
                "compute_output": stages.compute_output.report(),
                "cache_hit": Duration().report(),
                "cache_miss": Duration().report(),
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": stage.compute_input.report(),
                    "compute_infer": stage.compute_infer.report(),
                    "compute_output": stage.compute_output.report(),
                }
                for size, stage in sorted(self.batches.items())
            ],
        }
