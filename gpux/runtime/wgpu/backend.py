"""The ``wgpu`` backend: GPUX's own WebGPU engine behind the Backend contract.

``load`` opens the adapter (``runtime.device``: its index among wgpu's adapters, best first),
prepares the graph at the GPUXfile's fixed sizes (symbols it leaves open count as 1, or 32 for
axes that are not batch-like where the model cannot run at 1, until a call brings other sizes),
partitions it and builds the executor. A call with other input sizes gets an executor of its
own, built on first use and kept (a few, least recently used first out). With
:meth:`WgpuBackend.use_batch_buckets` (the loader calls it), a symbolic batch is padded up to a
few bucket sizes instead (buckets.py), so batch sizes do not each build an executor.

Software adapters (lavapipe) are refused unless ``GPUX_WGPU_ALLOW_SOFTWARE=1`` (tests): ONNX
Runtime's CPU provider is faster there. All models on one adapter share its device, per process;
a process forked after that cannot use it (``Gpu.ensure_same_process``).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpux import env
from gpux.config.schema import Runtime
from gpux.errors import BackendError, GPUXError, InputError
from gpux.runtime.backend import Backend, Placement
from gpux.runtime.wgpu import buckets as batching
from gpux.runtime.wgpu import graph as graphs
from gpux.runtime.wgpu.device import Gpu, open_device
from gpux.runtime.wgpu.executor import Executor, SharedConstants
from gpux.runtime.wgpu.partition import CPU_PROVIDER, WGPU_PROVIDER, Partition, partition

# Executors kept for input sizes other than the loaded ones.
MAX_SIZED_EXECUTORS = 4
# Sizes tried at load for axes left open that are not batch-like; 32 is the smoke run's
# (gpux/builder/smoke.py OTHER_SYMBOLIC): large enough for strided convolutions.
OPEN_SIZE_STAND_INS = (1, 32)

Shapes = tuple[tuple[str, tuple[int, ...]], ...]


_devices: dict[tuple[bool, int], Gpu] = {}
_devices_lock = threading.Lock()


def shared_device(index: int = 0) -> Gpu:
    """The process's device on adapter ``index`` (``runtime.device``), opened once (as ONNX
    Runtime shares one environment): every model loaded on it shares it, so a second load pays
    no adapter enumeration."""
    allow_software = env.wgpu_allow_software()
    with _devices_lock:
        gpu = _devices.get((allow_software, index))
        if gpu is not None:
            gpu.ensure_same_process()
        else:
            try:
                gpu = open_device(allow_software=allow_software, index=index)
            except BackendError as exc:
                hint = exc.hint or ""
                if not allow_software:
                    hint += "; GPUX_WGPU_ALLOW_SOFTWARE=1 allows a software adapter (tests)"
                raise BackendError(f"backend 'wgpu' cannot start: {exc.message}", hint) from exc
            _devices[(allow_software, index)] = gpu
        return gpu


def _load_shapes(
    model: Any, dimensions: Mapping[str, int], open_size: int = 1
) -> tuple[Shapes, list[str]]:
    """Input sizes at load: fixed ones, then ``dimensions`` by symbol, then stand-ins for the
    sizes left open: 1 for a batch-like axis (a symbol that leads an input, or an unnamed axis
    0), ``open_size`` for the others; and the symbols left open (sizes a call may change)."""
    initializers = {t.name for t in model.graph.initializer}
    values = [value for value in model.graph.input if value.name not in initializers]
    leading = {
        value.type.tensor_type.shape.dim[0].dim_param
        for value in values
        if value.type.tensor_type.shape.dim and value.type.tensor_type.shape.dim[0].dim_param
    }
    shapes = []
    open_symbols: list[str] = []
    for value in values:
        shape = []
        for index, dim in enumerate(value.type.tensor_type.shape.dim):
            # Some exporters (Paddle's) write -1 for an open axis instead of leaving it unset.
            if dim.HasField("dim_value") and dim.dim_value >= 0:
                shape.append(int(dim.dim_value))
            elif dim.dim_param in dimensions:
                shape.append(int(dimensions[dim.dim_param]))
            else:
                open_symbols.append(dim.dim_param or f"{value.name}[{index}]")
                batch_like = dim.dim_param in leading if dim.dim_param else index == 0
                shape.append(1 if batch_like else open_size)
        shapes.append((value.name, tuple(shape)))
    return tuple(shapes), open_symbols


def _cheaper(first: Partition, second: Partition) -> bool:
    """``first`` is the better split: fewer nodes on the CPU, then fewer submits and nodes."""

    def cost(split: Partition) -> tuple[int, int, int]:
        return (split.cpu_nodes, split.submits, split.gpu_nodes + split.cpu_nodes)

    return cost(first) < cost(second)


def _fusions_left_out(split: Partition) -> bool:
    """Whether a fused op of ONNX Runtime's (domain com.microsoft) runs on the CPU."""
    return any(
        node.domain == "com.microsoft"
        for segment in split.segments
        if not segment.on_gpu
        for node in segment.nodes
    )


def build(
    model: Any,
    gpu: Gpu,
    shapes: Shapes,
    threads: int | None,
    constants: SharedConstants | None = None,
) -> tuple[Executor, str]:
    """The executor of ``model`` at ``shapes`` (its weights in ``constants`` when given, shared
    with the model's other executors), and the optimizer level it was prepared at:
    EXTENDED, unless a fused com.microsoft op that no kernel takes is left on the CPU and BASIC
    leaves fewer nodes there; ``none`` when ONNX Runtime cannot load the model at all (the engine may run
    ops its CPU provider lacks). A plan that fails because the model's shapes disagree at
    ``shapes`` raises :class:`graphs.ShapesDisagree`, naming the node."""
    try:
        return _plan(model, gpu, shapes, threads, constants)
    except BackendError as exc:
        where = graphs.shape_disagreement(model, dict(shapes))
        if where is None:
            raise
        raise graphs.ShapesDisagree(
            f"the model's shapes disagree at {_sizes_text(shapes)}: {where}",
            "give sizes the model takes (image sides that its strides divide, often a "
            "multiple of 32)",
        ) from exc


def _sizes_text(shapes: Shapes) -> str:
    """``x 1x3x32x32, mask 1x32``."""
    return ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in shapes)


def _plan(
    model: Any,
    gpu: Gpu,
    shapes: Shapes,
    threads: int | None,
    constants: SharedConstants | None,
) -> tuple[Executor, str]:
    best: tuple[graphs.Graph, Partition, str] | None = None
    failure: BackendError | None = None
    optimizer_refused = False
    for level in (*graphs.LEVELS, "none"):
        if level == "none" and (best is not None or not optimizer_refused):
            break
        try:
            graph = graphs.prepare(model, {}, dict(shapes), level)
            split = partition(graph, gpu.features)
        except graphs.OptimizerRefused as exc:
            optimizer_refused = True
            failure = failure or exc
            continue
        except BackendError as exc:
            failure = exc if level == "none" else failure or exc
            continue
        if best is None or _cheaper(split, best[1]):
            best = (graph, split, level)
        if not _fusions_left_out(split):
            # BASIC differs from EXTENDED by the com.microsoft fusions only: without one on the
            # CPU it cannot do better (and it costs: 3.1 s against 0.7 s on MiniLM int8).
            break
    if best is None:
        assert failure is not None
        raise failure
    graph, split, level = best
    return Executor(gpu, graph, split, threads, constants), level


def _build_at_load(
    model: Any,
    gpu: Gpu,
    dimensions: Mapping[str, int],
    threads: int | None,
    constants: SharedConstants,
) -> tuple[Executor, str, Shapes, list[str]]:
    """The executor at the load sizes (``build``'s), those sizes and the symbols left open.

    Open sizes count as 1 first (the cheapest plan). Where the model cannot run there, the
    smoke run's stand-ins follow (32 for axes that are not batch-like): a YOLO neck
    concatenates a 2x-upsampled stride-32 map with the stride-16 one, which at a 1x1 image
    gives a 2x2 map beside a 1x1 one; calls at the real sizes plan their own executor anyway."""
    failures: list[BackendError] = []
    tried: list[Shapes] = []
    for open_size in OPEN_SIZE_STAND_INS:
        shapes, open_symbols = _load_shapes(model, dimensions, open_size)
        if shapes in tried:
            break
        tried.append(shapes)
        try:
            executor, level = build(model, gpu, shapes, threads, constants)
        except BackendError as exc:
            if not open_symbols:
                raise
            failures.append(exc)
            continue
        return executor, level, shapes, open_symbols
    first, last = failures[0], failures[-1]
    if len(failures) == 1 or first.message == last.message:
        raise first  # the same at every stand-in size: the sizes are not the cause
    symbols = sorted(set(open_symbols))
    sizes = " or ".join(_sizes_text(shapes) for shapes in tried)
    raise BackendError(
        f"the wgpu engine plans a model at load with stand-in sizes for the axes it leaves "
        f"open ({', '.join(symbols)}), and this model cannot run at {sizes}: {last.message}",
        "give the sizes it runs at: dimensions={"
        + ", ".join(f"'{symbol}': N" for symbol in symbols)
        + "}, or shape: [...] in the GPUXfile's inputs",
    ) from last


class WgpuBackend(Backend):
    name = "wgpu"

    def __init__(
        self,
        gpu: Gpu,
        model: Any,
        executor: Executor,
        shapes: Shapes,
        placement: Placement,
        threads: int | None,
        constants: SharedConstants,
        batch_symbol: str | None = None,
    ) -> None:
        self._gpu = gpu
        self._constants = constants
        self._model = model
        self._threads = threads
        self._loaded_shapes = shapes
        self._executor = executor
        self._sized: collections.OrderedDict[Shapes, Executor] = collections.OrderedDict()
        self._placement = placement
        self._batch_symbol = batch_symbol
        self._buckets: batching.Buckets | None = None
        self._lock = threading.Lock()  # one call at a time: the buffers are shared

    @classmethod
    def load(
        cls,
        model_path: Path,
        runtime: Runtime,
        cache_dir: Path | None = None,
        dimensions: Mapping[str, int] | None = None,
    ) -> WgpuBackend:
        started = time.perf_counter()
        gpu = shared_device(runtime.device)
        model = graphs.load_model(model_path)
        constants = SharedConstants(gpu)
        try:
            executor, level, shapes, open_symbols = _build_at_load(
                model, gpu, dimensions or {}, runtime.threads, constants
            )
        except BaseException:
            constants.close()
            raise
        split = executor.partition
        info = gpu.adapter.info
        details: dict[str, Any] = {
            "engine": "gpux-wgpu",
            "adapter": {
                "name": str(info.get("device", "")),
                "backend": str(info.get("backend_type", "")),
                "type": str(info.get("adapter_type", "")),
                "software": gpu.is_software,
                "features": sorted(gpu.features),
            },
            "assignment": split.assignment(),
            "optimizer": f"onnxruntime {level}",
            "input_shapes": {name: list(shape) for name, shape in shapes},
            "memory": {
                "buffers": len(executor.memory.buffer_sizes),
                "bytes": executor.memory.total_bytes,
                "pooled_bytes": executor.memory.pooled_bytes,
            },
            "dispatches": sum(
                len(lowered.lowering.dispatches)
                for segment in split.segments
                for lowered in segment.lowered
            ),
            "submits_per_call": split.submits,
            "tuning": executor.tuning.details(),
            "load_ms": round((time.perf_counter() - started) * 1e3, 1),
        }
        if open_symbols:
            details["sizes_per_call"] = sorted(set(open_symbols))
        placement = Placement(
            backend="wgpu",
            providers=[WGPU_PROVIDER, CPU_PROVIDER] if split.cpu_nodes else [WGPU_PROVIDER],
            device=gpu.adapter_summary,
            requested=str(runtime.backend.value),
            details=details,
        )
        symbol = batching.batch_symbol(model, dimensions or {})
        return cls(gpu, model, executor, shapes, placement, runtime.threads, constants, symbol)

    def use_batch_buckets(self, sizes: Sequence[int]) -> None:
        """Run every batch size on executors built for ``sizes`` only (buckets.py), each built
        on first use. A model without one batch symbol on every input's and output's axis 0
        keeps exact-size executors; so does an empty ``sizes``. Recorded in the placement
        (``batch_buckets``)."""
        buckets = batching.Buckets.of(sizes)
        details = self._placement.details
        with self._lock:
            if self._batch_symbol is None or buckets is None:
                self._buckets = None
                details.pop("batch_buckets", None)
                return
            self._buckets = buckets
            details["batch_buckets"] = list(buckets.sizes)

    def _executor_for(self, feed: Mapping[str, np.ndarray[Any, Any]]) -> Executor:
        shapes = tuple((name, tuple(feed[name].shape)) for name, _ in self._loaded_shapes)
        if shapes == self._loaded_shapes:
            return self._executor
        executor = self._sized.get(shapes)
        if executor is None:
            try:
                executor, _ = build(self._model, self._gpu, shapes, self._threads, self._constants)
            except graphs.ShapesDisagree as exc:
                # The model loaded at other sizes: these are the caller's.
                raise InputError(exc.message, exc.hint) from exc
            self._sized[shapes] = executor
            # Every bucket stays: evicting one would rebuild it on its next call.
            kept = MAX_SIZED_EXECUTORS + (len(self._buckets.sizes) if self._buckets else 0)
            if len(self._sized) > kept:
                _, oldest = self._sized.popitem(last=False)
                oldest.close()
        self._sized.move_to_end(shapes)
        return executor

    def _run(self, feed: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        names = [name for name, _ in self._loaded_shapes]
        rows = batching.rows_of(feed, names) if self._buckets is not None else None
        loaded = all(feed[name].shape == shape for name, shape in self._loaded_shapes)
        if self._buckets is None or rows is None or loaded:
            return self._executor_for(feed).run(feed)
        parts = []
        for start, stop in self._buckets.chunks(rows):
            count = stop - start
            chunk = {name: feed[name][start:stop] for name in names}
            padded = batching.pad(chunk, count, self._buckets.bucket(count))
            parts.append((self._executor_for(padded).run(padded), count))
        return batching.join(parts)

    def run(self, feed: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        # Before the lock: a forked child may have inherited it held.
        self._gpu.ensure_same_process()
        with self._lock:
            try:
                return self._run(feed)
            except GPUXError:
                raise
            except Exception as exc:  # wgpu raises its own error types (validation, device lost)
                raise BackendError(
                    f"the model failed to run on wgpu ({self._gpu.adapter_summary}): "
                    + (str(exc).splitlines() or [type(exc).__name__])[0],
                    "rerun with --debug; --backend cpu runs it on ONNX Runtime",
                ) from exc

    @property
    def placement(self) -> Placement:
        return self._placement

    @property
    def executor(self) -> Executor:
        """The executor at the loaded sizes (for benchmarks: ``last_encode_seconds``)."""
        return self._executor

    def executor_for(self, feed: Mapping[str, np.ndarray[Any, Any]]) -> Executor:
        """The executor that runs ``feed``'s sizes as they are (built now if none has yet)."""
        with self._lock:
            return self._executor_for(feed)

    @property
    def built_shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """The input sizes of every executor built so far (the loaded one first)."""
        with self._lock:
            return [dict(shapes) for shapes in (self._loaded_shapes, *self._sized)]

    def close(self) -> None:
        with self._lock:
            for executor in [self._executor, *self._sized.values()]:
                executor.close()
            self._sized.clear()
            self._constants.close()
