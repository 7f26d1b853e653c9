"""The executor: one model, at one set of input sizes, laid out on one wgpu device.

Everything is made at load: the memory plan's buffers (constants uploaded once), one pipeline
per distinct shader (``device.Gpu`` caches them), one bind group per dispatch, every dispatch's
parameters in one uniform buffer, and one readback buffer per GPU segment. A call writes the
inputs (``queue.write_buffer``), encodes every dispatch of a GPU segment into one compute pass,
copies what the host needs into the segment's readback buffer, submits once and maps once.
A CPU segment (ops no kernel takes) splits the GPU work into one submit per GPU segment.

Executors of one model at different sizes (batch buckets) hold the same weights: with
:class:`SharedConstants` they share one device copy of each (a constant is never written after
load), where each would otherwise upload its own (89.5 MB per executor on MiniLM int8).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gpux.errors import BackendError
from gpux.runtime.wgpu import fusion, tuning
from gpux.runtime.wgpu import plan as memory
from gpux.runtime.wgpu.device import Gpu, device_bytes, from_device_bytes, to_device_bytes
from gpux.runtime.wgpu.fallback import CpuSegment
from gpux.runtime.wgpu.graph import Graph
from gpux.runtime.wgpu.kernel import Binding, Lowering, TensorInfo
from gpux.runtime.wgpu.partition import LoweredNode, Partition

# Offsets into the shared uniform buffer: WebGPU's largest allowed
# minUniformBufferOffsetAlignment, so any adapter takes them.
UNIFORM_ALIGNMENT = 256
COPY_ALIGNMENT = 4


@dataclass
class _Readback:
    name: str
    source: Any  # storage buffer
    offset: int  # in the segment's readback buffer
    nbytes: int
    info: TensorInfo


@dataclass
class _GpuStep:
    uploads: list[str]  # values made on the host (caller or CPU segment) written before submit
    encoded: list[tuple[Any, Any, tuple[int, int, int]]]  # (pipeline, bind group, workgroups)
    # (name, op, dispatches, the graph nodes it computes when fused)
    nodes: list[tuple[str, str, int, tuple[str, ...]]] = field(default_factory=list)
    readbacks: list[_Readback] = field(default_factory=list)
    readback_buffer: Any = None
    # The next call's commands, encoded while the GPU runs this call's (every call encodes the
    # same dispatches on the same buffers; WebGPU command buffers are single-use).
    ready: Any = None


class SharedConstants:
    """Device buffers of constants, shared by the executors of one model and owned here: an
    executor never destroys one, :meth:`close` does. Found by content, since each executor's
    graph is prepared afresh (a constant folded at one size may differ at another)."""

    def __init__(self, gpu: Gpu) -> None:
        self.gpu = gpu
        self._buffers: dict[tuple[bytes, int], Any] = {}

    def buffer(self, data: bytes, size: int) -> Any:
        """The buffer of ``size`` bytes holding ``data``, made and written on first request."""
        key = (hashlib.blake2b(data, digest_size=16).digest(), size)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self.gpu.storage_buffer(size, label="gpux-constant")
            self.gpu.queue.write_buffer(buffer, 0, data)
            self._buffers[key] = buffer
        return buffer

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self._buffers)

    def close(self) -> None:
        for buffer in self._buffers.values():
            buffer.destroy()
        self._buffers.clear()


def _bound_inputs(lowered: LoweredNode) -> list[str]:
    node, lowering = lowered.node, lowered.lowering
    indices = {b.index for d in lowering.dispatches for b in d.bindings if b.kind == "input"}
    if lowering.alias_input is not None:
        indices.add(lowering.alias_input)
    return [node.inputs[i] for i in sorted(indices)]


class Executor:
    """A prepared graph on ``gpu``: ``run(feed)`` -> every graph output, as numpy arrays."""

    def __init__(
        self,
        gpu: Gpu,
        graph: Graph,
        partition: Partition,
        threads: int | None = None,
        constants: SharedConstants | None = None,
        fuse: bool = True,
    ) -> None:
        started = time.perf_counter()
        self.gpu = gpu
        self.graph = graph
        # The same nodes per segment (the placement proof); fewer kernels where fused.
        self.partition = fusion.fuse(graph, partition) if fuse else partition
        self._threads = threads
        self._device_values = self._device_value_names()
        tuner = tuning.Tuner(gpu)
        candidates = self._candidates(tuner)
        # With candidates to time, the plan holds the scratch of the widest; once each node's
        # is chosen, the buffers are planned again for what the chosen ones need.
        steps, self._program_shape = self._plan_steps(candidates)
        self._allocate(steps, constants)
        if candidates:
            self._tune(tuner, candidates)
            tuner.save()
            exact, _ = self._plan_steps({})
            if exact != steps:
                self._release_own_buffers()
                self._allocate(exact, constants)
        self.tuning = tuner.report
        if constants is None:
            for name in sorted(set(graph.constants) & self._device_values):
                data = to_device_bytes(graph.constants[name])
                gpu.queue.write_buffer(self._buffer(name), 0, data)
        self._uniforms = self._make_uniforms()
        self._program: list[_GpuStep | CpuSegment] = self._build_program()
        self._host_inputs = [n for n in graph.inputs if n in self._device_values]
        self.load_seconds = time.perf_counter() - started
        self.last_encode_seconds = 0.0

    # -- planning ---------------------------------------------------------------------------

    def _device_value_names(self) -> set[str]:
        """Values that need a device buffer: every value a GPU node binds or writes."""
        names: set[str] = set()
        for segment in self.partition.segments:
            for lowered in segment.lowered:
                names.update(_bound_inputs(lowered))
                names.update(n for n in lowered.node.outputs if n)
        return names

    def _plan_steps(
        self, candidates: Mapping[tuple[int, int], tuple[Lowering, ...]]
    ) -> tuple[list[memory.Step], list[tuple[bool, int]]]:
        """The memory plan's steps (one per GPU node, one per CPU segment) and the program's
        shape: (on_gpu, number of steps) per segment. A node with ``candidates`` (by segment
        and position) gets scratch that fits each of them."""
        steps: list[memory.Step] = []
        shape: list[tuple[bool, int]] = []
        for segment_index, segment in enumerate(self.partition.segments):
            if segment.on_gpu:
                for position, lowered in enumerate(segment.lowered):
                    lowering = lowered.lowering
                    offered = candidates.get((segment_index, position))
                    scratch = (
                        lowering.scratch if offered is None else tuning.widest_scratch(offered)
                    )
                    outputs = tuple(n for n in lowered.node.outputs if n)
                    alias = None
                    if lowering.alias_input is not None:
                        alias = (outputs[0], lowered.node.inputs[lowering.alias_input])
                    steps.append(
                        memory.Step(
                            reads=tuple(_bound_inputs(lowered)),
                            writes=outputs,
                            scratch=scratch,
                            alias=alias,
                        )
                    )
                shape.append((True, len(segment.lowered)))
            else:
                # The host reads what the segment needs before it runs and writes what it makes
                # before the next GPU segment: one step for the whole segment.
                reads = {n for node in segment.nodes for n in node.reads}
                made = {n for node in segment.nodes for n in node.outputs if n}
                steps.append(
                    memory.Step(
                        reads=tuple(sorted(reads & self._device_values - made)),
                        writes=tuple(sorted(made & self._device_values)),
                    )
                )
                shape.append((False, 1))
        return steps, shape

    def _allocate(self, steps: list[memory.Step], constants: SharedConstants | None) -> None:
        """The memory plan of ``steps`` and its buffers; constants shared through
        ``constants`` come written, the executor's own are written by the caller."""
        graph = self.graph
        pinned = (
            set(graph.inputs) | set(graph.outputs) | (set(graph.constants) & self._device_values)
        )
        sizes = {name: device_bytes(graph.tensors[name]) for name in self._device_values}
        self.memory = memory.plan_memory(steps, sizes, pinned)
        shared: dict[int, Any] = {}
        if constants is not None:
            for name in sorted(set(graph.constants) & self._device_values):
                index = self.memory.location[name]
                data = to_device_bytes(graph.constants[name])
                shared[index] = constants.buffer(data, self.memory.buffer_sizes[index])
        self._own_buffers = [i for i in range(len(self.memory.buffer_sizes)) if i not in shared]
        self.buffers = [
            shared[index]
            if index in shared
            else self.gpu.storage_buffer(size, label=f"gpux-{index}")
            for index, size in enumerate(self.memory.buffer_sizes)
        ]

    def _release_own_buffers(self) -> None:
        for index in self._own_buffers:  # shared constants belong to their SharedConstants
            self.buffers[index].destroy()
        self.buffers = []

    # -- tuning (tuning.py) -----------------------------------------------------------------

    def _candidates(self, tuner: tuning.Tuner) -> dict[tuple[int, int], tuple[Lowering, ...]]:
        """The candidates of every GPU node that offers a choice, by segment and position;
        none unless ``tuner`` tunes."""
        offered: dict[tuple[int, int], tuple[Lowering, ...]] = {}
        for segment_index, segment in enumerate(self.partition.segments):
            for position, lowered in enumerate(segment.lowered):
                candidates = tuner.candidates(lowered.lowering)
                if len(candidates) > 1:
                    offered[(segment_index, position)] = candidates
        return offered

    def _tune(
        self, tuner: tuning.Tuner, candidates: Mapping[tuple[int, int], tuple[Lowering, ...]]
    ) -> None:
        """Every node with ``candidates`` lowered as ``tuner`` chooses, timed on this
        executor's buffers (planned for the widest scratch)."""
        segments = []
        step = 0
        for segment_index, segment in enumerate(self.partition.segments):
            if not segment.on_gpu:
                segments.append(segment)
                step += 1
                continue
            chosen = []
            for position, lowered in enumerate(segment.lowered):
                offered = candidates.get((segment_index, position))
                if offered is not None:
                    resource = functools.partial(self._tuning_resource, lowered, step)
                    lowered = replace(lowered, lowering=tuner.choose(offered, resource))
                chosen.append(lowered)
                step += 1
            segments.append(replace(segment, lowered=chosen))
        self.partition = replace(self.partition, segments=segments)

    def _tuning_resource(
        self, lowered: LoweredNode, step: int, candidate: Lowering, binding: Binding
    ) -> dict[str, Any]:
        """``binding`` of ``candidate``, one of ``lowered``'s (at ``step``) candidates."""
        if binding.kind == "scratch":
            return {
                "buffer": self.buffers[self.memory.scratch[(step, binding.index)]],
                "offset": 0,
                "size": memory.padded(candidate.scratch[binding.index]),
            }
        return self._resource(lowered, 0, binding, step)

    def _buffer(self, name: str) -> Any:
        return self.buffers[self.memory.location[name]]

    def _make_uniforms(self) -> Any:
        """Every dispatch's parameters in one uniform buffer, at 256-byte offsets."""
        blob = bytearray()
        self._uniform_offsets: dict[tuple[int, int], tuple[int, int]] = {}
        for segment in self.partition.segments:
            for lowered in segment.lowered:
                for dispatch_index, dispatch in enumerate(lowered.lowering.dispatches):
                    if not any(b.kind == "params" for b in dispatch.bindings):
                        continue
                    offset = len(blob)
                    size = max(16, -(-len(dispatch.params) // 16) * 16)
                    blob += dispatch.params + b"\0" * (size - len(dispatch.params))
                    blob += b"\0" * ((-len(blob)) % UNIFORM_ALIGNMENT)
                    key = (id(lowered), dispatch_index)
                    self._uniform_offsets[key] = (offset, size)
        if not blob:
            return None
        return self.gpu.uniform_buffer(bytes(blob), label="gpux-params")

    def _resource(
        self, lowered: LoweredNode, dispatch_index: int, binding: Binding, step: int
    ) -> dict[str, Any]:
        node = lowered.node
        if binding.kind == "params":
            offset, size = self._uniform_offsets[(id(lowered), dispatch_index)]
            return {"buffer": self._uniforms, "offset": offset, "size": size}
        if binding.kind == "scratch":
            size = memory.padded(lowered.lowering.scratch[binding.index])
            return {
                "buffer": self.buffers[self.memory.scratch[(step, binding.index)]],
                "offset": 0,
                "size": size,
            }
        name = (node.inputs if binding.kind == "input" else node.outputs)[binding.index]
        return {
            "buffer": self._buffer(name),
            "offset": 0,
            "size": device_bytes(self.graph.tensors[name]),
        }

    def _build_program(self) -> list[_GpuStep | CpuSegment]:
        graph = self.graph
        readers = graph.consumers()
        segment_of_node: dict[int, int] = {}
        position = 0
        for segment_index, segment in enumerate(self.partition.segments):
            for _ in segment.nodes:
                segment_of_node[position] = segment_index
                position += 1
        host_made: set[str] = set(graph.inputs)
        program: list[_GpuStep | CpuSegment] = []
        step = 0
        for segment_index, segment in enumerate(self.partition.segments):
            later_readers = {
                name
                for name, nodes in readers.items()
                if any(segment_of_node[n] > segment_index for n in nodes)
            } | set(graph.outputs)
            if not segment.on_gpu:
                cpu = CpuSegment(graph, segment.nodes, later_readers, self._threads)
                host_made |= set(cpu.outputs)
                program.append(cpu)
                step += 1
                continue
            gpu_step = _GpuStep(uploads=[], encoded=[])
            reads = {n for lowered in segment.lowered for n in _bound_inputs(lowered)}
            gpu_step.uploads = sorted(
                (reads & host_made) - set(graph.inputs) - set(graph.constants)
            )
            for lowered in segment.lowered:
                for dispatch_index, dispatch in enumerate(lowered.lowering.dispatches):
                    pipeline = self.gpu.pipeline(dispatch)
                    entries = [
                        {
                            "binding": i,
                            "resource": self._resource(lowered, dispatch_index, binding, step),
                        }
                        for i, binding in enumerate(dispatch.bindings)
                    ]
                    bind_group = self.gpu.device.create_bind_group(
                        layout=pipeline.get_bind_group_layout(0), entries=entries
                    )
                    gpu_step.encoded.append((pipeline, bind_group, dispatch.workgroups))
                gpu_step.nodes.append(
                    (
                        lowered.node.name,
                        lowered.node.qualified_op,
                        len(lowered.lowering.dispatches),
                        tuple(node.name for node in lowered.fused),
                    )
                )
                step += 1
            made = {n for lowered in segment.lowered for n in lowered.node.outputs if n}
            # The host needs what a later CPU segment reads and the graph's outputs.
            cpu_reads = {
                n
                for later in self.partition.segments[segment_index + 1 :]
                if not later.on_gpu
                for node in later.nodes
                for n in node.reads
            }
            wanted = sorted(made & (cpu_reads | set(graph.outputs)))
            offset = 0
            for name in wanted:
                info = graph.tensors[name]
                nbytes = device_bytes(info)
                gpu_step.readbacks.append(_Readback(name, self._buffer(name), offset, nbytes, info))
                offset += -(-nbytes // COPY_ALIGNMENT) * COPY_ALIGNMENT
            if wanted:
                gpu_step.readback_buffer = self.gpu.readback_buffer(offset, label="gpux-readback")
            program.append(gpu_step)
        return program

    # -- running ----------------------------------------------------------------------------

    def run(self, feed: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        return self._run(feed, None)

    def profile(
        self, feed: Mapping[str, np.ndarray[Any, Any]]
    ) -> tuple[dict[str, np.ndarray[Any, Any]], list[dict[str, Any]]]:
        """One call with a timestamp query around every GPU node (each in a compute pass of
        its own, so slower than ``run``) and a wall clock around every CPU segment: the
        outputs, and ``{"node", "op", "on", "dispatches", "ms"}`` per node or segment in
        order; a fused kernel is one entry, ``op`` its ops joined (``Add+Mul+Erf``), ``node``
        and ``fused`` its nodes' names. Needs the adapter's ``timestamp-query`` feature."""
        if "timestamp-query" not in self.gpu.features:
            raise BackendError(
                f"{self.gpu.adapter_summary} has no timestamp queries",
                "per-kernel times need an adapter with the timestamp-query feature",
            )
        times: list[dict[str, Any]] = []
        return self._run(feed, times), times

    def _encode(self, item: _GpuStep, encoder: Any, timing: Any) -> None:
        """Every dispatch of ``item``: in one compute pass, or with ``timing`` (a query set),
        in one pass per node with its start and end timestamps."""
        if timing is None:
            compute_pass = encoder.begin_compute_pass()
            current = None
            for pipeline, bind_group, workgroups in item.encoded:
                if pipeline is not current:  # runs of one kernel (elementwise chains) share it
                    compute_pass.set_pipeline(pipeline)
                    current = pipeline
                compute_pass.set_bind_group(0, bind_group)
                compute_pass.dispatch_workgroups(*workgroups)
            compute_pass.end()
            return
        position = 0
        for index, (_, _, count, _) in enumerate(item.nodes):
            compute_pass = encoder.begin_compute_pass(
                timestamp_writes={
                    "query_set": timing,
                    "beginning_of_pass_write_index": 2 * index,
                    "end_of_pass_write_index": 2 * index + 1,
                }
            )
            for pipeline, bind_group, workgroups in item.encoded[position : position + count]:
                compute_pass.set_pipeline(pipeline)
                compute_pass.set_bind_group(0, bind_group)
                compute_pass.dispatch_workgroups(*workgroups)
            compute_pass.end()
            position += count

    def _upload(self, name: str, array: np.ndarray[Any, Any]) -> None:
        """``array`` into its buffer: as it is when the device holds its dtype unchanged (no
        copy: a ResNet-50 b32 input is 19 MB), else narrowed or widened first."""
        if (
            (
                array.dtype in (np.float32, np.int32)
                or (array.dtype == np.float16 and array.size % 2 == 0)
            )
            and array.flags.c_contiguous
            and array.size
        ):
            self.gpu.queue.write_buffer(self._buffer(name), 0, array)
        else:
            self.gpu.queue.write_buffer(self._buffer(name), 0, to_device_bytes(array))

    def _run(
        self, feed: Mapping[str, np.ndarray[Any, Any]], times: list[dict[str, Any]] | None
    ) -> dict[str, np.ndarray[Any, Any]]:
        import wgpu

        self.gpu.ensure_same_process()
        graph, queue, device = self.graph, self.gpu.queue, self.gpu.device
        values: dict[str, np.ndarray[Any, Any]] = dict(feed)
        for name in self._host_inputs:
            self._upload(name, values[name])
        encode_seconds = 0.0
        for item in self._program:
            if isinstance(item, CpuSegment):
                started = time.perf_counter()
                values.update(item.run(values))
                if times is not None:
                    elapsed = (time.perf_counter() - started) * 1e3
                    times.append(
                        {
                            "node": ", ".join(item.ops),
                            "op": "cpu segment",
                            "on": "cpu",
                            "ms": elapsed,
                        }
                    )
                continue
            for name in item.uploads:
                self._upload(name, values[name])
            if times is None:
                # The queue runs write_buffer before any later submit, so commands encoded
                # before this call's uploads read this call's inputs. Encoding (0.8 ms for
                # ResNet-50, 2.2 ms for BERT-base's ~480 dispatches on an H100's host,
                # docs/benchmarks.md) then overlaps the GPU's work instead of preceding it.
                commands = item.ready if item.ready is not None else self._commands(item)
                item.ready = None
                queue.submit([commands])
                started = time.perf_counter()
                item.ready = self._commands(item)
                encode_seconds += time.perf_counter() - started
                self._read_back(item, values)
                continue
            started = time.perf_counter()
            encoder = device.create_command_encoder()
            timing: Any = None
            if item.nodes:
                timing = device.create_query_set(
                    type=wgpu.QueryType.timestamp, count=2 * len(item.nodes)
                )
            self._encode(item, encoder, timing)
            for readback in item.readbacks:
                encoder.copy_buffer_to_buffer(
                    readback.source, 0, item.readback_buffer, readback.offset, readback.nbytes
                )
            stamps: Any = None
            resolved: Any = None
            if timing is not None:
                resolved = device.create_buffer(
                    size=16 * len(item.nodes),
                    usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC,
                )
                encoder.resolve_query_set(timing, 0, 2 * len(item.nodes), resolved, 0)
                stamps = self.gpu.readback_buffer(resolved.size)
                encoder.copy_buffer_to_buffer(resolved, 0, stamps, 0, resolved.size)
            commands = encoder.finish()
            encode_seconds += time.perf_counter() - started
            queue.submit([commands])
            if stamps is not None and times is not None:
                stamps.map_sync(wgpu.MapMode.READ)
                ticks = np.frombuffer(stamps.read_mapped(), dtype=np.uint64).astype(np.int64)
                stamps.unmap()
                for spent in (stamps, resolved, timing):
                    spent.destroy()
                # WebGPU timestamps count nanoseconds.
                for index, (name, op, count, fused) in enumerate(item.nodes):
                    elapsed = float(ticks[2 * index + 1] - ticks[2 * index]) / 1e6
                    entry = {"node": name, "op": op, "on": "wgpu", "dispatches": count}
                    if fused:
                        entry["fused"] = list(fused)
                    times.append({**entry, "ms": elapsed})
            self._read_back(item, values)
        if times is None:
            self.last_encode_seconds = encode_seconds
        try:
            return {name: _host_value(name, values, graph) for name in graph.outputs}
        except KeyError as exc:
            raise BackendError(
                f"the wgpu engine lost output {exc}", "report this model to GPUX"
            ) from exc

    def _commands(self, item: _GpuStep) -> Any:
        """``item``'s dispatches and its copies to the readback buffer, as one command buffer."""
        encoder = self.gpu.device.create_command_encoder()
        self._encode(item, encoder, None)
        for readback in item.readbacks:
            encoder.copy_buffer_to_buffer(
                readback.source, 0, item.readback_buffer, readback.offset, readback.nbytes
            )
        return encoder.finish()

    @staticmethod
    def _read_back(item: _GpuStep, values: dict[str, np.ndarray[Any, Any]]) -> None:
        """Wait for ``item``'s submit and take the values the host needs from it."""
        import wgpu

        if item.readback_buffer is None:
            return
        item.readback_buffer.map_sync(wgpu.MapMode.READ)
        try:
            data = item.readback_buffer.read_mapped(copy=False)
            for readback in item.readbacks:
                chunk = data[readback.offset : readback.offset + readback.nbytes]
                values[readback.name] = from_device_bytes(chunk, readback.info)
        finally:
            item.readback_buffer.unmap()

    def close(self) -> None:
        self._release_own_buffers()
        for item in self._program:
            if isinstance(item, _GpuStep):
                item.ready = None  # commands on buffers about to go
                if item.readback_buffer is not None:
                    item.readback_buffer.destroy()
        if self._uniforms is not None:
            self._uniforms.destroy()
        self._program = []


def _host_value(
    name: str, values: Mapping[str, np.ndarray[Any, Any]], graph: Graph
) -> np.ndarray[Any, Any]:
    if name in values:
        return values[name]
    return np.asarray(graph.constants[name])  # an output the optimizer folded to a constant
