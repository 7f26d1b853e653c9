"""GPUX's wgpu engine as an ``onnx.backend.base.Backend``, for ONNX's backend test runner.

A model whose nodes no kernel takes (the case's dtype or attributes) and an input the device
cannot hold (int64 beyond int32) skip with the engine's own reason; any other failure fails.
"""

from __future__ import annotations

import os
import tempfile
import unittest
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from gpux.config.schema import Runtime
from gpux.errors import BackendError, InputError
from gpux.runtime.wgpu.backend import WgpuBackend


class WgpuRep(BackendRep):
    def __init__(self, engine: WgpuBackend, inputs: list[str], outputs: list[str]) -> None:
        self.engine = engine
        self.inputs = inputs
        self.outputs = outputs

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        arrays = inputs if isinstance(inputs, list | tuple) else [inputs]
        feed = {name: np.asarray(value) for name, value in zip(self.inputs, arrays, strict=False)}
        odd = [a.dtype.name for a in feed.values() if a.dtype.num >= 256]
        if odd:  # ml_dtypes' bfloat16, float8, int4: no ONNX Runtime feed takes them
            raise unittest.SkipTest(f"inputs of dtype {', '.join(odd)}")
        try:
            results = self.engine.run(feed)
        except InputError as exc:
            raise unittest.SkipTest(exc.message) from exc
        return tuple(results[name] for name in self.outputs)


class WgpuOnnxBackend(Backend):
    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"  # ONNX's runner names tests *_cpu; the engine picks its adapter

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> WgpuRep:
        initializers = {t.name for t in model.graph.initializer}
        inputs = [i.name for i in model.graph.input if i.name not in initializers]
        outputs = [o.name for o in model.graph.output]
        with tempfile.TemporaryDirectory(prefix="gpux-onnx-backend-") as folder:
            path = Path(folder) / "model.onnx"
            onnx.save(model, str(path))
            try:
                # lavapipe on CI; set for the load only, so no other test sees it.
                with mock.patch.dict(os.environ, {"GPUX_WGPU_ALLOW_SOFTWARE": "1"}):
                    engine = WgpuBackend.load(path, Runtime(backend="wgpu"))
            except BackendError as exc:
                if "cannot run any node" in exc.message or "needs fixed sizes" in exc.message:
                    raise unittest.SkipTest(exc.message) from exc
                raise
        return WgpuRep(engine, inputs, outputs)

    @classmethod
    def run_model(cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any) -> Any:
        return cls.prepare(model, device).run(inputs)
