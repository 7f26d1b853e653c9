"""The machine a benchmark ran on, so that no figure is quoted without its context."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any


@cache
def machine() -> dict[str, Any]:
    """CPU model and cores, memory, GPUs, OS, Python, ONNX Runtime and its providers."""
    from gpux import __version__
    from gpux.runtime import discovery, libraries

    runtime = discovery.runtime()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "memory_bytes": _memory_total(),
        "gpus": libraries.gpu_models(),
        "nvidia_driver": libraries.nvidia_driver_version(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": runtime.version,
        "onnxruntime_packages": runtime.distributions,
        "providers_available": runtime.providers,
        "gpux": __version__,
    }


def cpu_model() -> str:
    """``Intel(R) Xeon(R) Platinum 8480+``, ``Apple M2``: the name people recognise."""
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                # x86 says "model name"; some ARM kernels only give "Hardware" or "CPU part".
                if line.startswith(("model name", "Hardware")):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
    elif sys.platform == "darwin":
        try:
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def _memory_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
