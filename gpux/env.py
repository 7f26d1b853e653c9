"""Every ``GPUX_*`` environment variable, read in one place.

Functions rather than constants so that tests (and long-lived processes) see changes.
"""

from __future__ import annotations

import os
from pathlib import Path


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def home() -> Path:
    """GPUX_HOME: the image store and caches. Default: the per-user data directory."""
    configured = os.environ.get("GPUX_HOME")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("gpux", appauthor=False))


def debug() -> bool:
    """GPUX_DEBUG=1: show tracebacks for every error (same as ``--debug``)."""
    return _flag("GPUX_DEBUG")


def wgpu_allow_software() -> bool:
    """GPUX_WGPU_ALLOW_SOFTWARE=1: the ``wgpu`` engine may run on a software adapter (lavapipe,
    WARP), as tests do; otherwise it needs a real GPU."""
    return _flag("GPUX_WGPU_ALLOW_SOFTWARE")


def wgpu_tune() -> bool | None:
    """GPUX_WGPU_TUNE: ``1`` times the ``wgpu`` engine's alternative GEMM kernels on the adapter
    at load and keeps the fastest (cached under GPUX_HOME), ``0`` keeps the size heuristic's
    choice; unset (None): tuned on a GPU with timestamp queries, not on a software adapter."""
    configured = os.environ.get("GPUX_WGPU_TUNE", "").strip().lower()
    if not configured:
        return None
    if configured in {"1", "true", "yes", "on"}:
        return True
    if configured in {"0", "false", "no", "off"}:
        return False
    from gpux.errors import UsageError

    raise UsageError(
        f"GPUX_WGPU_TUNE={configured!r} is not on or off",
        "set it to 1 (tune at load) or 0 (the size heuristic's kernels), or unset it",
    )


def no_progress() -> bool:
    """GPUX_NO_PROGRESS=1: never draw progress bars (logs and CI)."""
    return _flag("GPUX_NO_PROGRESS")


DEFAULT_MAX_MEMBER_BYTES = 2 << 30


def max_member_bytes() -> int:
    """GPUX_MAX_MEMBER_BYTES: the largest file taken out of an archive (``member``), in bytes.
    Default: 2 GiB, protobuf's limit: an ONNX model without external data is smaller."""
    configured = os.environ.get("GPUX_MAX_MEMBER_BYTES", "").strip()
    if not configured:
        return DEFAULT_MAX_MEMBER_BYTES
    try:
        value = int(configured)
    except ValueError:
        value = 0
    if value < 1:
        from gpux.errors import UsageError

        raise UsageError(
            f"GPUX_MAX_MEMBER_BYTES={configured!r} is not a number of bytes",
            f"set it to a whole number of bytes (the default is {DEFAULT_MAX_MEMBER_BYTES}, "
            "2 GiB), or unset it",
        )
    return value


def malloc_arenas() -> int:
    """GPUX_MALLOC_ARENAS: glibc malloc arenas in a ``gpux serve`` process (default 2, which
    keeps its memory flat under load; 0 keeps glibc's default of 8 per core)."""
    return _count(
        "GPUX_MALLOC_ARENAS", 2, "a number of arenas (2 by default, 0 for glibc's default)"
    )


def parse_processes() -> int:
    """GPUX_PARSE_PROCESSES: processes a ``gpux serve`` starts, on first need, to parse very
    large JSON infer bodies outside its interpreter lock (default 1; 0 parses them on threads
    of the server itself, see gpux/serve/parsing.py)."""
    return _count(
        "GPUX_PARSE_PROCESSES", 1, "a number of processes (1 by default, 0 to parse in the server)"
    )


def inference_threads() -> int:
    """GPUX_INFERENCE_THREADS: model calls one served model keeps in flight, each on its own
    thread (0, the default: 1 on the CPU, 2 on a GPU, 4 in the shared engine on CUDA; see
    gpux/serve/app.py)."""
    return _count("GPUX_INFERENCE_THREADS", 0, "a number of threads (0: the backend's default)")


def graph_copies() -> int:
    """GPUX_GRAPH_COPIES: sessions of each batch size that replays a CUDA graph, run side by
    side (1, the default: calls of one size take turns on its one session; each copy holds
    the model's weights again on the GPU; see gpux/runtime/sized_sessions.py)."""
    return max(1, _count("GPUX_GRAPH_COPIES", 1, "a number of sessions per batch size"))


def switch_interval_us() -> int:
    """GPUX_SWITCH_INTERVAL_US: how long (µs) a thread of a ``gpux serve`` process may keep
    the interpreter lock while another waits for it (``sys.setswitchinterval``; 0, the
    default, keeps Python's 5,000). Each hand-over of a call between threads (a shared engine's
    readers, loop and model threads) can wait that long for a busy thread."""
    return _count("GPUX_SWITCH_INTERVAL_US", 0, "microseconds (0: Python's default)")


def engine_trace() -> Path | None:
    """GPUX_ENGINE_TRACE: a folder where each front-end of a shared engine writes, per stage,
    the time its calls spent on their way through the engine (gpux/serve/engine_trace.py;
    for ``benchmarks/serve.py --profile``). Unset, the default: nothing is measured."""
    configured = os.environ.get("GPUX_ENGINE_TRACE", "").strip()
    return Path(configured) if configured else None


def _count(name: str, default: int, what: str) -> int:
    configured = os.environ.get(name, "").strip()
    if not configured:
        return default
    if not configured.isdecimal() or not configured.isascii():
        from gpux.errors import UsageError

        raise UsageError(
            f"{name}={configured!r} is not a whole number", f"set it to {what}, or unset it"
        )
    return int(configured)


def convert_python() -> str | None:
    """GPUX_CONVERT_PYTHON: the Python that runs conversions (``gpux convert``, builds of GGUF or
    transformers sources): one with torch, transformers, onnx-ir, gguf and onnxruntime-genai, such
    as ``.venv-convert/bin/python`` from ``make convert-tools``. Default: GPUX's own Python."""
    return os.environ.get("GPUX_CONVERT_PYTHON") or None


VARIABLES = {
    "GPUX_HOME": home.__doc__,
    "GPUX_DEBUG": debug.__doc__,
    "GPUX_NO_PROGRESS": no_progress.__doc__,
    "GPUX_WGPU_TUNE": wgpu_tune.__doc__,
    "GPUX_MAX_MEMBER_BYTES": max_member_bytes.__doc__,
    "GPUX_MALLOC_ARENAS": malloc_arenas.__doc__,
    "GPUX_CONVERT_PYTHON": convert_python.__doc__,
}
