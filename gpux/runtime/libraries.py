"""Find the native libraries GPU backends need, so that a missing one is named, not guessed.

ONNX Runtime lists ``TensorrtExecutionProvider`` even when TensorRT's libraries are absent and only
warns when CUDA cannot start; checking the libraries first lets GPUX say which one is missing.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# (what, candidate sonames) per platform family; the first that loads wins.
_LINUX = {
    "nvidia-driver": ("libcuda.so.1",),
    "cuda-runtime": ("libcudart.so.13", "libcudart.so.12"),
    "cublas": ("libcublas.so.13", "libcublas.so.12"),
    "cudnn": ("libcudnn.so.9",),
    "tensorrt": ("libnvinfer.so.10",),
    "rocm": ("libamdhip64.so.6", "libamdhip64.so"),
    "migraphx": ("libmigraphx_c.so.3", "libmigraphx_c.so"),
    "vulkan": ("libvulkan.so.1",),
}
_WINDOWS = {
    "nvidia-driver": ("nvcuda.dll",),
    "cuda-runtime": ("cudart64_13.dll", "cudart64_12.dll"),
    "cublas": ("cublas64_13.dll", "cublas64_12.dll"),
    "cudnn": ("cudnn64_9.dll",),
    "tensorrt": ("nvinfer_10.dll",),
    "vulkan": ("vulkan-1.dll",),
}


@dataclass(frozen=True)
class Library:
    name: str  # "cudnn"
    found: str | None  # the soname that loaded, or None
    tried: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "found": self.found, "tried": list(self.tried)}


def _candidates() -> dict[str, tuple[str, ...]]:
    return _WINDOWS if sys.platform == "win32" else _LINUX


def _python_package_dirs() -> list[Path]:
    """Library folders of the nvidia-* and tensorrt* wheels, which ONNX Runtime can preload."""
    folders: list[Path] = []
    for entry in sys.path:
        root = Path(entry)
        for pattern in ("nvidia/*/lib", "nvidia/cu*/lib", "tensorrt_libs", "tensorrt"):
            folders.extend(p for p in root.glob(pattern) if p.is_dir())
    return folders


def _loads(soname: str) -> bool:
    try:
        ctypes.CDLL(soname, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
        return True
    except OSError:
        pass
    try:
        ctypes.CDLL(soname, mode=ctypes.RTLD_GLOBAL)
        return True
    except OSError:
        pass
    for folder in _python_package_dirs():
        candidate = folder / soname
        if candidate.exists():
            try:
                ctypes.CDLL(str(candidate), mode=ctypes.RTLD_GLOBAL)
                return True
            except OSError:
                continue
    return False


@cache
def find(name: str) -> Library:
    tried = _candidates().get(name, ())
    for soname in tried:
        if _loads(soname):
            return Library(name, soname, tried)
    return Library(name, None, tried)


def cuda_runtime() -> ctypes.CDLL | None:
    """The CUDA runtime library ONNX Runtime's CUDA EP loaded, for calls through ctypes (which
    release the GIL for each call); None where there is none."""
    found = find("cuda-runtime")
    if found.found is None:
        return None
    try:
        return ctypes.CDLL(found.found)
    except OSError:
        return None


@cache
def preload_onnxruntime_gpu() -> str | None:
    """Let onnxruntime-gpu load CUDA/cuDNN from the nvidia-* wheels; None or the error text."""
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return None
    try:
        preload()  # directory=None: the nvidia-* wheels; "" would mean the default search path
        return None
    except Exception as exc:  # it raises plain RuntimeError/OSError with a useful text
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def gpu_models() -> list[str]:
    """NVIDIA GPU model names from the driver (``/proc/driver/nvidia/gpus/*/information``)."""
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            for line in info.read_text().splitlines():
                if line.startswith("Model:"):
                    names.append(line.split(":", 1)[1].strip())
        except OSError:
            continue
    return names


def nvidia_driver_version() -> str | None:
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    for word in text.split():
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    return None
