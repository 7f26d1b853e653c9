"""GPUX's own WebGPU engine: ONNX graphs as WGSL compute dispatches over wgpu (issue 19).

``kernel.py`` is the contract between the kernels (``kernels/``) and the executor
(``executor.py``); read its docstring first.
"""
