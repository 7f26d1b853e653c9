"""GPUX backend names and the ONNX Runtime execution providers behind them."""

from __future__ import annotations

# Fastest first: the order "auto" tries them in.
PRIORITY: list[str] = [
    "tensorrt",
    "cuda",
    "rocm",
    "coreml",
    "directml",
    "openvino",
    "webgpu",
    "cpu",
]

PROVIDERS: dict[str, tuple[str, ...]] = {
    "tensorrt": ("TensorrtExecutionProvider",),
    "cuda": ("CUDAExecutionProvider",),
    "rocm": ("MIGraphXExecutionProvider", "ROCMExecutionProvider"),
    "coreml": ("CoreMLExecutionProvider",),
    "directml": ("DmlExecutionProvider",),
    "openvino": ("OpenVINOExecutionProvider",),
    "webgpu": ("WebGpuExecutionProvider",),
    "cpu": ("CPUExecutionProvider",),
}

ACCELERATED_PROVIDERS: frozenset[str] = frozenset(
    provider for backend, names in PROVIDERS.items() if backend != "cpu" for provider in names
)
"""Every provider that runs on something other than the CPU."""

INSTALL_HINTS: dict[str, str] = {
    "tensorrt": "install onnxruntime-gpu and TensorRT 10: pip install 'gpux[cuda]' 'tensorrt-cu13<11'",
    "cuda": "install onnxruntime-gpu with CUDA 13 and cuDNN 9: pip install 'gpux[cuda]'",
    "rocm": "install onnxruntime-rocm (or onnxruntime-migraphx) built for your ROCm version",
    "coreml": "CoreML needs macOS with the standard onnxruntime wheel",
    "directml": "install onnxruntime-directml on Windows",
    "openvino": "install onnxruntime-openvino: pip install 'gpux[openvino]'",
    "webgpu": "install the WebGPU plugin: pip install 'gpux[cpu,webgpu]' (or 'gpux[cuda,webgpu]')",
    "cpu": "reinstall onnxruntime",
}
