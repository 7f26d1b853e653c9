"""GPUX_ENGINE_TRACE (gpux/serve/engine_trace.py): the stage times of a shared engine's calls,
summed by the front-end from its own clock and the engine's stamps."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from gpux.serve import engine_trace
from gpux.serve.engine_trace import STAGES, CallTimes
from tests import generated_models
from tests.cli.expect import BoundCLI
from tests.serve.conftest import start_server, stop_server


def test_stages_are_the_gaps_between_the_stamps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    times = CallTimes(tmp_path)
    clock = iter([10.0, 10.5, 20.0, 21.0, 30.0])  # sent, answered (1), sent, answered (2), (3)
    monkeypatch.setattr(engine_trace.time, "monotonic", lambda: next(clock))
    times.sent(1)
    times.answered(1, (10.1, 10.4))
    times.sent(2)
    times.answered(2, (20.2, 20.6))
    times.answered(3, (0.0, 0.0))  # never sent: not counted
    assert times.count == 2
    assert times.sums == pytest.approx(
        {"to_engine": 0.1 + 0.2, "in_batcher": 0.3 + 0.4, "back": 0.1 + 0.4}
    )
    assert not times.path.exists()  # written every EVERY answers
    times.write()
    other = tmp_path / "2.json"
    other.write_text(json.dumps({"count": 3, "seconds": dict.fromkeys(STAGES, 1.0)}))
    (tmp_path / "3.json").write_text("{")  # a file being replaced is skipped
    count, sums = engine_trace.read_sums(tmp_path)
    assert count == 5
    assert sums["back"] == pytest.approx(1.5)


def test_a_front_end_writes_the_stage_times_of_its_calls(tmp_path: Path) -> None:
    project = tmp_path / "linear"
    generated_models.linear(project / "linear.onnx")
    (project / "GPUXfile").write_text("name: linear\nmodel: ./linear.onnx\n")
    cli = BoundCLI(tmp_path / "home")
    cli.ok("build", str(project), "-q")
    trace = tmp_path / "trace"
    server = start_server(
        cli,
        *("linear", "--backend", "cpu", "--workers", "1", "--shared-engine"),
        env={"GPUX_ENGINE_TRACE": str(trace)},
    )
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for _ in range(engine_trace.EVERY):
                assert http.post("/v2/models/linear/infer", json=body).status_code == 200
            files = list(trace.glob("*.json"))
            assert len(files) == 1  # the one front-end's
            count, sums = engine_trace.read_sums(trace)
    finally:
        stop_server(server)
    assert count == engine_trace.EVERY
    assert all(0 <= sums[stage] < count for stage in STAGES), sums  # none negative or > 1 s
    assert sums["in_batcher"] > 0
    assert np.isfinite(list(sums.values())).all()
