"""``gpux serve --workers 2``: two server processes on one HTTP port and one gRPC port, each with
its own models; answers equal a single process's, both processes take requests, ``/metrics``
and ``/stats`` add up both, and SIGTERM stops everything cleanly (exit 0, shared folder gone)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from tests.cli.expect import BoundCLI
from tests.serve.conftest import EXAMPLES, free_port, start_server, stop_server

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

IDS = np.array([[101, 7592, 2088, 102]], np.int64)


def body(ids: np.ndarray) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": name,
                "shape": list(ids.shape),
                "datatype": "INT64",
                "data": v.ravel().tolist(),
            }
            for name, v in (
                ("input_ids", ids),
                ("attention_mask", np.ones_like(ids)),
                ("token_type_ids", 0 * ids),
            )
        ]
    }


def test_two_workers_share_the_ports_and_add_up(tmp_path_factory: pytest.TempPathFactory) -> None:
    cli = BoundCLI(tmp_path_factory.mktemp("workers-home"))
    cli.ok("build", str(EXAMPLES / "minilm-embeddings"), "-q")
    ran = cli.json("run", "minilm:1.0", "--input", "hello world", "--backend", "cpu")
    expected = np.array(ran["result"]["embedding"])

    grpc_port = free_port()
    server = start_server(
        cli, "minilm:1.0", "--backend", "cpu", "--workers", "2", "--grpc-port", str(grpc_port)
    )
    try:
        (shared,) = (cli.home / "run").iterdir()
        predict = server.url + "/v1/models/minilm/predict"
        # The first worker answers health while the second may still load (a busy machine):
        # wait until both have set their gauges, so that the burst below can reach both.
        deadline = time.monotonic() + 120
        while len(_pids(shared, "gauge_*.db")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_pids(shared, "gauge_*.db")) == 2, "the second worker never started"
        with ThreadPoolExecutor(16) as pool:  # 16 connections at once: the kernel spreads them
            answers = list(
                pool.map(
                    lambda _: httpx.post(predict, json={"text": "hello world"}, timeout=60),
                    range(48),
                )
            )
        assert all(a.status_code == 200 for a in answers)
        for answer in answers:
            np.testing.assert_allclose(answer.json()["result"]["embedding"], expected, atol=1e-5)

        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        inputs = []
        for name, value in (("input_ids", IDS), ("attention_mask", 1 + 0 * IDS)):
            tensor = triton_grpc.InferInput(name, list(value.shape), "INT64")
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        tensor = triton_grpc.InferInput("token_type_ids", list(IDS.shape), "INT64")
        tensor.set_data_from_numpy(0 * IDS)
        inputs.append(tensor)
        over_grpc = client.infer("minilm", inputs).as_numpy("last_hidden_state")
        over_http = httpx.post(server.url + "/v2/models/minilm/infer", json=body(IDS)).json()
        np.testing.assert_allclose(
            over_grpc.ravel(), over_http["outputs"][0]["data"], rtol=1e-5, atol=1e-5
        )

        # Both processes answered: each keeps its own metric files, named by its pid.
        pids = _pids(shared, "counter_*.db")
        assert len(pids) == 2, sorted(p.name for p in (shared / "metrics").iterdir())
        metrics = httpx.get(server.url + "/metrics").text
        counted = re.search(
            r'gpux_requests_total\{endpoint="predict",model="minilm",status="200"\} (\S+)', metrics
        )
        assert counted is not None and float(counted.group(1)) == 48  # both workers' requests
        time.sleep(1.5)  # every worker has written its statistics since
        (stats,) = httpx.get(server.url + "/v2/models/minilm/stats").json()["model_stats"]
        assert stats["inference_stats"]["success"]["count"] == 48 + 2  # predict + infer calls
    finally:
        assert stop_server(server) == 0, server.log()
    assert not (cli.home / "run" / shared.name).exists()


def _pids(shared: Path, pattern: str) -> set[str]:
    """The processes that wrote metric files matching ``pattern`` (named by their pid)."""
    return {re.sub(r"\D", "", p.stem) for p in (shared / "metrics").glob(pattern)}
