"""A bounded load test: 64 connections for 60 s against a real ``gpux serve`` with two zoo models
and batching, with a mix of what clients send (friendly predict, JSON and binary infer, metadata,
health, and client mistakes). It must end with 0 errors (no transport failure, no 5xx, no
unexpected status) and the server's resident memory within 5% of where it stood at the start.

The start is after a warm-up under the same load, which lasts until resident memory stops
growing (10 s windows, until two in a row grow less than 1% and 3,000 requests were served, at
most 90 s): a server's first requests size ONNX Runtime's arenas and the allocator's pools for
each shape the batcher forms, which is growth to a ceiling, not a leak. What is asserted is that the ceiling holds for 60 s more.

``GPUX_LOAD_SECONDS`` shortens or lengthens the measured phase (default 60).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.serve.conftest import Server, two_model_server

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

TOKEN = "load-token-0123456789"
CONNECTIONS = 64
WARM_UP_WINDOW = 10.0
WARM_UP_MAX = 90.0
WARM_UP_REQUESTS = 3000  # on a busy 2-core CI machine a window may serve only a few hundred
SETTLED = 1.01


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, zoo_file: Callable[[str], Path]
) -> Iterator[Server]:
    yield from two_model_server(tmp_path_factory.mktemp("load-home"), TOKEN, max_batch_size=16)


@dataclass(frozen=True)
class Call:
    """One kind of request and the statuses it may get (503 when the queue is full is an
    honest answer under overload, not an error)."""

    name: str
    method: str
    path: str
    expected: frozenset[int]
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def binary_infer(name: str, array: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": array.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + array.tobytes(), {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def mix() -> list[Call]:
    ok = frozenset({200, 503})
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    image = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    binary, binary_headers = binary_infer("x", image)
    ids = {
        "input_ids": [[101, 7592, 2088, 999, 102, 0]],
        "attention_mask": [[1, 1, 1, 1, 1, 0]],
        "token_type_ids": [[0, 0, 0, 0, 0, 0]],
    }
    tokens = {
        "inputs": [
            {"name": name, "shape": [1, 6], "datatype": "INT64", "data": data}
            for name, data in ids.items()
        ]
    }
    return [
        Call(
            "predict text",
            "POST",
            "/v1/models/minilm/predict",
            ok,
            json.dumps({"text": "GPUX serves models under load."}).encode(),
            auth,
        ),
        Call(
            "predict batch",
            "POST",
            "/v1/models/minilm/predict",
            ok,
            json.dumps([{"text": f"sentence number {i}"} for i in range(4)]).encode(),
            auth,
        ),
        Call(
            "infer binary",
            "POST",
            "/v2/models/document-orientation/infer",
            ok,
            binary,
            {**binary_headers, "Authorization": f"Bearer {TOKEN}"},
        ),
        Call(
            "infer json", "POST", "/v2/models/minilm/infer", ok, json.dumps(tokens).encode(), auth
        ),
        Call("metadata", "GET", "/v2/models/minilm", frozenset({200}), None, auth),
        Call("live", "GET", "/v2/health/live", frozenset({200})),
        Call("metrics", "GET", "/metrics", frozenset({200})),
        Call(
            "bad body",
            "POST",
            "/v2/models/minilm/infer",
            frozenset({400}),
            b'{"inputs": [{"name": "input_ids"}]}',
            auth,
        ),
        Call(
            "no token",
            "POST",
            "/v1/models/minilm/predict",
            frozenset({401}),
            b'{"text": "x"}',
            {"Content-Type": "application/json"},
        ),
        Call("unknown model", "GET", "/v2/models/nope-model", frozenset({404}), None, auth),
    ]


@dataclass
class Tally:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


async def hammer(url: str, seconds: float, tally: Tally) -> None:
    calls = mix()
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker(offset: int) -> None:
            index = offset
            while time.monotonic() < deadline:
                call = calls[index % len(calls)]
                index += 1
                try:
                    response = await client.request(
                        call.method, call.path, content=call.body, headers=call.headers
                    )
                except httpx.HTTPError as exc:
                    tally.errors.append(f"{call.name}: {type(exc).__name__}: {exc}")
                    continue
                tally.statuses[(call.name, response.status_code)] += 1
                if response.status_code not in call.expected:
                    tally.errors.append(
                        f"{call.name}: {response.status_code} {response.text[:300]}"
                    )

        await asyncio.gather(*(worker(i) for i in range(CONNECTIONS)))


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def test_64_connections_for_60_seconds_end_with_no_error_and_flat_memory(server: Server) -> None:
    seconds = float(os.environ.get("GPUX_LOAD_SECONDS", "60"))
    start, warmed, requests, calm = resident_bytes(server.process.pid), 0.0, 0, 0
    while warmed < WARM_UP_MAX:
        warm_up = Tally()
        asyncio.run(hammer(server.url, WARM_UP_WINDOW, warm_up))
        assert not warm_up.errors, warm_up.errors[:10]
        now = resident_bytes(server.process.pid)
        warmed, requests = warmed + WARM_UP_WINDOW, requests + sum(warm_up.statuses.values())
        calm = calm + 1 if now <= start * SETTLED else 0
        start = now
        if calm >= 2 and requests >= WARM_UP_REQUESTS:
            break

    tally = Tally()
    asyncio.run(hammer(server.url, seconds, tally))
    end = resident_bytes(server.process.pid)

    served = sum(count for (name, status), count in tally.statuses.items() if status == 200)
    summary = ", ".join(f"{n} {s}: {c}" for (n, s), c in sorted(tally.statuses.items()))
    print(
        f"\n{sum(tally.statuses.values())} requests in {seconds:g} s after {warmed:g} s of "
        f"warm-up ({summary}); RSS {start / 2**20:.1f} -> {end / 2**20:.1f} MiB"
    )
    assert not tally.errors, f"{len(tally.errors)} errors, first: {tally.errors[:10]}"
    assert served > 100 * seconds / 60, summary  # the server really worked
    for call in mix():  # every kind of request was made and got its expected answer
        assert any(name == call.name for name, _ in tally.statuses), (call.name, summary)
    assert end <= start * 1.05, (
        f"RSS grew {100 * (end / start - 1):.1f}% over {seconds:g} s of load: "
        f"{start / 2**20:.1f} -> {end / 2**20:.1f} MiB"
    )
    assert server.process.poll() is None, server.log()
