"""Peak memory over a timed phase: host RSS, and device memory where the backend can tell.

Host: on Linux the kernel keeps the peak resident set (``VmHWM``) and lets a process reset it
(``echo 5 > /proc/self/clear_refs``), so the peak of exactly the timed phase costs nothing while
it runs. Where that is refused, a thread samples ``VmRSS`` every 10 ms; elsewhere
``getrusage`` gives the peak since the process started.

Device: CUDA memory of this process from NVML (``pynvml``) or ``nvidia-smi``, read after the
phase. ONNX Runtime's CUDA arena grows and is not handed back, so what the process holds after
the phase is its peak. Other backends report none ("n/a").
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
SAMPLE_EVERY_S = 0.01


def _status_bytes(field: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class HostPeak:
    """``with HostPeak() as peak: ...`` then ``peak.bytes`` and ``peak.method``."""

    def __init__(self) -> None:
        self.bytes: int | None = None
        self.method = ""
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._highest = 0

    def __enter__(self) -> HostPeak:
        if _status_bytes("VmHWM") is not None and _reset_high_water_mark():
            self.method = "VmHWM (reset before the phase)"
        elif _status_bytes("VmRSS") is not None:
            self.method = f"VmRSS sampled every {SAMPLE_EVERY_S * 1e3:.0f} ms"
            self._highest = _status_bytes("VmRSS") or 0
            self._sampler = threading.Thread(target=self._sample, name="gpux-rss", daemon=True)
            self._sampler.start()
        else:
            self.method = "getrusage (peak since the process started)"
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.method.startswith("VmHWM"):
            self.bytes = _status_bytes("VmHWM")
        elif self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self.bytes = max(self._highest, _status_bytes("VmRSS") or 0)
        else:
            try:
                import resource
            except ImportError:  # Windows
                self.method = "unknown on this platform"
                return
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.bytes = peak if sys.platform == "darwin" else peak * 1024

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self._highest = max(self._highest, _status_bytes("VmRSS") or 0)


def _reset_high_water_mark() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def current_rss() -> int | None:
    """Resident memory now (bytes), where the platform tells."""
    return _status_bytes("VmRSS")


def device_memory(backend: str, device_index: int) -> dict[str, Any]:
    """``{"bytes": n, "scope": "process"|"device", "source": ...}``, or a ``why`` when unknown.

    ``scope: device`` is the whole GPU's used memory (other processes included): the fallback
    when this process is not listed, as in containers with their own PID namespace.
    """
    if backend not in ("cuda", "tensorrt"):
        return {"bytes": None, "why": f"the {backend} backend does not report device memory"}
    found = _from_nvml(device_index)
    if found is None:
        found = _from_nvidia_smi(device_index)
    return found or {"bytes": None, "why": "neither pynvml nor nvidia-smi is available"}


def _from_nvml(index: int) -> dict[str, Any] | None:
    try:
        pynvml: Any = importlib.import_module("pynvml")  # nvidia-ml-py, when installed
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if process.pid == os.getpid() and process.usedGpuMemory is not None:
                    return {
                        "bytes": int(process.usedGpuMemory),
                        "scope": "process",
                        "source": "NVML",
                    }
            used = pynvml.nvmlDeviceGetMemoryInfo(handle).used
            return {"bytes": int(used), "scope": "device", "source": "NVML"}
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML raises its own error types for every missing piece
        return None


def _nvidia_smi(*query: str) -> list[list[str]] | None:
    try:
        completed = subprocess.run(
            ["nvidia-smi", *query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return [[cell.strip() for cell in line.split(",")] for line in completed.stdout.splitlines()]


def _from_nvidia_smi(index: int) -> dict[str, Any] | None:
    gpus = _nvidia_smi("--query-gpu=index,uuid,memory.used")
    if not gpus:
        return None
    row = next((g for g in gpus if g[0] == str(index)), None)
    if row is None:
        return None
    for app in _nvidia_smi("--query-compute-apps=pid,gpu_uuid,used_memory") or []:
        if len(app) == 3 and app[0] == str(os.getpid()) and app[1] == row[1] and app[2].isdigit():
            return {"bytes": int(app[2]) * 2**20, "scope": "process", "source": "nvidia-smi"}
    if not row[2].isdigit():
        return None
    return {"bytes": int(row[2]) * 2**20, "scope": "device", "source": "nvidia-smi"}
