"""Kernels tuned per adapter and cached (tuning.py, tuning_cache.py): the GEMM template's
candidates all compute the same values; a tuned load (forced on lavapipe, tiny problems) matches
ONNX Runtime CPU whichever candidate wins; the winners are cached under GPUX_HOME and read back
without timing; a corrupt cache is ignored and rewritten; tuning is off by default here."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("wgpu", reason="wgpu is not installed (the webgpu extra)")

from onnx import TensorProto, helper

from gpux import env
from gpux.errors import UsageError
from gpux.runtime.wgpu import (
    kernels,  # noqa: F401  (registers the kernels)
    tuning,
    tuning_cache,
)
from gpux.runtime.wgpu.device import Gpu, run_lowering
from gpux.runtime.wgpu.kernel import NodeContext, TensorInfo, lower
from gpux.runtime.wgpu.kernels import gemm
from tests.runtime.wgpu.graphs import load_checked, save_graph

# Rows few enough for the thin kernel to be a candidate, K long enough for the heuristic to
# split it (its scratch differs from the thin kernel's none), columns for two block widths.
ROWS, DEPTH, COLUMNS = 6, 512, 24


def _random(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _matmul_context(gpu: Gpu, m: int, k: int, n: int) -> NodeContext:
    return NodeContext(
        op_type="MatMul",
        domain="",
        attributes={},
        inputs=(TensorInfo((m, k), np.dtype(np.float32)), TensorInfo((k, n), np.dtype(np.float32))),
        outputs=(TensorInfo((m, n), np.dtype(np.float32)),),
        features=gpu.features,
    )


@pytest.mark.parametrize("sizes", [(ROWS, DEPTH, COLUMNS), (20, 64, 40), (3, 40, 70)])
def test_every_candidate_computes_the_heuristics_output(gpu: Gpu, sizes: tuple) -> None:
    m, k, n = sizes
    a, b = _random(m, k), _random(k, n, seed=1)
    lowering = lower(_matmul_context(gpu, m, k, n))
    candidates = lowering.candidates()
    assert 1 < len(candidates) <= gemm.MAX_CANDIDATES
    assert candidates[0].dispatches == lowering.dispatches  # the heuristic's choice first
    sources = {tuple(d.shader for d in candidate.dispatches) for candidate in candidates}
    assert len(sources) == len(candidates)  # no candidate offered twice
    (first,) = run_lowering(gpu, candidates[0], [a, b], (TensorInfo((m, n), a.dtype),))
    np.testing.assert_allclose(first, a @ b, rtol=1e-4, atol=1e-3)
    for candidate in candidates[1:]:
        (value,) = run_lowering(gpu, candidate, [a, b], (TensorInfo((m, n), a.dtype),))
        np.testing.assert_allclose(value, first, rtol=1e-4, atol=1e-3)


def test_an_explicit_block_offers_no_alternatives() -> None:
    problem = gemm.Gemm(1, 64, 64, 64, "", "")
    assert gemm.gemm_lowering(problem, (), side=16).alternatives is None
    assert len(gemm.candidate_tilings(gemm.Gemm(1, 16, 16, 16, "", ""))) == 1


def _model(folder: Path) -> Path:
    """x @ w + bias, then Relu (the epilogue the MatMul kernel computes), at the sizes above."""
    folder.mkdir()
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["product"]),
        helper.make_node("Add", ["product", "bias"], ["sum"]),
        helper.make_node("Relu", ["sum"], ["y"]),
    ]
    return save_graph(
        folder,
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, DEPTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [ROWS, COLUMNS])],
        {"w": _random(DEPTH, COLUMNS, seed=1), "bias": _random(COLUMNS, seed=2)},
    )


FEED = {"x": _random(ROWS, DEPTH, seed=3)}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, software_adapter: None) -> Path:
    """GPUX_HOME in tmp_path, tuning forced on, and no winner known to this process yet."""
    folder = tmp_path / "home"
    monkeypatch.setenv("GPUX_HOME", str(folder))
    monkeypatch.setenv("GPUX_WGPU_TUNE", "1")
    monkeypatch.setattr(tuning, "_process_choices", {})
    return folder


def _load(model: Path) -> dict[str, Any]:
    """The placement's tuning details, after the outputs equalled ONNX Runtime CPU's; with
    ``dispatches`` (of the kernels run) added."""
    backend, _ = load_checked(model, FEED, rtol=1e-4, atol=1e-3)
    details = backend.placement.details
    backend.close()
    return {**details["tuning"], "dispatches": details["dispatches"]}


def test_a_tuned_load_matches_onnx_runtime_and_caches_its_choice(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(tmp_path / "model")
    first = _load(model)
    assert first["enabled"] and first["timed"] == first["problems"] == 1
    assert first["cache_written"] is True
    cache = home / "cache" / "wgpu-tuning.json"
    assert first["cache_file"] == str(cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "model"]  # nowhere else
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temporary left
    stored = json.loads(cache.read_text())
    assert stored["format"] == tuning_cache.FORMAT and len(stored["choices"]) == 1

    # A new process (no winner in memory) on the same adapter reads the file: no timing.
    monkeypatch.setattr(tuning, "_process_choices", {})

    def no_timing(*_: Any) -> list[float]:
        raise AssertionError("timed a problem whose winner is cached")

    monkeypatch.setattr(tuning, "time_candidates", no_timing)
    second = _load(model)
    assert (second["timed"], second["from_cache"], second["problems"]) == (0, 1, 1)
    assert "cache_written" not in second
    # The same process again: its own memory answers, the file is not read.
    monkeypatch.setattr(tuning_cache, "read_choices", no_timing)
    third = _load(model)
    assert (third["timed"], third["from_cache"], third["reused_in_process"]) == (0, 0, 1)


@pytest.mark.parametrize("winner", [0, 1, 2])
def test_whichever_candidate_wins_the_outputs_are_onnx_runtimes(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, winner: int
) -> None:
    """The split heuristic, the thin kernel (no scratch: the buffers are planned again) and a
    wider block, each made the fastest."""
    offered: list[int] = []

    def times(_: Gpu, candidates: tuple, __: Any) -> list[float]:
        offered.append(len(candidates))
        return [0.5 if number == winner else 1.0 for number in range(len(candidates))]

    monkeypatch.setattr(tuning, "time_candidates", times)
    details = _load(_model(tmp_path / "model"))
    assert offered == [3]
    assert details["changed"] == (winner != 0)
    assert details["dispatches"] == (1 if winner == 1 else 2)  # the thin kernel has no sum


def test_the_kernels_own_choice_stays_unless_clearly_beaten() -> None:
    assert tuning._winner([1.0, 0.97, 2.0]) == 0
    assert tuning._winner([1.0, 0.5, 0.9]) == 1


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe not json",
        b"[1, 2, 3]",
        b'{"format": "gpux-wgpu-tuning", "version": 99, "choices": {}}',
        b'{"format": "gpux-wgpu-tuning", "version": 1, "choices": []}',
    ],
)
def test_a_corrupt_or_foreign_cache_is_ignored_and_rewritten(
    home: Path, tmp_path: Path, content: bytes
) -> None:
    cache = home / "cache" / "wgpu-tuning.json"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(content)
    details = _load(_model(tmp_path / "model"))
    assert details["timed"] == 1 and details["cache_written"] is True
    stored = json.loads(cache.read_text())
    assert stored["version"] == tuning_cache.VERSION and len(stored["choices"]) == 1


def test_cache_entries_of_the_wrong_type_are_dropped(tmp_path: Path) -> None:
    cache = tmp_path / "choices.json"
    choices = {"good": 2, "text": "2", "flag": True, "negative": -1, "huge": 10**9, "list": [1]}
    cache.write_text(json.dumps({"format": tuning_cache.FORMAT, "version": 1, "choices": choices}))
    assert tuning_cache.read_choices(cache) == {"good": 2}


def test_the_cache_is_bounded_and_keeps_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tuning_cache, "MAX_CHOICES", 3)
    cache = tmp_path / "choices.json"
    assert tuning_cache.save_choices(cache, {"a": 0, "b": 1})
    assert tuning_cache.save_choices(cache, {"c": 2, "d": 3, "a": 4})
    assert tuning_cache.read_choices(cache) == {"c": 2, "d": 3, "a": 4}


def test_an_unwritable_cache_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert tuning_cache.save_choices(blocker / "cache" / "choices.json", {"a": 0}) is False


def test_off_by_default_on_a_software_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, software_adapter: None
) -> None:
    monkeypatch.setenv("GPUX_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GPUX_WGPU_TUNE", raising=False)

    def no_timing(*_: Any) -> list[float]:
        raise AssertionError("timed on a software adapter")

    monkeypatch.setattr(tuning, "time_candidates", no_timing)
    details = _load(_model(tmp_path / "model"))
    assert details == {
        "dispatches": 2,
        "enabled": False,
        "why": "a software adapter (GPUX_WGPU_TUNE=1 tunes it anyway)",
    }
    assert not (tmp_path / "home").exists()


def test_the_policy(gpu: Gpu, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUX_WGPU_TUNE", "0")
    assert tuning.policy(gpu) == (False, "GPUX_WGPU_TUNE=0")
    monkeypatch.setenv("GPUX_WGPU_TUNE", "on")
    no_queries = dataclasses.replace(gpu, features=gpu.features - {"timestamp-query"})
    assert tuning.policy(no_queries) == (False, "the adapter has no timestamp queries")
    monkeypatch.delenv("GPUX_WGPU_TUNE")
    a_gpu = dataclasses.replace(gpu, is_software=False)
    assert tuning.policy(a_gpu)[0] == ("timestamp-query" in gpu.features)
    monkeypatch.setenv("GPUX_WGPU_TUNE", "maybe")
    with pytest.raises(UsageError, match="GPUX_WGPU_TUNE"):
        env.wgpu_tune()
