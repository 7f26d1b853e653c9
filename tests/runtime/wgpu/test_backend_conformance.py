"""ONNX's backend node tests through GPUX's backend class (``onnx_backend.WgpuOnnxBackend``):
every case whose one node is an op the engine claims, end to end through graph preparation,
the memory plan, the executor's buffers and one submit. The kernel tests
(``test_conformance.py``) run each node alone with every input known at load; here inputs
arrive at run time, as they do in a model."""

from __future__ import annotations

import re
import warnings

import pytest

pytest.importorskip("wgpu", reason="wgpu is not installed (the webgpu extra)")

import onnx.backend.test

from gpux.errors import BackendError
from gpux.runtime.wgpu.device import open_device
from gpux.runtime.wgpu.kernel import claimed_ops
from gpux.runtime.wgpu.partition import register_kernels
from tests.runtime.wgpu.onnx_backend import WgpuOnnxBackend

try:
    open_device(allow_software=True)
except BackendError as exc:
    pytest.skip(f"no wgpu device: {exc.message}", allow_module_level=True)


def _claimed_case_names() -> list[str]:
    from onnx.backend.test.loader import load_model_tests

    register_kernels()
    claimed = set(claimed_ops())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = load_model_tests(kind="node")
    names = []
    for case in cases:
        nodes = case.model.graph.node
        if len(nodes) != 1:
            continue
        node = nodes[0]
        op = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        if op in claimed:
            names.append(case.name)
    return sorted(names)


with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ONNX's case generators overflow casts on purpose
    _backend_test = onnx.backend.test.BackendTest(WgpuOnnxBackend, __name__)
_backend_test.include("^(" + "|".join(re.escape(n) for n in _claimed_case_names()) + ")_cpu$")
globals().update(_backend_test.test_cases)
