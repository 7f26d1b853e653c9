"""Model instances on several devices: which GPUs a model gets, and the pool that runs it there.

``--gpus`` (and the GPUXfile's ``runtime.gpus``) follow Docker's words, as Ollama users and
Triton users (``instance_group { count, kind: KIND_GPU, gpus: [...] }``) expect:

* ``all``: one instance on every GPU the backend sees;
* ``N`` (a number): one instance on each of the first N GPUs; on the CPU, N instances, each with
  its share of the cores;
* ``0,2`` or ``device=1`` (ids): one instance on each named GPU (a bare ``1`` is a count, so a
  single id is written ``device=1`` or ``1,``).

Each instance is its own session on its own device, with its own placement proof. The pool runs
each call (a formed batch) on the least busy instance: fewest calls in flight, then fewest calls
so far, so that light load still spreads. An instance that fails to start is reported with its
cause and the others serve; when none starts, the first failure is raised. A GPU request never
silently becomes a CPU one: ``auto`` with ``--gpus`` must find a GPU backend.

The GPUs are the backend's own numbering (CUDA ordinals, after ``CUDA_VISIBLE_DEVICES``), read
from ``nvidia-smi`` for CUDA and TensorRT, and from ONNX Runtime's device list otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpux.errors import BackendError, UsageError
from gpux.runtime.backend import Backend, Placement

Array = np.ndarray[Any, Any]

# Backends whose instances sit on numbered devices; the others (cpu, coreml, openvino, webgpu)
# get N copies on the one device they have.
DEVICE_BACKENDS = frozenset({"cuda", "tensorrt", "rocm", "directml"})
MAX_INSTANCES = 64  # more copies than any host has GPUs is a typo (e.g. --gpus 1000)


@dataclass(frozen=True)
class Gpu:
    """One GPU as the backend numbers it."""

    index: int
    name: str
    memory_bytes: int | None = None
    uuid: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "memory_bytes": self.memory_bytes,
            "uuid": self.uuid,
        }


@dataclass(frozen=True)
class GpuRequest:
    """What ``--gpus`` asked for: every GPU, a count, or the listed ids."""

    every: bool = False
    count: int = 0
    ids: tuple[int, ...] = ()

    @classmethod
    def parse(cls, value: object, where: str = "--gpus") -> GpuRequest:
        """``all``, ``N``, ``0,1``, ``device=1`` (text, as on the command line), or the
        GPUXfile's forms: ``all``, an int (a count) or a list of ids."""
        hint = f"{where} takes all, a count (2), or device ids (0,1 or device=1)"
        if isinstance(value, bool):
            raise UsageError(f"{where}: {value!r} is not a GPU selection", hint)
        if isinstance(value, int):
            return cls._counted(value, where, hint)
        if isinstance(value, list | tuple):
            return cls._listed(list(value), where, hint)
        text = str(value).strip().lower()
        if text == "all":
            return cls(every=True)
        if text.startswith("device="):
            text = text.removeprefix("device=") + ","
        if "," in text:
            parts = [p.strip() for p in text.split(",") if p.strip()]
            if not parts or not all(p.isdigit() for p in parts):
                raise UsageError(f"{where}: '{value}' is not a list of device ids", hint)
            return cls._listed([int(p) for p in parts], where, hint)
        if text.isdigit():
            return cls._counted(int(text), where, hint)
        raise UsageError(f"{where}: '{value}' is not a GPU selection", hint)

    @classmethod
    def _counted(cls, count: int, where: str, hint: str) -> GpuRequest:
        if not 1 <= count <= MAX_INSTANCES:
            raise UsageError(f"{where}: {count} instances (1 to {MAX_INSTANCES})", hint)
        return cls(count=count)

    @classmethod
    def _listed(cls, ids: list[Any], where: str, hint: str) -> GpuRequest:
        if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise UsageError(f"{where}: {ids!r} is not a list of device ids", hint)
        if any(i < 0 for i in ids) or len(set(ids)) != len(ids) or len(ids) > MAX_INSTANCES:
            raise UsageError(f"{where}: {ids!r}: ids are distinct and >= 0", hint)
        return cls(ids=tuple(ids))

    def describe(self) -> str:
        if self.every:
            return "all"
        if self.ids:
            return ",".join(str(i) for i in self.ids)
        return str(self.count)


@dataclass(frozen=True)
class InstancePlan:
    """One instance to load: on device ``device`` of ``backend`` (None: the only device)."""

    backend: str
    device: int | None
    threads: int = 0  # CPU copies share the cores; 0: the runtime's setting

    @property
    def label(self) -> str:
        return f"{self.backend}:{self.device if self.device is not None else 0}"


def plan(request: GpuRequest, gpus: Sequence[Gpu], backend: str, cores: int) -> list[InstancePlan]:
    """The instances ``request`` gives a model on ``backend``, on a machine with ``gpus`` (as
    that backend numbers them) and ``cores`` CPU cores. Raises UsageError for a request this
    machine cannot meet, naming what it has."""
    if backend not in DEVICE_BACKENDS:
        if request.ids:
            raise UsageError(
                f"--gpus {request.describe()} names devices, but the {backend} backend has one",
                "give a count for copies on it (--gpus 2), or choose a GPU backend",
            )
        copies = 1 if request.every else request.count
        threads = max(1, cores // copies) if backend == "cpu" and copies > 1 else 0
        return [InstancePlan(backend, None, threads) for _ in range(copies)]
    have = {gpu.index for gpu in gpus}
    seen = ", ".join(str(i) for i in sorted(have)) or "none"
    if not gpus:
        raise UsageError(
            f"--gpus {request.describe()}: the {backend} backend sees no GPU",
            "check `gpux doctor`, or CUDA_VISIBLE_DEVICES",
        )
    if request.every:
        chosen = sorted(have)
    elif request.ids:
        missing = [i for i in request.ids if i not in have]
        if missing:
            raise UsageError(
                f"--gpus {request.describe()}: no GPU {', '.join(map(str, missing))} "
                f"({backend} sees {seen})",
                "name GPUs this machine has, or --gpus all",
            )
        chosen = list(request.ids)
    else:
        if request.count > len(have):
            raise UsageError(
                f"--gpus {request.count}: the {backend} backend sees {len(have)} GPU(s) ({seen})",
                f"ask for at most {len(have)}, or --gpus all",
            )
        chosen = sorted(have)[: request.count]
    return [InstancePlan(backend, index) for index in chosen]


def nvidia_gpus(run: Callable[..., Any] = subprocess.run) -> list[Gpu]:
    """The NVIDIA GPUs CUDA numbers, in CUDA's order (``CUDA_VISIBLE_DEVICES`` applied), with
    their memory; [] without ``nvidia-smi`` or a driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = run(
            [
                "nvidia-smi",
                "--query-gpu=index,name,memory.total,uuid",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    return visible(parse_nvidia_smi(done.stdout), os.environ.get("CUDA_VISIBLE_DEVICES"))


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """``index, name, memory.total (MiB), uuid`` lines -> GPUs by physical index."""
    found = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        memory = int(parts[2]) * 1024 * 1024 if parts[2].isdigit() else None
        found.append(Gpu(int(parts[0]), parts[1], memory, parts[3]))
    return found


def visible(gpus: list[Gpu], setting: str | None) -> list[Gpu]:
    """``gpus`` renumbered as CUDA sees them under ``CUDA_VISIBLE_DEVICES=setting``: listed
    indices or UUIDs (prefixes too), in that order, up to the first one that names no GPU."""
    if setting is None:
        return gpus
    shown = []
    for entry in (e.strip() for e in setting.split(",")):
        match = next(
            (
                g
                for g in gpus
                if (entry.isdigit() and g.index == int(entry))
                or (g.uuid and entry and g.uuid.startswith(entry))
            ),
            None,
        )
        if match is None:
            break  # CUDA ignores the rest of the list from an invalid entry on
        shown.append(match)
    return [Gpu(i, g.name, g.memory_bytes, g.uuid) for i, g in enumerate(shown)]


def machine_gpus(backend: str) -> list[Gpu]:
    """The GPUs ``backend`` would number, on this machine."""
    if backend in ("cuda", "tensorrt"):
        return nvidia_gpus()
    if backend not in DEVICE_BACKENDS:
        return []
    from gpux.runtime import discovery
    from gpux.runtime.providers import PROVIDERS

    devices = [
        device
        for provider in PROVIDERS.get(backend, ())
        for device in discovery.runtime().devices_for(provider)
        if device.device_type == "GPU"
    ]
    # ONNX Runtime lists its devices, not their ordinal: number them as found.
    return [Gpu(i, d.metadata.get("Description", d.vendor)) for i, d in enumerate(devices)]


@dataclass
class _Instance:
    label: str
    backend: Backend
    in_flight: int = 0
    calls: int = 0
    rows: int = 0
    busy_seconds: float = 0.0


@dataclass
class InstanceFailure:
    label: str
    error: str


class InstancePool(Backend):
    """Copies of one model, each on its own device; ``run`` goes to the least busy one."""

    name = "instances"

    def __init__(
        self,
        backends: Sequence[tuple[str, Backend]],
        failures: Sequence[InstanceFailure] = (),
        batch_input: str | None = None,
    ) -> None:
        if not backends:
            raise ValueError("an instance pool needs at least one instance")
        self.instances = [_Instance(label, backend) for label, backend in backends]
        self.failures = list(failures)
        self.batch_input = batch_input  # counts rows per instance; None: calls only
        self._lock = threading.Lock()
        # (instance index, its device, rows, seconds) after each call: the server's metrics.
        self.on_call: Callable[[int, str, int, float], None] | None = None

    @classmethod
    def load(cls, *args: Any, **kwargs: Any) -> Backend:  # pragma: no cover - built by loading
        raise NotImplementedError("instance pools are made by gpux.pipeline.loading")

    def _pick(self) -> tuple[int, _Instance]:
        with self._lock:
            index = min(
                range(len(self.instances)),
                key=lambda i: (self.instances[i].in_flight, self.instances[i].calls),
            )
            chosen = self.instances[index]
            chosen.in_flight += 1
            chosen.calls += 1
            return index, chosen

    def reset_counts(self) -> None:
        """Counts from zero (a server starts counting once its models are loaded and warm)."""
        with self._lock:
            for instance in self.instances:
                instance.calls = instance.rows = 0
                instance.busy_seconds = 0.0

    def run(self, feed: Mapping[str, Array]) -> dict[str, Array]:
        index, instance = self._pick()
        started = time.perf_counter()
        try:
            return instance.backend.run(feed)
        finally:
            value = feed.get(self.batch_input) if self.batch_input else None
            rows = int(value.shape[0]) if value is not None and value.ndim else 1
            seconds = time.perf_counter() - started
            with self._lock:
                instance.in_flight -= 1
                instance.rows += rows
                instance.busy_seconds += seconds
            if self.on_call is not None:
                self.on_call(index, instance.label, rows, seconds)

    def stats(self) -> list[dict[str, Any]]:
        """Per instance: its device, calls and rows so far, time busy, calls in flight."""
        with self._lock:
            return [
                {
                    "instance": index,
                    "device": i.label,
                    "calls": i.calls,
                    "rows": i.rows,
                    "busy_seconds": round(i.busy_seconds, 6),
                    "in_flight": i.in_flight,
                }
                for index, i in enumerate(self.instances)
            ] + [{"instance": None, "device": f.label, "error": f.error} for f in self.failures]

    @property
    def placement(self) -> Placement:
        """The first instance's placement, with every instance's own in ``details``."""
        first = self.instances[0].backend.placement
        each = []
        for instance in self.instances:
            own = instance.backend.placement
            each.append({"instance": instance.label, **own.to_json()})
        details = {**first.details, "instances": each}
        if self.failures:
            details["failed_instances"] = [
                {"instance": f.label, "error": f.error} for f in self.failures
            ]
        return Placement(
            backend=first.backend,
            providers=first.providers,
            device=", ".join(i.label for i in self.instances),
            requested=first.requested,
            fallback_reason=first.fallback_reason,
            details=details,
        )

    def close(self) -> None:
        for instance in self.instances:
            instance.backend.close()


def instance_count(backend: Backend) -> int:
    return len(backend.instances) if isinstance(backend, InstancePool) else 1


def load_all(
    plans: Sequence[InstancePlan],
    load_one: Callable[[InstancePlan], Backend],
    batch_input: str | None = None,
) -> InstancePool:
    """Load every planned instance; those that fail are kept as failures with their cause.
    When none loads, the first failure is raised (the others are in its message)."""
    loaded: list[tuple[str, Backend]] = []
    failures: list[InstanceFailure] = []
    first: BaseException | None = None
    for one in plans:
        try:
            loaded.append((one.label, load_one(one)))
        except (BackendError, UsageError, OSError, RuntimeError) as exc:
            first = first or exc
            failures.append(InstanceFailure(one.label, str(exc).splitlines()[0]))
    if not loaded:
        assert first is not None
        if len(failures) > 1:
            others = "; ".join(f"{f.label}: {f.error}" for f in failures)
            raise BackendError(
                f"no instance started ({others})", "check `gpux doctor` for each GPU"
            ) from first
        raise first
    return InstancePool(loaded, failures, batch_input)
