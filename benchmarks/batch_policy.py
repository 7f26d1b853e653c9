"""How the batcher's choice of batch sizes pays on a busy GPU, without a GPU.

GPUX's own ``Batcher`` (gpux/serve/batching.py) in front of a stand-in device that runs one call
at a time (a lock: calls of one batch size take turns on its CUDA graph) for a time per batch
size given by ``--costs``, with ``--host-ms`` of each call's host copies outside it. A closed
loop of ``--clients`` callers: each spends ``--outside-ms`` (+-50%) outside the batcher per
request (its client, the front-end, the hop to the engine: ~4 ms for BERT-base on an H100 at
c=32, docs/benchmarks.md), then waits for its answer. Every round runs the two policies one
after the other on the same process:

- ``pad``: every batch padded up to the next preferred size (the batcher without costs);
- ``cut``: the batcher told each size's cost, which cuts a batch to the size below where that
  costs less per row than padding up (``Batcher.fitted``).

Prints requests/s, p50/p99 and the sizes each policy ran, with the ratio cut/pad per round.
The default costs are BERT-base (seq 128) on an H200 with CUDA graphs: 1.22 ms + 0.2025 ms a
row, the line through the measured b8 (2.84 ms) and b16 (4.46 ms) calls (graph_copies.py, K=1).

    python benchmarks/batch_policy.py [--threads 4] [--delay-ms 2] [--outside-ms 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from gpux.serve.batching import Batcher, Strategy


def bert_costs(sizes: list[int]) -> dict[int, float]:
    """Seconds per call of each size: BERT-base on an H200, CUDA graphs (see the docstring)."""
    return {size: (1.22 + 0.2025 * size) / 1e3 for size in sizes}


class Device:
    """One call at a time, for its size's time; remembers the sizes it ran."""

    def __init__(self, costs: dict[int, float], host_seconds: float) -> None:
        self.costs = costs
        self.host_seconds = host_seconds
        self.lock = threading.Lock()
        self.sizes: collections.Counter[int] = collections.Counter()

    def run(self, rows: int) -> int:
        time.sleep(self.host_seconds)  # the batch's copies in and out, beside other calls
        with self.lock:
            time.sleep(self.costs[rows])
        self.sizes[rows] += 1
        return rows


async def closed_loop(
    costs: dict[int, float], args: argparse.Namespace, told: bool
) -> tuple[float, list[float], collections.Counter[int]]:
    device = Device(costs, args.host_ms / 1e3)
    strategy: Strategy[int] = Strategy(
        key=lambda rows: 0,
        size=lambda rows: rows,
        combine=lambda parts, extra: sum(parts) + extra,
        run=device.run,
        split=lambda rows, sizes: list(sizes),
    )
    batcher = Batcher(
        strategy,
        ThreadPoolExecutor(args.threads),
        max_batch_size=max(costs),
        max_delay=args.delay_ms / 1e3,
        max_queue=10 * args.clients,
        concurrency=args.threads,
        preferred_sizes=sorted(costs),
        costs=costs if told else None,
    )
    latencies: list[float] = []
    stop = time.perf_counter() + args.seconds
    outside = args.outside_ms / 2e3  # half before the request, half after its answer

    async def caller() -> None:
        while time.perf_counter() < stop:
            await asyncio.sleep(random.uniform(0.5, 1.5) * outside)
            started = time.perf_counter()
            await batcher.submit(1, 30.0)
            await asyncio.sleep(random.uniform(0.5, 1.5) * outside)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(args.clients)))
    return len(latencies) / (time.perf_counter() - started), latencies, device.sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=4, help="model calls in flight")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="the batcher's delay")
    parser.add_argument("--outside-ms", type=float, default=4.0)
    parser.add_argument("--host-ms", type=float, default=0.4)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="1,2,4,8,16,32", help="preferred batch sizes")
    parser.add_argument(
        "--costs", default="", help="ms per call of each size, e.g. 1:1.4,8:2.8 (default: BERT)"
    )
    args = parser.parse_args()
    if args.costs:
        costs = {
            int(size): float(ms) / 1e3
            for size, ms in (part.split(":") for part in args.costs.split(","))
        }
    else:
        costs = bert_costs([int(size) for size in args.sizes.split(",")])
    print(
        f"{args.clients} callers, {args.threads} threads, delay {args.delay_ms} ms, "
        f"{args.outside_ms} ms outside per request; sizes {sorted(costs)}"
    )
    for round_ in range(1, args.rounds + 1):
        rates = {}
        for policy, told in (("pad", False), ("cut", True)):
            rate, latencies, sizes = asyncio.run(closed_loop(costs, args, told))
            rates[policy] = rate
            cuts = statistics.quantiles(latencies, n=100)
            print(
                f"round {round_} {policy}: {rate:,.0f} req/s, p50 {cuts[49] * 1e3:.1f} ms, "
                f"p99 {cuts[98] * 1e3:.1f} ms; calls per size {dict(sorted(sizes.items()))}"
            )
        print(f"round {round_} cut/pad: {rates['cut'] / rates['pad']:.2f}")


if __name__ == "__main__":
    main()
