"""The ONNX Runtime backend: one InferenceSession on the best execution provider that works.

After the session is created, GPUX checks what ONNX Runtime really did: the providers it kept
and, where ONNX Runtime can report it (>= 1.32), which nodes each provider received. An explicit
backend that ends up running nothing is an error, never a silent CPU run.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gpux.config.schema import Runtime
from gpux.errors import BackendError, GPUXError, InputError
from gpux.runtime import providers as provider_table
from gpux.runtime.backend import Backend, Placement, describe_elsewhere
from gpux.runtime.cuda_copy import CudaCopies

_LEVELS = {"disable": 0, "basic": 1, "extended": 2, "all": 99}
# Operators that carry the arithmetic: their share is a cheap stand-in for the FLOPs share.
COMPUTE_OPS = {
    "Conv",
    "ConvTranspose",
    "MatMul",
    "Gemm",
    "MatMulInteger",
    "QLinearConv",
    "QLinearMatMul",
    "Attention",
    "MultiHeadAttention",
    "GroupQueryAttention",
    "FusedConv",
    "FusedMatMul",
    "MatMulNBits",
    "QAttention",
    "DynamicQuantizeMatMul",
    "LSTM",
    "GRU",
    "RNN",
    "Einsum",
}
RECORD_ASSIGNMENT = "session.record_ep_graph_assignment_info"


def ort_log_level() -> int:
    """ONNX Runtime writes straight to stderr; GPUX reports what matters itself (unless --debug)."""
    from gpux import env

    return 2 if env.debug() else 4


def session_options(runtime: Runtime, backend: str = "cpu") -> Any:
    import onnxruntime as ort

    ort.set_default_logger_severity(ort_log_level())
    options = ort.SessionOptions()
    options.log_severity_level = ort_log_level()
    options.graph_optimization_level = ort.GraphOptimizationLevel(
        _LEVELS[str(runtime.graph_optimization.value)]
    )
    if runtime.threads:
        options.intra_op_num_threads = runtime.threads
    options.add_session_config_entry(RECORD_ASSIGNMENT, "1")
    return options


def provider_options(backend: str, runtime: Runtime, cache_dir: Path | None) -> dict[str, str]:
    """The GPUXfile's per-backend settings in ONNX Runtime's vocabulary."""
    device = str(runtime.device)
    if backend == "cuda":
        return {
            "device_id": device,
            "cudnn_conv_algo_search": str(runtime.cuda.conv_algo_search.value).upper(),
            # Turned on only after the model qualifies (see _with_cuda_graph).
            "enable_cuda_graph": "0",
        }
    if backend == "tensorrt":
        options = {"device_id": device, "trt_fp16_enable": str(runtime.tensorrt.fp16)}
        if runtime.tensorrt.engine_cache and cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            options.update(
                trt_engine_cache_enable="True",
                trt_engine_cache_path=str(cache_dir),
                trt_timing_cache_enable="True",
                trt_timing_cache_path=str(cache_dir),
            )
        return options
    if backend == "webgpu":
        return {"preferredLayout": str(runtime.webgpu.preferred_layout.value)}
    if backend == "openvino":
        return {"device_type": runtime.openvino.device_type}
    if backend in ("rocm", "directml"):
        return {"device_id": device}
    return {}


def _engine_key(device: int) -> str:
    """TensorRT engines are only valid for one GPU model and one TensorRT version."""
    from gpux.runtime.discovery import installed_versions
    from gpux.runtime.libraries import gpu_models

    found = installed_versions(
        "tensorrt", "tensorrt-cu13-libs", "tensorrt-cu12-libs", "tensorrt-libs"
    )
    version = next(iter(found.values()), "unknown")
    models = gpu_models()
    gpu = models[device] if device < len(models) else "unknown-gpu"
    return "".join(c if c.isalnum() or c in "-." else "-" for c in f"{gpu}-trt{version}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().removeprefix("[ONNXRuntimeError] : ")
    text = re.sub(r"^\d+ : [A-Z_]+ : ", "", text)  # ONNX Runtime's "1 : FAIL : " status prefix
    return text.splitlines()[0] if text else type(exc).__name__


# Failures of the machine rather than of the input, in ONNX Runtime's and CUDA's words.
_DEVICE_FAILURE = re.compile(
    r"failed to allocate|out of memory|illegal memory access|"
    r"(CUDA|CUBLAS|CUDNN|CUFFT|CURAND|NCCL) (failure|error)|TensorRT EP|EP Error",
    re.IGNORECASE,
)


def _caused_by_input(exc: BaseException, text: str) -> bool:
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    if _DEVICE_FAILURE.search(text):
        return False
    if isinstance(exc, ort_errors.InvalidArgument):
        return True
    node_failed = "Non-zero status code returned while running" in text
    return node_failed and isinstance(exc, ort_errors.Fail | ort_errors.RuntimeException)


def _runtime_text(exc: BaseException) -> str:
    """ONNX Runtime's whole message on one line, without its status prefix, source paths and
    the closing advice to fix "the inputs/outputs or the model"."""
    text = str(exc).strip().removeprefix("[ONNXRuntimeError] : ")
    text = re.sub(r"^\d+ : [A-Z_]+ : ", "", text)
    text = re.sub(r"/onnxruntime_src/\S+:\d+ ", "", text)
    text = text.replace("Please fix either the inputs/outputs or the model.", "")
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())[:2000]


def node_assignment(session: Any, provider: str) -> dict[str, Any]:
    """Share of the graph's nodes (and of its compute nodes) that ``provider`` received."""
    report = getattr(session, "get_provider_graph_assignment_info", None)
    if report is None:
        return {"known": False, "why": "this ONNX Runtime cannot report node placement"}
    try:
        subgraphs = report()
    except Exception as exc:
        return {"known": False, "why": _first_line(exc)}
    per_provider: collections.Counter[str] = collections.Counter()
    elsewhere: collections.Counter[str] = collections.Counter()
    compute_total = compute_here = 0
    for subgraph in subgraphs:
        for node in subgraph.get_nodes():
            per_provider[subgraph.ep_name] += 1
            is_compute = node.op_type in COMPUTE_OPS
            compute_total += is_compute
            if subgraph.ep_name == provider:
                compute_here += is_compute
            else:
                elsewhere[f"{node.op_type}@{subgraph.ep_name}"] += 1
    total = sum(per_provider.values())
    return {
        "known": True,
        "nodes": total,
        "nodes_on_backend": per_provider[provider],
        "share": round(per_provider[provider] / total, 4) if total else 0.0,
        "compute_nodes": compute_total,
        "compute_share": round(compute_here / compute_total, 4) if compute_total else None,
        "by_provider": dict(per_provider),
        "elsewhere": dict(elsewhere.most_common(10)),
    }


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    graph: _GraphRunner | None = None
    """Set when the model runs as a captured graph (CUDA graphs, or WebGPU graph capture):
    ``graph.buffers`` are its device-resident inputs and outputs (write inputs there, e.g.
    through DLPack, then ``graph.replay()``)."""

    def __init__(self, session: Any, placement: Placement) -> None:
        self._session = session
        self._placement = placement
        self._output_names = [o.name for o in session.get_outputs()]
        self._run: Any = session.run

    @classmethod
    def load(
        cls,
        model_path: Path,
        runtime: Runtime,
        cache_dir: Path | None = None,
        dimensions: Mapping[str, int] | None = None,
    ) -> OnnxRuntimeBackend:
        from gpux.runtime.selection import plan

        requested = str(runtime.backend.value)
        selection = plan(requested)
        if not selection.candidates:
            skip = selection.skipped[0]
            raise BackendError(f"backend '{requested}' is not available: {skip.reason}", skip.hint)
        failures: list[str] = []
        for candidate in selection.candidates:
            try:
                return cls._start(
                    model_path, runtime, candidate, selection, failures, cache_dir, dimensions or {}
                )
            except BackendError as exc:
                if requested != "auto":
                    raise
                failures.append(f"{candidate.backend}: {exc.message}")
        raise BackendError(
            "no execution backend could load the model: " + "; ".join(failures),
            "ONNX Runtime rejects the model itself: rebuild it with 'gpux build --force' and "
            "rerun with --debug to see ONNX Runtime's own messages"
            if [c.backend for c in selection.candidates] == ["cpu"]
            else "try --backend cpu; rerun with --debug to see ONNX Runtime's own messages",
        )

    @classmethod
    def _start(
        cls,
        model_path: Path,
        runtime: Runtime,
        candidate: Any,
        selection: Any,
        failures: list[str],
        cache_dir: Path | None,
        dimensions: Mapping[str, int],
    ) -> OnnxRuntimeBackend:
        import onnxruntime as ort

        backend, provider = candidate.backend, candidate.provider
        rewrites: dict[str, int] = {}
        source: str | bytes = os.fspath(model_path)  # what ONNX Runtime reads the model from
        if backend == "webgpu":
            from gpux.runtime.webgpu_rewrites import webgpu_model

            rewritten, rewrites = webgpu_model(model_path, cache_dir)
            source = rewritten if isinstance(rewritten, bytes) else os.fspath(rewritten)

        def make_options() -> Any:
            made = session_options(runtime, backend)
            for name, size in dimensions.items():
                made.add_free_dimension_override_by_name(name, size)
            return made

        options = make_options()
        if backend == "tensorrt" and cache_dir is not None:
            cache_dir = cache_dir / _engine_key(runtime.device)  # only TensorRT pays for the key
        settings = provider_options(backend, runtime, cache_dir)
        hint = provider_table.INSTALL_HINTS.get(backend, "use --backend auto")
        try:
            if candidate.devices:
                devices = candidate.devices[runtime.device : runtime.device + 1]
                if not devices:
                    raise BackendError(
                        f"backend '{backend}' has no device {runtime.device} "
                        f"({len(candidate.devices)} found)",
                        "set runtime.device to an existing index",
                    )
                options.add_provider_for_devices([d.handle for d in devices], settings)
                session = ort.InferenceSession(source, sess_options=options)
            else:
                chain: list[Any] = [(provider, settings)] if backend != "cpu" else []
                session = ort.InferenceSession(
                    source,
                    sess_options=options,
                    providers=[*chain, "CPUExecutionProvider"],
                )
        except BackendError:
            raise
        except Exception as exc:  # ONNX Runtime raises its own pybind exception types
            raise BackendError(
                f"backend '{backend}' failed to start: {_first_line(exc)}", hint
            ) from None
        active = list(session.get_providers())
        if provider not in active:
            # ONNX Runtime only warns when a provider cannot start, and runs on CPU instead.
            raise BackendError(
                f"backend '{backend}' was requested but ONNX Runtime could not start {provider} "
                f"(it kept {', '.join(active)})",
                hint,
            )
        assignment = node_assignment(session, provider)
        if assignment.get("known") and backend != "cpu" and assignment["nodes_on_backend"] == 0:
            raise BackendError(
                f"backend '{backend}' started but ONNX Runtime gave it none of the model's "
                f"{assignment['nodes']} nodes",
                "the model's operators or dtypes are not supported by this backend; "
                "use --backend auto",
            )
        details: dict[str, Any] = {
            "via": candidate.via,
            "device_index": runtime.device,
            "assignment": assignment,
            **({"rewrites": rewrites} if rewrites else {}),
        }
        graph_runner = None
        if backend == "webgpu" and runtime.webgpu.graph_capture and candidate.devices:
            session, graph_runner, details["graph_capture"] = _with_webgpu_graph(
                session,
                source,
                options_factory=make_options,
                devices=[d.handle for d in candidate.devices[runtime.device : runtime.device + 1]],
                settings=settings,
            )
        if backend == "cuda" and runtime.cuda.cuda_graphs:
            session, graph_runner, details["cuda_graphs"] = _with_cuda_graph(
                session,
                model_path,
                runtime,
                options_factory=make_options,
                settings=settings,
                assignment=assignment,
            )
        fallback = selection.explanation(backend) if selection.requested == "auto" else None
        if failures:
            fallback = "; ".join(filter(None, [fallback, *failures]))
        placement = Placement(
            backend=backend,
            providers=active,
            device=_device_name(backend, runtime.device, candidate.devices),
            requested=selection.requested,
            fallback_reason=fallback,
            details=details,
        )
        instance = cls(session, placement)
        if graph_runner is not None:
            instance._run = graph_runner.run
            instance.graph = graph_runner
        return instance

    def run(self, feed: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        try:
            results = self._run(self._output_names, feed)
        except Exception as exc:
            raise self._failed(exc) from exc
        return dict(zip(self._output_names, results, strict=True))

    def _failed(self, exc: BaseException) -> GPUXError:
        """A failed run: the input's fault (400 in the server, exit 6) or the backend's.

        The feed already matched the signature recorded at build, and the build ran the model
        on its example; so ONNX Runtime refusing the feed (INVALID_ARGUMENT) or a node failing
        on it (a detector given sides that are not a multiple of 32) comes from this input.
        Running out of memory or a device fault is the backend's, whatever the input.
        """
        text = _runtime_text(exc)
        if _caused_by_input(exc, text):
            return InputError(
                f"the model cannot run on this input: {text}",
                "the shapes fit the model's declared inputs, but the model refuses these sizes; "
                "check what it expects with 'gpux inspect'",
            )
        return BackendError(
            f"the model failed to run on {self._placement.backend}: {_first_line(exc)}",
            "check the input values against 'gpux inspect'; rerun with --debug for details",
        )

    def run_on_device(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        """Run through IOBinding and leave the outputs where the backend computed them.

        Inputs may be numpy arrays (copied in) or OrtValues already on the device (not copied);
        outputs are OrtValues in device memory on CUDA (``.numpy()`` copies one to the host,
        ``.to_dlpack()`` hands it to PyTorch or CuPy without a copy).
        """
        binding = self._session.io_binding()
        for name, value in feed.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        device = "cuda" if self._placement.backend in ("cuda", "tensorrt") else "cpu"
        index = int(self._placement.details.get("device_index", 0))
        for name in self._output_names:
            binding.bind_output(name, device, index if device == "cuda" else 0)
        try:
            self._session.run_with_iobinding(binding)
        except Exception as exc:
            raise self._failed(exc) from exc
        return dict(zip(self._output_names, binding.get_outputs(), strict=True))

    @property
    def placement(self) -> Placement:
        return self._placement

    @property
    def session(self) -> Any:
        """The underlying ``onnxruntime.InferenceSession`` (for benchmarks and advanced use)."""
        return self._session

    def close(self) -> None:
        self._session = None
        self._run = None


def _fixed_shapes(values: list[Any]) -> str | None:
    """None when every shape is fixed, else the first tensor whose shape is not."""
    for value in values:
        if not all(isinstance(dim, int) and dim > 0 for dim in value.shape):
            return f"{value.name} {value.shape}"
    return None


def _with_cuda_graph(
    session: Any,
    model_path: Path,
    runtime: Runtime,
    options_factory: Any,
    settings: dict[str, str],
    assignment: dict[str, Any],
) -> tuple[Any, _GraphRunner | None, dict[str, Any]]:
    """Recreate the session with CUDA graph capture when the model qualifies; say why if not."""
    import onnxruntime as ort

    if assignment.get("known") and assignment["share"] < 1.0:
        elsewhere = describe_elsewhere(assignment["elsewhere"])
        return (
            session,
            None,
            {
                "enabled": False,
                "why": f"{assignment['nodes'] - assignment['nodes_on_backend']} of "
                f"{assignment['nodes']} nodes are not on CUDA ({elsewhere}); a CUDA graph needs "
                "every node on the GPU",
            },
        )
    dynamic = _fixed_shapes(session.get_inputs()) or _fixed_shapes(session.get_outputs())
    if dynamic:
        return (
            session,
            None,
            {
                "enabled": False,
                "why": f"shapes must be fixed to replay a graph, and {dynamic} is not; declare "
                "fixed sizes in the GPUXfile's inputs[].shape",
            },
        )
    graph_session = ort.InferenceSession(
        str(model_path),
        sess_options=options_factory(),
        providers=[
            ("CUDAExecutionProvider", {**settings, "enable_cuda_graph": "1"}),
            "CPUExecutionProvider",
        ],
    )
    runner = _GraphRunner(graph_session, runtime.device)
    try:
        runner.capture()
    except Exception as exc:  # ONNX Runtime's own exception types
        why = f"the graph could not be captured: {_first_line(exc)}"
        return session, None, {"enabled": False, "why": why}
    note: dict[str, Any] = {"enabled": True}
    if not assignment.get("known"):
        note["why"] = "node placement cannot be checked on this ONNX Runtime; enabled on trust"
    return graph_session, runner, note


def _with_webgpu_graph(
    session: Any,
    model_source: str | bytes,
    options_factory: Any,
    devices: list[Any],
    settings: dict[str, str],
) -> tuple[Any, _GraphRunner | None, dict[str, Any]]:
    """Recreate a WebGPU session with graph capture when the model qualifies, after checking at
    load that its replays answer as the plain session does on new data; say why if not."""
    import onnxruntime as ort

    dynamic = _fixed_shapes(session.get_inputs()) or _fixed_shapes(session.get_outputs())
    if dynamic:
        return (
            session,
            None,
            {"enabled": False, "why": f"shapes must be fixed, and {dynamic} is not"},
        )
    names = [meta.name for meta in session.get_outputs()]
    feeds = [_sample_feed(session, seed) for seed in (0, 1)]
    try:
        options = options_factory()
        options.add_provider_for_devices(devices, {**settings, "enableGraphCapture": "1"})
        graph_session = ort.InferenceSession(model_source, sess_options=options)
        runner = _GraphRunner(graph_session, 0, kind="webgpu")
        for feed in (*feeds, *feeds):  # capture, then replays with other data in the same buffers
            got, want = runner.run(names, feed), session.run(names, feed)
            if not all(_close(g, w) for g, w in zip(got, want, strict=True)):
                return session, None, {"enabled": False, "why": "replays differed from plain runs"}
    except Exception as exc:  # ONNX Runtime refuses capture with its own exception types
        return session, None, {"enabled": False, "why": _first_line(exc)}
    return graph_session, runner, {"enabled": True}


def _sample_feed(session: Any, seed: int) -> dict[str, np.ndarray[Any, Any]]:
    from gpux.runtime.tensors import numpy_dtype_of_ort_type

    rng = np.random.default_rng(seed)
    feed = {}
    for meta in session.get_inputs():
        dtype = numpy_dtype_of_ort_type(meta.type)
        shape = list(meta.shape)
        if np.issubdtype(dtype, np.floating):
            feed[meta.name] = rng.standard_normal(shape).astype(dtype)
        else:  # ids, masks, flags: small values every such input accepts
            feed[meta.name] = rng.integers(0, 2, shape).astype(dtype)
    return feed


def _close(got: np.ndarray[Any, Any], want: np.ndarray[Any, Any]) -> bool:
    """Same values up to the GPU's summation order (the plain and captured sessions run the
    same kernels; 1e-3 of the output's scale leaves room for nothing else)."""
    if got.shape != want.shape:
        return False
    if not np.issubdtype(want.dtype, np.floating):
        return bool(np.array_equal(got, want))
    scale = float(np.nanmax(np.abs(want))) if want.size else 0.0
    return bool(np.allclose(got, want, rtol=0, atol=1e-3 * (scale or 1.0), equal_nan=True))


# Runs at load of a CUDA graph session: the usual one, the capture, one replay.
CAPTURE_RUNS = 3


class _CaptureGuard:
    """Lets graph replays run side by side, and a call that may capture a graph run alone.

    ONNX Runtime's CUDA EP keeps a session's captured graph per calling thread
    (``PerThreadContext::cuda_graph_``: "Cuda graph with multi threads will be supported in the
    future"): each of a server's model threads captures its own, on its own first calls of the
    session, in CUDA's global capture mode, where another thread's CUDA work (a copy, an
    allocation) makes the capture fail. An H100 engine with 6 model threads answered
    "CudaCall ... Error in execution", then died. A call that may capture takes this guard
    alone; every other graph call shares it. Calls of sessions without a graph (a served
    model's general session, for sizes outside its preferred ones, which the batcher pads
    batches up to) do not take it: a capture beside one of those can still fail, and its
    caller gets the error.

    Tried instead: every call of a session on one thread of its own, so that it captures once:
    on the H100 (ResNet-50, 8 front-ends, 4 model threads, c=32, one machine, one call) HTTP
    binary 1,718 req/s against 2,346 and gRPC 1,342 against 2,732 for the code before it, its
    calls slower on both sides of the hand-over (the batch's join 3.0 ms against 2.1, the run
    6.3 against 4.1)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._sharing = 0
        self._alone = False
        self._waiting = 0  # calls waiting to run alone go first: captures end early

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._alone and not self._waiting)
            self._sharing += 1
        try:
            yield
        finally:
            with self._changed:
                self._sharing -= 1
                self._changed.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        with self._changed:
            self._waiting += 1
            self._changed.wait_for(lambda: not self._alone and not self._sharing)
            self._waiting -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._changed:
                self._alone = False
                self._changed.notify_all()


# One per process: a capture fails on any thread's CUDA work, whichever session it is for.
_CAPTURES = _CaptureGuard()


class _GraphRunner:
    """Runs through IOBinding over fixed device buffers, as graph replay requires.

    Inputs are copied into the same device buffers every call; outputs are read back from
    fixed buffers. A thread's first calls capture the graph (ONNX Runtime keeps one per
    thread), run alone through ``_CAPTURES``; later calls replay it. Calls from several threads
    (a server's calls in flight) take turns: they share those buffers.
    """

    def __init__(self, session: Any, device: int, kind: str = "cuda") -> None:
        import onnxruntime as ort

        from gpux.runtime.tensors import numpy_dtype_of_ort_type

        def buffer(meta: Any) -> Any:
            dtype = numpy_dtype_of_ort_type(meta.type)
            if kind == "webgpu":
                # ONNX Runtime's Python API captures WebGPU work only over buffers the session
                # itself allocated (1.31: "Bind values created by this session").
                return session.create_ortvalue_from_shape_and_type(
                    list(meta.shape), dtype.type, "webgpu", 0
                )
            return ort.OrtValue.ortvalue_from_shape_and_type(
                list(meta.shape), dtype.type, kind, device
            )

        self._session = session
        self._host = kind == "cpu"
        self._lock = threading.Lock()
        self._calls = threading.local()  # this thread's calls: its first ones may capture
        self._binding = session.io_binding()
        self._inputs = {meta.name: buffer(meta) for meta in session.get_inputs()}
        self._outputs = {meta.name: buffer(meta) for meta in session.get_outputs()}
        # (shape, dtype) of every buffer: what a copy through CUDA must match exactly.
        self._layout = {
            meta.name: (tuple(meta.shape), numpy_dtype_of_ort_type(meta.type))
            for meta in [*session.get_inputs(), *session.get_outputs()]
        }
        self._copies = CudaCopies.load(device) if kind == "cuda" else None
        for name, value in self._inputs.items():
            self._binding.bind_ortvalue_input(name, value)
        for name, value in self._outputs.items():
            self._binding.bind_ortvalue_output(name, value)

    def run(
        self, output_names: list[str], feed: Mapping[str, np.ndarray[Any, Any]]
    ) -> list[np.ndarray[Any, Any]]:
        with self._guard(), self._lock:
            for name, array in feed.items():
                self._copy_in(name, array)
            self._session.run_with_iobinding(self._binding)
            outputs = [self._copy_out(name) for name in output_names]
            # A device buffer's numpy() is a copy; a host buffer's is a view of what the
            # next call overwrites.
            return [array.copy() for array in outputs] if self._host else outputs

    def _guard(self) -> contextlib.AbstractContextManager[None]:
        calls = getattr(self._calls, "count", 0)
        self._calls.count = calls + 1
        return _CAPTURES.alone() if calls < CAPTURE_RUNS else _CAPTURES.shared()

    def capture(self) -> None:
        """Run on zeros until the graph is captured and has replayed once: ONNX Runtime's CUDA
        EP runs a session's first call as usual and captures on the second. Here, as the
        model loads on one thread, not on a served call: a capture (CUDA's global mode) fails
        when another thread uses CUDA meanwhile, which the first calls of a batch size did
        under load (an H100 engine with 6 model threads: "CudaCall ... Error in execution"
        answers, then the engine died). Each model thread still captures its own graph on its
        first calls, alone (``_CaptureGuard``)."""
        zeros = {name: np.zeros(*self._layout[name]) for name in self._inputs}
        for _ in range(CAPTURE_RUNS):
            self.run(list(self._outputs), zeros)

    def _copy_in(self, name: str, array: np.ndarray[Any, Any]) -> None:
        value = self._inputs[name]
        copies = self._copies
        fits = (array.shape, array.dtype) == self._layout[name]
        if copies is not None and fits and copies.to_device(value.data_ptr(), array):
            return  # without the GIL (gpux/runtime/cuda_copy.py)
        value.update_inplace(np.ascontiguousarray(array))  # checks the size, raises

    def _copy_out(self, name: str) -> np.ndarray[Any, Any]:
        value = self._outputs[name]
        if self._copies is not None:
            shape, dtype = self._layout[name]
            copied = self._copies.to_host(value.data_ptr(), shape, dtype)
            if copied is not None:
                return copied
        found: np.ndarray[Any, Any] = value.numpy()
        return found

    @property
    def buffers(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The fixed device buffers (OrtValues) the graph reads and writes."""
        return self._inputs, self._outputs

    def replay(self) -> dict[str, Any]:
        """Run on the device buffers as they are: no host copies at all."""
        with self._guard(), self._lock:
            self._session.run_with_iobinding(self._binding)
        return self._outputs


def _device_name(backend: str, device: int, devices: list[Any]) -> str:
    if backend == "cpu":
        import platform

        return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    from gpux.runtime import discovery, libraries

    if devices and device < len(devices):
        chosen = devices[device]
        name = chosen.metadata.get("Description") or chosen.metadata.get("DeviceName") or ""
        if not name and discovery.VENDORS.get(chosen.vendor_id) == "NVIDIA":
            # The WebGPU EP names no device; the NVIDIA driver does (wgpu's adapter
            # enumeration would too, but costs ~300 ms of every start-up).
            models = libraries.gpu_models()
            name = models[device] if device < len(models) else ""
        vendor = chosen.vendor or discovery.VENDORS.get(chosen.vendor_id, "")
        return " ".join(filter(None, [name or vendor, f"({backend} device {device})"]))
    if backend in ("cuda", "tensorrt"):
        models = libraries.gpu_models()
        if device < len(models):
            return f"{models[device]} ({backend} device {device})"
    return f"{backend} device {device}"
