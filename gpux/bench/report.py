"""A benchmark's results with their context: JSON, CSV rows.

One result per backend x batch size. The report carries the image (name and digest), the
machine (CPU, GPUs, OS, Python, ONNX Runtime and its providers) and the settings; each result
carries where the model really ran (backend, providers, device, share of the graph's nodes).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpux.runtime.backend import Placement

LATENCY_KEYS = ("min", "mean", "p50", "p90", "p99", "max", "stdev")


def placement_summary(placement: Placement) -> dict[str, Any]:
    """The placement as a benchmark quotes it: where, and how much of the graph ran there."""
    assignment = placement.details.get("assignment", {})
    known = bool(assignment.get("known"))
    return {
        "backend": placement.backend,
        "requested": placement.requested,
        "providers": placement.providers,
        "device": placement.device,
        "nodes": assignment.get("nodes") if known else None,
        "nodes_on_backend": assignment.get("nodes_on_backend") if known else None,
        "share": assignment.get("share") if known else None,
        "compute_share": assignment.get("compute_share") if known else None,
        "fallback_reason": placement.fallback_reason,
    }


@dataclass
class BenchResult:
    """One backend at one batch size."""

    placement: dict[str, Any]
    batch_size: int
    concurrency: int
    warmup_runs: int
    runs: int
    elapsed_s: float
    latency_ms: dict[str, float]
    throughput: float
    """Items per second: batch size x calls per second over the timed phase."""
    calls_per_s: float
    memory: dict[str, Any]
    input_shapes: dict[str, list[int]]
    latencies_ns: list[int] = field(repr=False, default_factory=list)

    @property
    def backend(self) -> str:
        return str(self.placement["backend"])

    def to_json(self, raw_latencies: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "backend": self.backend,
            "batch_size": self.batch_size,
            "concurrency": self.concurrency,
            "warmup_runs": self.warmup_runs,
            "runs": self.runs,
            "elapsed_s": self.elapsed_s,
            "latency_ms": self.latency_ms,
            "throughput_items_per_s": self.throughput,
            "calls_per_s": self.calls_per_s,
            "memory": self.memory,
            "placement": self.placement,
            "input_shapes": self.input_shapes,
        }
        if raw_latencies:
            body["latencies_ms"] = [round(t / 1e6, 4) for t in self.latencies_ns]
        return body


@dataclass
class Skipped:
    """A requested backend that could not run the model, and why."""

    backend: str
    reason: str
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "reason": self.reason, "hint": self.hint}


@dataclass
class BenchReport:
    image: dict[str, Any]
    machine: dict[str, Any]
    settings: dict[str, Any]
    inputs: str
    """``generated`` (from the model's signature) or ``given`` (real inputs)."""
    results: list[BenchResult]
    skipped: list[Skipped]

    def to_json(self, raw_latencies: bool = False) -> dict[str, Any]:
        return {
            "image": self.image,
            "machine": self.machine,
            "settings": self.settings,
            "inputs": self.inputs,
            "results": [r.to_json(raw_latencies) for r in self.results],
            "skipped": [s.to_json() for s in self.skipped],
        }

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per result, context included (the CSV file's lines)."""
        machine = self.machine
        rows = []
        for result in self.results:
            placement = result.placement
            memory = result.memory
            rows.append(
                {
                    "image": self.image["name"],
                    "digest": self.image["digest"],
                    "backend": result.backend,
                    "device": placement["device"],
                    "providers": " ".join(placement["providers"]),
                    "placement_share": placement["share"],
                    "compute_share": placement["compute_share"],
                    "batch_size": result.batch_size,
                    "concurrency": result.concurrency,
                    "runs": result.runs,
                    "elapsed_s": result.elapsed_s,
                    **{f"latency_{k}_ms": result.latency_ms[k] for k in LATENCY_KEYS},
                    "throughput_items_per_s": result.throughput,
                    "calls_per_s": result.calls_per_s,
                    "host_peak_rss_bytes": memory["host_peak_rss_bytes"],
                    "device_memory_bytes": memory["device"].get("bytes"),
                    "device_memory_scope": memory["device"].get("scope"),
                    "inputs": self.inputs,
                    "cpu": machine["cpu"],
                    "cpu_cores": machine["cpu_cores"],
                    "gpus": "; ".join(machine["gpus"]),
                    "os": machine["os"],
                    "python": machine["python"],
                    "onnxruntime": machine["onnxruntime"],
                }
            )
        return rows

    def write_csv(self, path: Path) -> None:
        rows = self.rows()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as sink:
            writer = csv.DictWriter(sink, fieldnames=list(rows[0]) if rows else ["image"])
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
