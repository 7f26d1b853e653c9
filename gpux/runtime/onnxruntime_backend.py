"""The ONNX Runtime backend: one InferenceSession on the best execution provider that works."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gpux.config.schema import Runtime
from gpux.errors import BackendError
from gpux.runtime import providers as provider_table
from gpux.runtime.backend import Backend, Placement

_LEVELS = {"disable": 0, "basic": 1, "extended": 2, "all": 99}


def _log_level() -> int:
    """ONNX Runtime writes straight to stderr; GPUX reports what matters itself (unless --debug)."""
    from gpux import env

    return 2 if env.debug() else 4


def session_options(runtime: Runtime) -> Any:
    import onnxruntime as ort

    ort.set_default_logger_severity(_log_level())
    options = ort.SessionOptions()
    options.log_severity_level = _log_level()
    options.graph_optimization_level = ort.GraphOptimizationLevel(
        _LEVELS[str(runtime.graph_optimization.value)]
    )
    if runtime.threads:
        options.intra_op_num_threads = runtime.threads
    return options


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for prefix in ("[ONNXRuntimeError] : ",):
        text = text.removeprefix(prefix)
    return text.splitlines()[0] if text else type(exc).__name__


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, session: Any, placement: Placement) -> None:
        self._session = session
        self._placement = placement
        self._output_names = [o.name for o in session.get_outputs()]
        self._run: Any = session.run

    @classmethod
    def load(cls, model_path: Path, runtime: Runtime) -> OnnxRuntimeBackend:
        import onnxruntime as ort

        requested = str(runtime.backend.value)
        available = ort.get_available_providers()
        to_try = provider_table.candidates(requested, available)
        if not to_try:
            raise BackendError(
                f"backend '{requested}' is not available in this ONNX Runtime build "
                f"(it offers: {', '.join(available)})",
                provider_table.INSTALL_HINTS.get(requested, "choose another backend")
                + ", or use --backend auto",
            )
        failures: list[str] = []
        for backend, provider in to_try:
            options = session_options(runtime)
            provider_options: dict[str, Any] = {}
            if backend != "cpu":
                provider_options["device_id"] = runtime.device
            try:
                session = ort.InferenceSession(
                    os.fspath(model_path),
                    sess_options=options,
                    providers=[(provider, provider_options), "CPUExecutionProvider"]
                    if backend != "cpu"
                    else ["CPUExecutionProvider"],
                )
            except Exception as exc:  # ONNX Runtime raises its own pybind exception types
                failures.append(f"{backend}: {_first_line(exc)}")
                if requested != "auto":
                    raise BackendError(
                        f"backend '{backend}' failed to start: {_first_line(exc)}",
                        provider_table.INSTALL_HINTS.get(backend, "use --backend auto"),
                    ) from None
                continue
            active = session.get_providers()
            if provider not in active:
                # ONNX Runtime only warns when a provider cannot start and runs on CPU instead.
                failures.append(f"{backend}: {provider} did not start (ONNX Runtime fell back)")
                if requested != "auto":
                    raise BackendError(
                        f"backend '{backend}' was requested but ONNX Runtime could not start "
                        f"{provider}",
                        provider_table.INSTALL_HINTS.get(backend, "use --backend auto"),
                    )
                continue
            placement = Placement(
                backend=backend,
                providers=active,
                device=_device_name(backend, runtime.device),
                requested=requested,
                fallback_reason="; ".join(failures) or None,
            )
            return cls(session, placement)
        tried = [backend for backend, _ in to_try]
        raise BackendError(
            "no execution backend could load the model: " + "; ".join(failures),
            "ONNX Runtime rejects the model itself: rebuild it with 'gpux build --force' and "
            "rerun with --debug to see ONNX Runtime's own messages"
            if tried == ["cpu"]
            else "try --backend cpu; rerun with --debug to see ONNX Runtime's own messages",
        )

    def run(self, feed: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        try:
            results = self._run(self._output_names, feed)
        except Exception as exc:
            raise BackendError(
                f"the model failed to run on {self._placement.backend}: {_first_line(exc)}",
                "check the input values against 'gpux inspect'; rerun with --debug for details",
            ) from exc
        return dict(zip(self._output_names, results, strict=True))

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


def _device_name(backend: str, device: int) -> str:
    if backend == "cpu":
        import platform

        return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    return f"{backend} device {device}"
