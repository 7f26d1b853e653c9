"""How long a large JSON infer body keeps ``gpux serve`` from answering anything else.

A client sends MiniLM one infer request whose JSON holds N MB of token ids (parsed and
range-checked in full, then refused for an unknown extra input, so no model run blurs the
figure) while another polls ``/v2/health/live`` every 10 ms. Printed per body size, with the
body parsed on the server's own threads (``GPUX_PARSE_PROCESSES=0``) and in its parse process
(the default, gpux/serve/parsing.py): the large request's time, the slowest health check, and,
as the baseline measured in the same run, ``json.loads`` of the same body in this process.

    uv run python benchmarks/large_json.py [--sizes 8,30,60] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.serve import build_bench_image, free_port
from tools import zoo


def body_of(megabytes: int) -> bytes:
    count = megabytes * 1_000_000 // 2  # "1," per id
    ids = b'{"name": "input_ids", "shape": [1, %d], "datatype": "INT64", "data": [%s1]}' % (
        count,
        b"1," * (count - 1),
    )
    extra = b'{"name": "not-an-input", "shape": [1], "datatype": "INT64", "data": [1]}'
    return b'{"inputs": [' + ids + b", " + extra + b"]}"


def start(home: Path, processes: int) -> tuple[subprocess.Popen[bytes], int]:
    import httpx

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gpux.cli.main", "serve", "bench:latest", "--port", str(port)],
        env={**os.environ, "GPUX_HOME": str(home), "GPUX_PARSE_PROCESSES": str(processes)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                return process, port
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError("gpux serve did not start") from None
            time.sleep(0.2)


def one_request(port: int, body: bytes) -> dict[str, float]:
    """The large request's time (from its last byte sent to its answer) and the slowest of
    the health checks made meanwhile, each on a new connection as a load balancer makes them."""
    import httpx

    head = (
        b"POST /v2/models/bench/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    worst, checks = 0.0, 0
    with socket.create_connection(("127.0.0.1", port), timeout=120) as big:
        big.sendall(head + body)
        sent = time.perf_counter()
        big.setblocking(False)
        answer = b""
        while b"not-an-input" not in answer:
            try:
                chunk = big.recv(65536)
                if not chunk:
                    raise RuntimeError(f"the server closed the connection after {answer!r}")
                answer += chunk
                continue
            except BlockingIOError:
                pass
            asked = time.perf_counter()
            httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=120)
            worst, checks = max(worst, time.perf_counter() - asked), checks + 1
            time.sleep(0.01)
        took = time.perf_counter() - sent
    if not answer.startswith(b"HTTP/1.1 400 "):
        raise RuntimeError(f"unexpected answer {answer[:200]!r}")
    return {"request_s": took, "slowest_health_ms": worst * 1e3, "health_checks": checks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="8,30,60", help="body sizes in MB, comma-separated")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gpux-bench-json-") as tmp:
        home = build_bench_image(zoo.fetch("minilm"), Path(tmp))
        for size in sizes:
            body = body_of(size)
            started = time.perf_counter()
            json.loads(body)
            row: dict[str, Any] = {"json.loads in process, s": time.perf_counter() - started}
            for processes, label in ((0, "threads"), (1, "parse process")):
                server, port = start(home, processes)
                try:
                    one_request(
                        port, body_of(5)
                    )  # the parse process starts on its first large body
                    row[label] = one_request(port, body)
                finally:
                    server.terminate()
                    server.wait(timeout=30)
            results[f"{size} MB"] = row

    print(f"MiniLM, one JSON infer body of N MB of token ids, CPU, {os.cpu_count()} cores")
    print(
        f"{'body':>6} {'json.loads s':>12} | {'threads: request s':>18} {'slowest health ms':>17}"
        f" | {'process: request s':>18} {'slowest health ms':>17}"
    )
    for size, row in results.items():
        threads, process = row["threads"], row["parse process"]
        print(
            f"{size:>6} {row['json.loads in process, s']:12.2f} | {threads['request_s']:18.2f} "
            f"{threads['slowest_health_ms']:17.0f} | {process['request_s']:18.2f} "
            f"{process['slowest_health_ms']:17.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
