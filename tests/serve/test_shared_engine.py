"""``gpux serve --workers 2 --shared-engine``: two front-end processes and one engine process that
holds the models. Answers equal ``gpux run``'s over HTTP (predict and binary infer) and gRPC,
for a single model and for a chain of two (OCR: each model of the chain runs in the engine);
the engine forms the batches (its batch metrics count every worker's requests); and when the
engine dies, requests get 503 and the server stops with a message, not a hang."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from tests.cli.expect import BoundCLI
from tests.serve.conftest import EXAMPLES, free_port, start_server, stop_server

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

IDS = np.array([[101, 7592, 2088, 102]], np.int64)


def feeds(module: object, ids: np.ndarray) -> list[object]:
    inputs = []
    for name, value in (("input_ids", ids), ("attention_mask", 1 + 0 * ids)):
        tensor = module.InferInput(name, list(value.shape), "INT64")  # type: ignore[attr-defined]
        tensor.set_data_from_numpy(
            value, **({"binary_data": True} if module is triton_http else {})
        )
        inputs.append(tensor)
    tensor = module.InferInput("token_type_ids", list(ids.shape), "INT64")  # type: ignore[attr-defined]
    tensor.set_data_from_numpy(0 * ids, **({"binary_data": True} if module is triton_http else {}))
    inputs.append(tensor)
    return inputs


def test_workers_share_one_engine(
    tmp_path_factory: pytest.TempPathFactory, zoo_file: Callable[[str], Path]
) -> None:
    cli = BoundCLI(tmp_path_factory.mktemp("engine-home"))
    cli.ok("build", str(EXAMPLES / "minilm-embeddings"), "-q")
    cli.ok("build", str(EXAMPLES / "ocr"), "-q")
    ran = cli.json("run", "minilm:1.0", "--input", "hello world", "--backend", "cpu")
    expected = np.array(ran["result"]["embedding"])
    page = zoo_file("page.png")
    read = cli.json("run", "ocr:4.0", "--input", str(page), "--backend", "cpu")["result"]

    grpc_port = free_port()
    server = start_server(
        cli,
        *("minilm:1.0", "ocr:4.0", "--backend", "cpu", "--workers", "2", "--shared-engine"),
        *("--grpc-port", str(grpc_port), "--max-batch-size", "8"),
    )
    try:
        (shared,) = (cli.home / "run").iterdir()
        engine_pid = int((shared / "engine.pid").read_text())
        predict = server.url + "/v1/models/minilm/predict"
        with ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(
                    lambda _: httpx.post(predict, json={"text": "hello world"}, timeout=60),
                    range(48),
                )
            )
        assert all(a.status_code == 200 for a in answers), answers[0].text
        for answer in answers:
            np.testing.assert_allclose(answer.json()["result"]["embedding"], expected, atol=1e-5)

        http = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
        over_http = http.infer("minilm", feeds(triton_http, IDS)).as_numpy("last_hidden_state")
        grpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        over_grpc = grpc.infer("minilm", feeds(triton_grpc, IDS)).as_numpy("last_hidden_state")
        np.testing.assert_allclose(over_grpc, over_http, rtol=1e-5, atol=1e-5)

        ocr = httpx.post(
            server.url + "/v1/models/ocr/predict",
            files={"image": ("page.png", page.read_bytes())},
            timeout=120,
        )
        assert ocr.status_code == 200, ocr.text
        assert [line["text"] for line in ocr.json()["result"]["lines"]] == [
            line["text"] for line in read["lines"]
        ]

        # The engine formed the batches: its batch metrics count all 48 predict rows (and the
        # two infer rows), whichever worker took them; the workers record none of their own.
        metrics = httpx.get(server.url + "/metrics").text
        rows = re.search(r'gpux_batch_size_sum\{model="minilm"\} (\S+)', metrics)
        assert rows is not None and float(rows.group(1)) == 48 + 2, metrics
        assert f"_{engine_pid}.db" in " ".join(p.name for p in (shared / "metrics").iterdir())
        # So do Triton's statistics: the model's executions are the engine's batches, the
        # requests are the workers' (every process rewrites its report within 0.1 s of a change).
        deadline = time.monotonic() + 10
        while True:
            (stats,) = httpx.get(server.url + "/v2/models/minilm/stats").json()["model_stats"]
            answered = stats["inference_stats"]["success"]["count"]
            counted = stats["inference_count"] >= 50 and answered >= 50
            if counted or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert stats["inference_count"] == 50, stats
        batches = stats["batch_stats"]
        assert stats["execution_count"] == sum(b["compute_infer"]["count"] for b in batches)
        assert all(b["batch_size"] <= 8 for b in batches), batches
        assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches) >= 50
        assert stats["inference_stats"]["success"]["count"] == 48 + 2, stats
        reports = {
            int(path.stem): json.loads(path.read_text())
            for path in (shared / "stats").glob("*.json")
        }
        executions = {
            pid: sum(m["execution_count"] for m in report["model_stats"] if m["name"] == "minilm")
            for pid, report in reports.items()
        }
        assert executions.pop(engine_pid) == stats["execution_count"], reports
        assert executions and set(executions.values()) == {0}, executions  # the workers'
        # gRPC's ModelStatistics adds up the same reports: perf_analyzer over gRPC failed
        # ("failed to find the requested model version") when it saw one worker's, whose
        # queue count never moves (the engine queues the requests).
        (over_grpc,) = grpc.get_inference_statistics("minilm", as_json=True)["model_stats"]
        assert int(over_grpc["inference_count"]) == stats["inference_count"], over_grpc
        assert int(over_grpc["execution_count"]) == stats["execution_count"], over_grpc
        queued = over_grpc["inference_stats"]["queue"]
        # Each request queued once in the engine: predict requests that a worker's item
        # batcher joined into one pipeline run count each (the run's call says how many).
        assert int(queued["count"]) == stats["inference_stats"]["queue"]["count"] == 50, stats

        # The engine dies: the workers answer 503 (not a hang, not a 500), the server stops.
        os.kill(engine_pid, signal.SIGKILL)
        try:
            after = httpx.post(predict, json={"text": "hello"}, timeout=30)
            assert after.status_code == 503, after.text
            assert "engine" in after.json()["error"]
        except httpx.TransportError:
            pass  # the server was already stopping its workers
        assert server.process.wait(timeout=60) != 0
        assert "model engine process stopped" in server.log()
    finally:
        if server.process.poll() is None:
            stop_server(server)
    assert not (cli.home / "run" / shared.name).exists()


def test_a_model_the_engine_cannot_load_stops_the_server_with_its_reason(
    tmp_path: Path,
) -> None:
    cli = BoundCLI(tmp_path)
    cli.ok("build", str(EXAMPLES / "minilm-embeddings"), "-q")
    failed = cli(
        "serve",
        "minilm:1.0",
        "--backend",
        "cuda",
        "--workers",
        "2",
        "--shared-engine",
        "--port",
        str(free_port()),
    )
    assert failed.code != 0
    assert "model engine could not start" in failed.output
    assert "cuda" in failed.output.lower()
    time.sleep(0.5)
    assert not list((cli.home / "run").glob("serve-*"))
