"""How ``gpux bench`` runs: several callers, a time limit, real inputs (tensors and pipeline
items), and the Python API that the CLI calls."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.cli.expect import BoundCLI, assert_failure

pytestmark = [pytest.mark.zoo, pytest.mark.slow]


def test_concurrent_callers_share_the_runs(gpux: BoundCLI) -> None:
    report = gpux.json(
        "bench", "orientation", "--concurrency", "2", "-b", "2", "--runs", "16", "--warmup", "2",
        "--json",
    )  # fmt: skip
    [result] = report["results"]
    assert result["concurrency"] == 2 and report["settings"]["concurrency"] == 2
    assert result["runs"] == 16  # in all, not per caller
    assert result["warmup_runs"] >= 2
    latency = result["latency_ms"]
    assert latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert result["throughput_items_per_s"] == pytest.approx(2 * 16 / result["elapsed_s"], 1e-3)
    # Two callers overlap: the phase is shorter than the calls laid end to end would be.
    assert result["elapsed_s"] < 16 * latency["mean"] / 1e3


def test_duration_stops_in_time(gpux: BoundCLI) -> None:
    started = time.monotonic()
    report = gpux.json("bench", "minilm", "--duration", "0.5", "--warmup", "0", "--json")
    wall = time.monotonic() - started
    [result] = report["results"]
    assert result["warmup_runs"] == 0
    # The phase ends with the first call that finishes after 0.5 s.
    assert 0.5 <= result["elapsed_s"] <= 0.5 + result["latency_ms"]["max"] / 1e3 + 0.05
    assert result["runs"] > 5
    assert wall < 30  # start-up and loading included; the point: not 2 s x anything


def test_runs_and_duration_whichever_ends_first(gpux: BoundCLI) -> None:
    report = gpux.json(
        "bench", "minilm", "--runs", "5", "--duration", "30", "--warmup", "0", "--json"
    )
    [result] = report["results"]
    assert result["runs"] == 5 and result["elapsed_s"] < 5


def test_tensor_inputs_are_repeated_to_the_batch(gpux: BoundCLI) -> None:
    report = gpux.json(
        "bench", "minilm", "-b", "1,3", "--runs", "5", "--warmup", "1", "--json",
        "--input", "input_ids=[[101, 7592, 2088, 102]]",
        "--input", "attention_mask=[[1, 1, 1, 1]]",
        "--input", "token_type_ids=[[0, 0, 0, 0]]",
    )  # fmt: skip
    assert report["inputs"] == "given"
    shapes = [r["input_shapes"]["input_ids"] for r in report["results"]]
    assert shapes == [[1, 4], [3, 4]]


def test_given_inputs_set_the_default_batch(gpux: BoundCLI, workdir: Path) -> None:
    pixels = workdir / "pixels.npy"
    np.save(pixels, np.zeros((2, 3, 224, 224), dtype=np.float32))
    report = gpux.json(
        "bench", "orientation", "--input", f"@{pixels}", "--runs", "4", "--warmup", "1", "--json"
    )
    [result] = report["results"]
    assert result["batch_size"] == 2 and result["input_shapes"] == {"x": [2, 3, 224, 224]}


def test_sentences_go_through_the_pipeline(gpux: BoundCLI) -> None:
    report = gpux.json(
        "bench", "sentences", "-b", "3", "--runs", "5", "--warmup", "1", "--json",
        "--input", "hello world", "--input", "a somewhat longer sentence",
    )  # fmt: skip
    [result] = report["results"]
    # Tokenised and padded as `gpux run` would: [CLS] a somewhat longer sentence [SEP].
    assert result["input_shapes"] == {
        "input_ids": [3, 6],
        "attention_mask": [3, 6],
        "token_type_ids": [3, 6],
    }


def test_bad_given_input(gpux: BoundCLI) -> None:
    assert_failure(
        gpux("bench", "minilm", "--input", "input_idz=[[1]]", "--runs", "2"),
        6,
        "input_idz",
    )


def test_python_api(gpux: BoundCLI) -> None:
    """The library the CLI calls, with pipeline items given as Python values."""
    from gpux.bench import BenchSettings, benchmark
    from gpux.store import Store

    calls = []

    from gpux.bench import Observer

    class Counting(Observer):
        def result(self, result: object) -> None:
            calls.append(result)

    report = benchmark(
        "sentences",
        BenchSettings(batch_sizes=[1, 2], runs=4, warmup_runs=1),
        inputs=["one sentence", "two"],
        store=Store(gpux.home),
        observer=Counting(),
    )
    assert [r.batch_size for r in report.results] == [1, 2]
    assert len(calls) == 2
    assert report.results[1].input_shapes["input_ids"] == [2, 4]
    assert all(len(r.latencies_ns) == 4 for r in report.results)
