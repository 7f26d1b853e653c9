"""Kernels tuned per adapter and cached: the executor runs, of a node's candidate lowerings
(``Lowering.candidates``: the GEMM template's tilings), the one fastest on this adapter.

At load, for each kernel that offers alternatives, :class:`Tuner` finds the winner of its
*problem* (every candidate's shaders and grids, hashed: BERT's twelve FFN-down MatMuls are one
problem) where it was found before: first in this process, then in the cache file
(``tuning_cache.py``, per adapter); else it times every candidate on the device with timestamp
queries, on the executor's own buffers (what they hold does not matter to the time), a few
rounds each, and keeps the median's fastest. The kernel's own choice stays unless another beats
it by more than KEEP_MARGIN (timings move by a few percent from one run to the next).

Policy (:func:`policy`): on by default on a GPU with the ``timestamp-query`` feature; off on a
software adapter (lavapipe: its times say little of any GPU) and without timestamp queries, the
size heuristic's choice then running as before. ``GPUX_WGPU_TUNE=1`` or ``0`` forces it.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpux import env
from gpux.errors import BackendError
from gpux.runtime.wgpu import tuning_cache
from gpux.runtime.wgpu.device import Gpu
from gpux.runtime.wgpu.kernel import Binding, Lowering

WARMUP_ROUNDS = 1  # untimed: the first use of a pipeline may pay for its compilation
TIMED_ROUNDS = 5
KEEP_MARGIN = 0.05

# A device resource for one of a candidate's bindings (inputs, outputs, scratch; the tuner
# makes the uniforms of ``params`` itself): a bind group entry's ``resource``.
ResourceFor = Callable[[Lowering, Binding], dict[str, Any]]

# Winners found in this process, by "<adapter>/<problem>": a problem is timed once per process.
_process_choices: dict[str, int] = {}
_process_lock = threading.Lock()


def policy(gpu: Gpu) -> tuple[bool, str]:
    """Whether to tune on ``gpu``, and why (shown in the placement details)."""
    forced = env.wgpu_tune()
    if forced is False:
        return False, "GPUX_WGPU_TUNE=0"
    if "timestamp-query" not in gpu.features:
        return False, "the adapter has no timestamp queries"
    if forced:
        return True, "GPUX_WGPU_TUNE=1"
    if gpu.is_software:
        return False, "a software adapter (GPUX_WGPU_TUNE=1 tunes it anyway)"
    return True, "a GPU with timestamp queries"


def adapter_key(gpu: Gpu) -> str:
    """What identifies the adapter and the compiler its kernels go through, hashed."""
    import wgpu

    info = gpu.adapter.info
    fields = ("vendor", "vendor_id", "device", "device_id", "description", "architecture")
    identity = {name: str(info.get(name, "")) for name in fields}
    identity |= {
        "backend": str(info.get("backend_type", "")),
        "type": str(info.get("adapter_type", "")),
        "wgpu": str(wgpu.__version__),
    }
    encoded = json.dumps(identity, sort_keys=True).encode()
    return hashlib.blake2b(encoded, digest_size=8).hexdigest()


def problem_key(candidates: tuple[Lowering, ...]) -> str:
    """Every candidate's dispatches (shader, grid, bindings, parameters) and scratch, hashed:
    equal keys run the same code on the same sizes."""
    digest = hashlib.blake2b(digest_size=16)
    for candidate in candidates:
        digest.update(repr(("candidate", candidate.scratch)).encode())
        for dispatch in candidate.dispatches:
            digest.update(dispatch.shader.encode())
            shape = (dispatch.entry_point, dispatch.workgroups, dispatch.bindings, dispatch.params)
            digest.update(repr(shape).encode())
    return digest.hexdigest()


@dataclass
class TuningReport:
    """What tuning did at one executor's load (``details["tuning"]``)."""

    enabled: bool
    reason: str
    kernels: int = 0  # kernels with candidates to choose from
    problems: int = 0  # distinct problems among them
    timed: int = 0  # problems timed at this load
    from_cache: int = 0  # problems whose winner the cache file held
    reused: int = 0  # problems this process had tuned already
    changed: int = 0  # kernels that run other than the size heuristic's choice
    seconds: float = 0.0
    # Sums over the problems timed now: the heuristic's medians, then the winners'.
    timed_ms: list[float] = field(default_factory=lambda: [0.0, 0.0])
    cache_file: str = ""
    cache_written: bool | None = None  # None: nothing new to write

    def details(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"enabled": self.enabled, "why": self.reason}
        if not self.enabled:
            return shown
        shown |= {
            "kernels": self.kernels,
            "problems": self.problems,
            "timed": self.timed,
            "from_cache": self.from_cache,
            "reused_in_process": self.reused,
            "changed": self.changed,
            "seconds": round(self.seconds, 3),
            "cache_file": self.cache_file,
        }
        if self.timed:
            heuristic, chosen = self.timed_ms
            shown["timed_ms"] = {"heuristic": round(heuristic, 4), "chosen": round(chosen, 4)}
        if self.cache_written is not None:
            shown["cache_written"] = self.cache_written
        return shown


class Tuner:
    """Chooses among candidate lowerings on ``gpu`` for one executor's load; :meth:`save`
    writes the choices it timed to the cache file."""

    def __init__(self, gpu: Gpu, cache_path: Path | None = None) -> None:
        self.gpu = gpu
        enabled, reason = policy(gpu)
        self.report = TuningReport(enabled, reason)
        self._path = Path()
        self._adapter = ""
        if enabled:
            self._path = cache_path or tuning_cache.default_path()
            self.report.cache_file = str(self._path)
            self._adapter = adapter_key(gpu)
        self._file: dict[str, int] | None = None  # read on first need
        self._new: dict[str, int] = {}
        self._chosen: dict[str, int] = {}  # at this load, by problem

    @property
    def enabled(self) -> bool:
        return self.report.enabled

    def candidates(self, lowering: Lowering) -> tuple[Lowering, ...]:
        """``lowering``'s candidates when tuning (made now: they cost a few lowerings each),
        else ``lowering`` alone."""
        if not self.enabled or lowering.alternatives is None:
            return (lowering,)
        started = time.perf_counter()
        offered = lowering.candidates()
        self.report.seconds += time.perf_counter() - started
        return offered

    def choose(self, candidates: tuple[Lowering, ...], resource: ResourceFor) -> Lowering:
        """The candidate to run (``candidates[0]`` is the kernel's own choice), timed with
        ``resource``'s buffers unless its problem's winner is known."""
        if not self.enabled or len(candidates) == 1:
            return candidates[0]
        started = time.perf_counter()
        report = self.report
        key = f"{self._adapter}/{problem_key(candidates)}"
        report.kernels += 1
        index = self._chosen.get(key)
        if index is None:  # the first kernel of this problem at this load
            index = self._find(key, candidates, resource)
            self._chosen[key] = index
        report.changed += index != 0
        report.seconds += time.perf_counter() - started
        return candidates[index]

    def _find(self, key: str, candidates: tuple[Lowering, ...], resource: ResourceFor) -> int:
        """The winner of problem ``key``: this process's, the cache file's, or timed now."""
        report = self.report
        report.problems += 1
        with _process_lock:
            index = _process_choices.get(key)
        if index is not None and index < len(candidates):
            report.reused += 1
            return index
        index = self._cached_index(key, len(candidates))
        if index is not None:
            report.from_cache += 1
        else:
            times = time_candidates(self.gpu, candidates, resource)
            index = _winner(times)
            report.timed += 1
            report.timed_ms[0] += times[0]
            report.timed_ms[1] += times[index]
            self._new[key] = index
        with _process_lock:
            _process_choices[key] = index
        return index

    def _cached_index(self, key: str, count: int) -> int | None:
        if self._file is None:
            self._file = tuning_cache.read_choices(self._path)
        index = self._file.get(key)
        return index if index is not None and index < count else None

    def save(self) -> None:
        """Write the choices timed at this load (none: nothing is written)."""
        if self._new:
            self.report.cache_written = tuning_cache.save_choices(self._path, self._new)
            self._new = {}


def _winner(times: list[float]) -> int:
    """The fastest candidate, unless the first (the kernel's own) is within KEEP_MARGIN."""
    fastest = min(range(len(times)), key=times.__getitem__)
    return 0 if times[0] <= times[fastest] * (1 + KEEP_MARGIN) else fastest


def time_candidates(
    gpu: Gpu, candidates: tuple[Lowering, ...], resource: ResourceFor
) -> list[float]:
    """Median milliseconds of each candidate on ``gpu``, each run in a compute pass of its own
    between two timestamps, the candidates taking turns for TIMED_ROUNDS rounds after
    WARMUP_ROUNDS untimed ones, in one submit. An alternative that does not compile on this
    adapter counts as infinitely slow; the first (the kernel's own) raises as a load would."""
    import wgpu

    device = gpu.device
    made: list[Any] = []  # uniforms, the query set and its buffers: destroyed at the end
    encoded: list[list[tuple[Any, Any, tuple[int, int, int]]] | None] = []
    for number, candidate in enumerate(candidates):
        try:
            encoded.append(_bind(gpu, candidate, resource, made))
        except BackendError:
            if number == 0:
                raise
            encoded.append(None)
    count = len(candidates)
    queries = device.create_query_set(type=wgpu.QueryType.timestamp, count=2 * count * TIMED_ROUNDS)
    made.append(queries)
    encoder = device.create_command_encoder()
    for round_number in range(WARMUP_ROUNDS + TIMED_ROUNDS):
        timed = round_number - WARMUP_ROUNDS
        for number, steps in enumerate(encoded):
            if steps is None:
                continue
            writes: dict[str, Any] = {}
            if timed >= 0:
                slot = 2 * (timed * count + number)
                writes = {
                    "timestamp_writes": {
                        "query_set": queries,
                        "beginning_of_pass_write_index": slot,
                        "end_of_pass_write_index": slot + 1,
                    }
                }
            compute_pass = encoder.begin_compute_pass(**writes)
            for pipeline, bind_group, workgroups in steps:
                compute_pass.set_pipeline(pipeline)
                compute_pass.set_bind_group(0, bind_group)
                compute_pass.dispatch_workgroups(*workgroups)
            compute_pass.end()
    size = 8 * 2 * count * TIMED_ROUNDS
    resolved = device.create_buffer(
        size=size, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC
    )
    stamps = gpu.readback_buffer(size, label="gpux-tuning")
    made += [resolved, stamps]
    encoder.resolve_query_set(queries, 0, 2 * count * TIMED_ROUNDS, resolved, 0)
    encoder.copy_buffer_to_buffer(resolved, 0, stamps, 0, size)
    gpu.queue.submit([encoder.finish()])
    try:
        stamps.map_sync(wgpu.MapMode.READ)
        ticks = np.frombuffer(stamps.read_mapped(), dtype=np.uint64).astype(np.int64)
        stamps.unmap()
    finally:
        for spent in made:
            spent.destroy()
    medians = []
    for number, steps in enumerate(encoded):
        if steps is None:
            medians.append(float("inf"))
            continue
        # WebGPU timestamps count nanoseconds.
        spans = [
            (ticks[2 * (r * count + number) + 1] - ticks[2 * (r * count + number)]) / 1e6
            for r in range(TIMED_ROUNDS)
        ]
        medians.append(float(statistics.median(spans)))
    return medians


def _bind(
    gpu: Gpu, candidate: Lowering, resource: ResourceFor, made: list[Any]
) -> list[tuple[Any, Any, tuple[int, int, int]]]:
    """``candidate``'s dispatches as (pipeline, bind group, workgroups)."""
    steps = []
    for dispatch in candidate.dispatches:
        pipeline = gpu.pipeline(dispatch)
        entries = []
        for number, binding in enumerate(dispatch.bindings):
            if binding.kind == "params":
                uniform = gpu.uniform_buffer(dispatch.params, label="gpux-tuning-params")
                made.append(uniform)
                bound = {"buffer": uniform, "offset": 0, "size": uniform.size}
            else:
                bound = resource(candidate, binding)
            entries.append({"binding": number, "resource": bound})
        bind_group = gpu.device.create_bind_group(
            layout=pipeline.get_bind_group_layout(0), entries=entries
        )
        steps.append((pipeline, bind_group, dispatch.workgroups))
    return steps


def widest_scratch(candidates: tuple[Lowering, ...]) -> tuple[int, ...]:
    """Scratch sizes that every candidate's fit in: the largest of each buffer."""
    widest: list[int] = []
    for candidate in candidates:
        for index, size in enumerate(candidate.scratch):
            if index == len(widest):
                widest.append(size)
            else:
                widest[index] = max(widest[index], size)
    return tuple(widest)
