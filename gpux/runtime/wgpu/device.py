"""The one place that owns wgpu: adapter choice, the device, compiled pipelines, buffers.

:func:`open_device` picks an adapter and requests a device with the adapter's own limits (the
defaults cap a storage binding at 128 MiB, too small for a batch of activations) and with
``shader-f16`` where the adapter has it. The returned :class:`Gpu` compiles each distinct WGSL
source once, makes buffers, and moves numpy arrays to and from the device in the device
dtypes of ``kernel.py``.

:func:`run_lowering` runs one node's :class:`~gpux.runtime.wgpu.kernel.Lowering` (one compute
pass, one submit) on numpy arrays, :func:`encode_lowering` on device buffers without waiting:
the kernel tests use them, and they are the executor's reference for binding buffers to
dispatches. :func:`bound_inputs` tells which inputs a lowering reads on the device (the others
are parameters its kernel read at load, and need no upload).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpux.errors import BackendError, InputError
from gpux.runtime.wgpu.kernel import Binding, Dispatch, Lowering, TensorInfo, wgsl_type

# Features GPUX uses when the adapter has them: f16 kernels, and per-kernel timings.
OPTIONAL_FEATURES = ("shader-f16", "timestamp-query")

# Limits raised to what the adapter allows: big activations and weights, and kernels that bind
# many tensors at once.
RAISED_LIMITS = (
    "max-storage-buffer-binding-size",
    "max-buffer-size",
    "max-storage-buffers-per-shader-stage",
    "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup",
    "max-compute-workgroup-size-x",
    "max-compute-workgroup-size-y",
)

# Adapter types best first; a software adapter ("CPU": lavapipe, WARP, SwiftShader) is never
# chosen unless the caller allows it: it runs the shaders on the CPU, which ONNX Runtime's CPU
# provider serves better.
TYPE_RANK = {"DiscreteGPU": 0, "IntegratedGPU": 1, "VirtualGPU": 2, "Unknown": 3, "CPU": 4}
# OpenGL compute in wgpu lacks features and storage buffers per stage; prefer native APIs.
BACKEND_RANK = {"Vulkan": 0, "Metal": 0, "D3D12": 0, "OpenGL": 2}

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _storage_usage() -> int:
    import wgpu

    return int(wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST)


def device_bytes(info: TensorInfo) -> int:
    """Bytes of ``info``'s buffer on the device: its device dtype, padded to 4 (never 0, since
    WebGPU refuses empty bindings)."""
    itemsize = 2 if wgsl_type(info.dtype) == "f16" else 4
    return max(4, -(-info.size * itemsize // 4) * 4)


def to_device_bytes(array: np.ndarray[Any, Any]) -> bytes:
    """``array`` as the device holds it: int64 narrowed to i32 (values outside i32 refused),
    bool widened to u32, padded to 4 bytes."""
    kind = wgsl_type(array.dtype)
    if array.dtype == np.int64:
        if array.size and (array.min() < _INT32_MIN or array.max() > _INT32_MAX):
            raise InputError(
                f"an int64 tensor of shape {list(array.shape)} holds values outside int32 "
                f"({int(array.min())}..{int(array.max())})",
                "the wgpu engine keeps integers as 32-bit; use the onnxruntime backend for "
                "this model",
            )
        array = array.astype(np.int32)
    elif kind == "u32" and array.dtype == np.bool_:
        array = array.astype(np.uint32)
    data = np.ascontiguousarray(array).tobytes()
    padding = (-len(data)) % 4 or (4 if not data else 0)
    return data + b"\0" * padding


def from_device_bytes(data: bytes | memoryview, info: TensorInfo) -> np.ndarray[Any, Any]:
    """The tensor ``info`` from its device bytes (the inverse of :func:`to_device_bytes`)."""
    kind = wgsl_type(info.dtype)
    stored = {"f32": np.float32, "f16": np.float16, "i32": np.int32, "u32": np.uint32}[kind]
    values = np.frombuffer(data, dtype=stored, count=info.size)
    return values.astype(info.dtype).reshape(info.shape)


@dataclass
class Gpu:
    """An open wgpu device and what GPUX keeps with it. ``features`` are the device's enabled
    features (what kernels see as ``NodeContext.features``)."""

    adapter: Any
    device: Any
    features: frozenset[str]
    limits: dict[str, int]
    adapter_summary: str
    is_software: bool
    # wgpu-native's threads and handles do not survive fork(): a forked child that uses them
    # hangs or crashes, so use checks that it is still the process that opened the device.
    opened_in: int = field(default_factory=os.getpid)
    _modules: dict[str, Any] = field(default_factory=dict)
    _pipelines: dict[tuple[str, str, tuple[str, ...]], Any] = field(default_factory=dict)
    _layouts: dict[tuple[str, str, tuple[str, ...]], Any] = field(default_factory=dict)

    @property
    def queue(self) -> Any:
        return self.device.queue

    def ensure_same_process(self) -> None:
        """Raise :class:`BackendError` in a process forked after this device was opened."""
        if os.getpid() != self.opened_in:
            raise BackendError(
                f"the wgpu engine was started in process {self.opened_in} and this process "
                f"({os.getpid()}) was forked from it: wgpu cannot run in a forked process",
                "start worker processes with the 'spawn' method "
                "(multiprocessing.get_context('spawn')), as gpux serve --workers does",
            )

    def shader_module(self, source: str) -> Any:
        """The compiled module of ``source``, compiled on first use."""
        module = self._modules.get(source)
        if module is None:
            try:
                module = self.device.create_shader_module(code=source)
            except Exception as exc:  # wgpu raises GPUValidationError with the WGSL diagnostics
                raise BackendError(f"a WGSL kernel did not compile: {exc}") from exc
            self._modules[source] = module
        return module

    def pipeline(self, dispatch: Dispatch) -> Any:
        """The compute pipeline of ``dispatch``'s shader and entry point, created once. Its
        layout is explicit (from the bindings' kinds), so a shader that leaves a binding unused
        still takes the bind group the executor builds for every binding."""
        kinds = tuple(binding.kind for binding in dispatch.bindings)
        key = (dispatch.shader, dispatch.entry_point, kinds)
        pipeline = self._pipelines.get(key)
        if pipeline is None:
            import wgpu

            buffer_type = {
                "input": wgpu.BufferBindingType.read_only_storage,
                "output": wgpu.BufferBindingType.storage,
                "scratch": wgpu.BufferBindingType.storage,
                "params": wgpu.BufferBindingType.uniform,
            }
            layout = self.device.create_bind_group_layout(
                entries=[
                    {
                        "binding": i,
                        "visibility": wgpu.ShaderStage.COMPUTE,
                        "buffer": {"type": buffer_type[kind]},
                    }
                    for i, kind in enumerate(kinds)
                ]
            )
            try:
                pipeline = self.device.create_compute_pipeline(
                    layout=self.device.create_pipeline_layout(bind_group_layouts=[layout]),
                    compute={
                        "module": self.shader_module(dispatch.shader),
                        "entry_point": dispatch.entry_point,
                    },
                )
            except BackendError:
                raise
            except Exception as exc:
                raise BackendError(f"a WGSL kernel did not make a pipeline: {exc}") from exc
            self._pipelines[key] = pipeline
            self._layouts[key] = layout
        return pipeline

    def bind_group(self, dispatch: Dispatch, buffers: Sequence[Any]) -> Any:
        """The bind group of ``dispatch`` with ``buffers[i]`` at binding ``i``."""
        self.pipeline(dispatch)
        kinds = tuple(binding.kind for binding in dispatch.bindings)
        return self.device.create_bind_group(
            layout=self._layouts[(dispatch.shader, dispatch.entry_point, kinds)],
            entries=[
                {"binding": i, "resource": {"buffer": buffer, "offset": 0, "size": buffer.size}}
                for i, buffer in enumerate(buffers)
            ],
        )

    def storage_buffer(self, size: int, label: str = "") -> Any:
        """A storage buffer of ``size`` bytes (rounded up to 4) that copies in and out."""
        return self.device.create_buffer(
            label=label, size=max(4, -(-size // 4) * 4), usage=_storage_usage()
        )

    def uniform_buffer(self, data: bytes, label: str = "") -> Any:
        """A uniform buffer holding ``data``, padded to 16 bytes (uniform struct alignment)."""
        import wgpu

        padded = data + b"\0" * ((-len(data)) % 16 or (16 if not data else 0))
        return self.device.create_buffer_with_data(
            label=label, data=padded, usage=wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST
        )

    def readback_buffer(self, size: int, label: str = "") -> Any:
        """A mappable buffer that outputs are copied into for reading on the host."""
        import wgpu

        return self.device.create_buffer(
            label=label,
            size=max(4, -(-size // 4) * 4),
            usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST,
        )

    def upload(self, array: np.ndarray[Any, Any], label: str = "") -> Any:
        """A new storage buffer holding ``array`` in its device dtype."""
        import wgpu

        return self.device.create_buffer_with_data(
            label=label,
            data=to_device_bytes(array),
            usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST,
        )

    def write(self, buffer: Any, array: np.ndarray[Any, Any]) -> None:
        """Overwrite ``buffer`` (made for this tensor's size) with ``array``."""
        self.queue.write_buffer(buffer, 0, to_device_bytes(array))

    def download(self, buffer: Any, info: TensorInfo) -> np.ndarray[Any, Any]:
        """The tensor ``info`` read back from ``buffer`` (waits for the queue)."""
        return from_device_bytes(self.queue.read_buffer(buffer, 0, device_bytes(info)), info)


def adapter_rank(adapter_type: str, backend: str) -> tuple[int, int]:
    """The sort key of an adapter (lower is better): its type, then its graphics API. The one
    policy for ``open_device`` and ``gpux doctor`` (report.py)."""
    return (TYPE_RANK.get(adapter_type, 3), BACKEND_RANK.get(backend, 1))


def _rank(adapter: Any) -> tuple[int, int]:
    info = adapter.info
    return adapter_rank(str(info.get("adapter_type", "")), str(info.get("backend_type", "")))


def _summary(adapter: Any) -> str:
    info = adapter.info
    return f"{info.get('device', '?')} ({info.get('backend_type', '?')}, {info.get('adapter_type', '?')})"


def ranked_adapters(
    adapters: Sequence[Any], allow_software: bool = False, name_contains: str | None = None
) -> list[Any]:
    """The adapters the engine may open, best first (``adapter_rank``; ties keep wgpu's
    order): the numbering ``runtime.device`` counts in."""
    usable = [
        adapter
        for adapter in adapters
        if (allow_software or adapter.info.get("adapter_type") != "CPU")
        and (
            name_contains is None
            or name_contains.lower() in str(adapter.info.get("device", "")).lower()
        )
    ]
    return sorted(usable, key=_rank)  # stable: equal ranks stay in enumeration order


def open_device(
    allow_software: bool = False, name_contains: str | None = None, index: int = 0
) -> Gpu:
    """Open adapter ``index`` of :func:`ranked_adapters`; 0, the default, is the best one: a
    discrete GPU before an integrated one, Vulkan, Metal or D3D12 before OpenGL. Software
    adapters (lavapipe) count only when ``allow_software`` is set (tests); ``name_contains``
    keeps adapters whose device name contains it. Raises :class:`BackendError` when wgpu is
    missing, no adapter fits, or ``index`` is past the last one (naming those there are)."""
    try:
        import wgpu
    except ImportError as exc:
        raise BackendError(
            "wgpu is not installed", "pip install 'gpux[webgpu]' for the wgpu engine"
        ) from exc
    try:
        adapters = list(wgpu.gpu.enumerate_adapters_sync())
    except Exception as exc:  # no wgpu-native for this platform, no Vulkan loader ...
        raise BackendError(f"wgpu could not enumerate adapters: {exc}") from exc
    seen = [_summary(adapter) for adapter in adapters]
    usable = ranked_adapters(adapters, allow_software, name_contains)
    if not usable:
        raise BackendError(
            "no usable wgpu adapter" + (f" (wgpu sees: {', '.join(seen)})" if seen else ""),
            "the wgpu engine needs a GPU with Vulkan, Metal or D3D12; "
            "software adapters are used only by tests",
        )
    if not 0 <= index < len(usable):
        listed = "; ".join(f"{i}: {_summary(adapter)}" for i, adapter in enumerate(usable))
        raise BackendError(
            f"runtime.device {index}: wgpu has no adapter {index} (it has {listed})",
            f"set runtime.device to 0..{len(usable) - 1} (0 is the best)",
        )
    adapter = usable[index]
    features = [name for name in OPTIONAL_FEATURES if name in adapter.features]
    limits = {name: int(adapter.limits[name]) for name in RAISED_LIMITS if name in adapter.limits}
    try:
        device = adapter.request_device_sync(
            label="gpux-wgpu", required_features=features, required_limits=limits
        )
    except Exception as exc:
        raise BackendError(f"wgpu could not open {_summary(adapter)}: {exc}") from exc
    return Gpu(
        adapter=adapter,
        device=device,
        features=frozenset(str(name) for name in device.features),
        limits={str(k): int(v) for k, v in device.limits.items() if isinstance(v, int)},
        adapter_summary=_summary(adapter),
        is_software=adapter.info.get("adapter_type") == "CPU",
    )


def _binding_buffer(
    binding: Binding,
    dispatch: Dispatch,
    inputs: Sequence[Any],
    outputs: Sequence[Any],
    scratch: Sequence[Any],
    gpu: Gpu,
) -> Any:
    if binding.kind == "input":
        buffer = inputs[binding.index]
        if buffer is None:
            raise BackendError(f"a kernel bound omitted input {binding.index}")
        return buffer
    if binding.kind == "output":
        return outputs[binding.index]
    if binding.kind == "scratch":
        return scratch[binding.index]
    return gpu.uniform_buffer(dispatch.params)


def run_lowering(
    gpu: Gpu,
    lowering: Lowering,
    inputs: Sequence[np.ndarray[Any, Any] | None],
    outputs_info: Sequence[TensorInfo],
) -> list[np.ndarray[Any, Any]]:
    """Run one node's ``lowering`` on ``inputs`` and return its outputs: every dispatch in one
    compute pass, one submit. An aliasing lowering returns its input as output 0's shape (after
    the same trip through the device that an executor's buffer makes). Only inputs that a
    dispatch binds go to the device: a Slice's int64 bounds (often beyond int32) are read by
    its kernel at load and never uploaded."""
    bound = bound_inputs(lowering)
    input_buffers = [
        None if array is None or index not in bound else gpu.upload(array)
        for index, array in enumerate(inputs)
    ]
    output_buffers = encode_lowering(gpu, lowering, input_buffers, outputs_info)
    return [
        gpu.download(buffer, info)
        for buffer, info in zip(output_buffers, outputs_info, strict=True)
    ]


def bound_inputs(lowering: Lowering) -> set[int]:
    """The node inputs that ``lowering`` reads on the device (bound or aliased); the others
    are parameters its kernel read at load and need no buffer."""
    bound = {
        binding.index
        for dispatch in lowering.dispatches
        for binding in dispatch.bindings
        if binding.kind == "input"
    }
    if lowering.alias_input is not None:
        bound.add(lowering.alias_input)
    return bound


def encode_lowering(
    gpu: Gpu,
    lowering: Lowering,
    input_buffers: Sequence[Any],
    outputs_info: Sequence[TensorInfo],
) -> list[Any]:
    """Submit one node's ``lowering`` on device buffers (None for an omitted input) and return
    its output buffers without waiting: later submits see its results (the queue is ordered),
    and nothing moves to the host unless read. An aliasing lowering returns the input's
    buffer."""
    gpu.ensure_same_process()
    if lowering.alias_input is not None:
        source = input_buffers[lowering.alias_input]
        if source is None:
            raise BackendError(f"a kernel aliased omitted input {lowering.alias_input}")
        return [source]
    output_buffers = [gpu.storage_buffer(device_bytes(info)) for info in outputs_info]
    scratch_buffers = [gpu.storage_buffer(size) for size in lowering.scratch]
    if not lowering.dispatches:
        return output_buffers
    encoder = gpu.device.create_command_encoder()
    compute_pass = encoder.begin_compute_pass()
    for dispatch in lowering.dispatches:
        buffers = [
            _binding_buffer(b, dispatch, input_buffers, output_buffers, scratch_buffers, gpu)
            for b in dispatch.bindings
        ]
        compute_pass.set_pipeline(gpu.pipeline(dispatch))
        compute_pass.set_bind_group(0, gpu.bind_group(dispatch, buffers))
        compute_pass.dispatch_workgroups(*dispatch.workgroups)
    compute_pass.end()
    gpu.queue.submit([encoder.finish()])
    return output_buffers


def pack_params(*values: int | float, formats: str | None = None) -> bytes:
    """Uniform bytes for a struct of 32-bit fields: ints as ``u32``/``i32`` (negative ints as
    i32) and floats as ``f32``, in order; ``formats`` (struct codes) overrides the guess."""
    if formats is None:
        formats = "".join("f" if isinstance(v, float) else ("i" if v < 0 else "I") for v in values)
    return struct.pack("<" + formats, *values)
