"""Triton's perf_analyzer, unchanged (tritonclient 2.51.0's binary, benchmarks/perf_analyzer.py),
against a real ``gpux serve`` of MiniLM over HTTP (binary tensors) and gRPC: it reads the
model's config, sends its requests and reports a throughput, with no request failing on
either side. ``make test`` installs it (``make perf-analyzer``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from benchmarks import perf_analyzer
from tests.cli.expect import BoundCLI
from tests.serve.conftest import EXAMPLES, Server, free_port, start_server, stop_server

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

try:
    ANALYZER = perf_analyzer.find()
except perf_analyzer.PerfAnalyzerMissing as exc:
    pytest.skip(f"perf_analyzer is not installed: {exc}", allow_module_level=True)

IDS = np.array([[101, 2023, 2003, 1037, 3231, 6251, 2005, 1996, 7416, 102]], np.int64)
MINILM = {"input_ids": IDS, "attention_mask": np.ones_like(IDS), "token_type_ids": 0 * IDS}


@dataclass
class Served:
    http: Server
    grpc_port: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    cli = BoundCLI(tmp_path_factory.mktemp("perf-analyzer-home"))
    cli.ok("build", str(EXAMPLES / "minilm-embeddings"), "-q")
    grpc_port = free_port()
    server = start_server(
        cli, "minilm:1.0", "--backend", "cpu", "--grpc-port", str(grpc_port),
        "--max-batch-size", "8", "--max-batch-delay-ms", "2",
    )  # fmt: skip
    yield Served(server, grpc_port)
    assert stop_server(server) == 0, server.log()


def successes_and_failures(served: Served) -> tuple[int, int]:
    """The server's own count of minilm's requests (Triton's statistics extension)."""
    stats = httpx.get(f"{served.http.url}/v2/models/minilm/stats").json()
    [model] = stats["model_stats"]
    counts = model["inference_stats"]
    return int(counts["success"]["count"]), int(counts["fail"]["count"])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_measures_gpux_serve(served: Served, protocol: str) -> None:
    port = served.http.port if protocol == "http" else served.grpc_port
    before = successes_and_failures(served)
    found = perf_analyzer.run(
        ANALYZER, f"127.0.0.1:{port}", "minilm", protocol, perf_analyzer.input_data(MINILM),
        concurrency=2, measurement_interval_ms=500, timeout=120,
    )  # fmt: skip
    assert found.concurrency == 2
    assert found.throughput > 0, found.output
    assert 0 < found.p50_ms <= found.p99_ms, found.output
    assert "error" not in found.output.lower(), found.output
    successes, failures = successes_and_failures(served)
    assert failures == before[1], served.http.log()
    assert successes > before[0]


def test_a_refused_request_fails_the_run(served: Served) -> None:
    """The check above can fail: requests the server refuses make perf_analyzer exit non-zero,
    with the server's message."""
    unequal = {**MINILM, "attention_mask": np.ones((1, IDS.shape[1] + 1), np.int64)}
    with pytest.raises(RuntimeError, match=r"(?s)exited \d+:.*every input must agree"):
        perf_analyzer.run(
            ANALYZER, f"127.0.0.1:{served.grpc_port}", "minilm", "grpc",
            perf_analyzer.input_data(unequal), concurrency=1, measurement_interval_ms=500,
            timeout=120,
        )  # fmt: skip


def test_perf_analyzer_as_a_row_of_the_serving_benchmark(served: Served) -> None:
    """benchmarks/serve.py --perf-analyzer: perf_analyzer's figures as the benchmark's result
    of a row (throughput, its p50 and p99, its own CPU time as the client's)."""
    target = perf_analyzer.Target(
        ANALYZER, f"127.0.0.1:{served.grpc_port}", "minilm", "grpc",
        perf_analyzer.input_data(MINILM),
    )  # fmt: skip
    result = perf_analyzer.load(target, concurrency=2, seconds=1.5)
    assert result.concurrency == 2 and result.throughput > 0
    assert 0 < result.percentile_ms(0.5) <= result.percentile_ms(0.99)
    assert result.client_cpu_share > 0
    shown = result.as_dict()
    assert shown["requests"] == result.completed > 0 and shown["p50_ms"] > 0
