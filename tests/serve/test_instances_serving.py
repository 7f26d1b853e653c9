"""``gpux serve --backend cpu --gpus 2``: two instances of one model behind one batcher; batches
spread over both, answers equal ``gpux run``'s, and ``/stats`` and ``/metrics`` report each
instance (the GPU forms of ``--gpus`` are planned against made-up machines in
tests/runtime/test_instances.py; a real two-GPU run needs a machine this one is not)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from tests.cli.expect import BoundCLI
from tests.serve.conftest import EXAMPLES, free_port, start_server, stop_server

pytestmark = [pytest.mark.zoo, pytest.mark.slow]


def test_batches_spread_over_cpu_instances(tmp_path_factory: pytest.TempPathFactory) -> None:
    cli = BoundCLI(tmp_path_factory.mktemp("instances-home"))
    cli.ok("build", str(EXAMPLES / "minilm-embeddings"), "-q")
    expected = np.array(
        cli.json("run", "minilm:1.0", "--input", "hello world")["result"]["embedding"]
    )
    ran = cli.json("run", "minilm:1.0", "--input", "hello world", "--backend", "cpu", "--gpus", "2")
    np.testing.assert_allclose(np.array(ran["result"]["embedding"]), expected, rtol=1e-5, atol=1e-6)

    grpc_port = free_port()
    server = start_server(
        cli,
        "minilm:1.0",
        "--backend", "cpu",
        "--gpus", "2",
        "--max-batch-size", "4",
        "--max-batch-delay-ms", "5",
        "--grpc-port", str(grpc_port),
    )  # fmt: skip
    try:
        predict = server.url + "/v1/models/minilm/predict"
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda _: httpx.post(predict, json={"text": "hello world"}, timeout=60),
                    range(48),
                )
            )
        for answer in answers:
            assert answer.status_code == 200, answer.text
            np.testing.assert_allclose(
                np.array(answer.json()["result"]["embedding"]), expected, rtol=1e-5, atol=1e-6
            )
        (stats,) = httpx.get(server.url + "/v2/models/minilm/stats").json()["model_stats"]
        instances = stats["instances"]
        assert [i["device"] for i in instances] == ["cpu:0", "cpu:0"]
        assert all(i["calls"] > 2 for i in instances), instances  # both took batches
        assert sum(i["rows"] for i in instances) >= 48
        assert sum(i["calls"] for i in instances) >= stats["execution_count"]
        metrics = httpx.get(server.url + "/metrics").text
        calls = re.findall(
            r'^gpux_instance_calls_total\{device="cpu:0",instance="(\d)",model="minilm"\} (\S+)$',
            metrics,
            re.M,
        )
        assert {int(i): float(n) for i, n in calls} == {
            i["instance"]: i["calls"] for i in instances
        }, calls
        # gRPC's statistics message has no field for instances: the rest still parses.
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        grpc_stats = client.get_inference_statistics("minilm", as_json=True)
        assert int(grpc_stats["model_stats"][0]["execution_count"]) == stats["execution_count"]
        client.close()
    finally:
        assert stop_server(server) == 0, server.log()


def test_a_gpus_typo_is_refused_before_loading(tmp_path_factory: pytest.TempPathFactory) -> None:
    cli = BoundCLI(tmp_path_factory.mktemp("instances-typo"))
    for command in (["serve", "minilm"], ["run", "minilm", "--input", "x"], ["bench", "minilm"]):
        failed = cli(*command, "--gpus", "al")
        assert failed.code == 2, failed.output
        assert "--gpus: 'al' is not a GPU selection" in failed.stderr, failed.stderr
