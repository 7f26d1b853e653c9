"""Throughput of one ``gpux serve`` against Ray Serve with 1 and 2 replicas of the same image, in
one run, closed loop at one concurrency (default 32), JSON over HTTP.

Every server gets the same GPUX batching (``--max-batch-size``, ``--max-batch-delay-ms``): in
Ray each replica runs ``gpux serve``'s own app and batcher (gpux/ray/replica.py), behind Ray's
HTTP proxy. The servers run one after another, never together: ``gpux serve`` first, then a
one-node Ray cluster (``ray start --head``) with ``gpux ray deploy --replicas 1``, then the same
deployment updated to 2 replicas, then 1 replica without batching (what GPUX's batcher in a
replica buys behind Ray), then 1 replica that batches with Ray's ``@serve.batch`` instead (same
batch size and wait; the replica runs GPUX's loaded model on the joined rows, in a thread as
GPUX's batcher does, and answers the same Open Inference Protocol JSON): which batcher a replica
should keep. Before each load one answer is checked against in-process ONNX Runtime.

The whole run happens in a network and PID namespace of its own (the script re-runs itself
under ``unshare --net --pid`` with ``lo`` up; root needed), so that Ray registers 127.0.0.1 and nothing
leaves the machine.

    uv run python benchmarks/scale.py [--model minilm|FILE.onnx] [--duration 5]
        [--concurrency 32] [--max-batch-size 32] [--batch-delay-ms 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import serve_load
from benchmarks.serve import MODEL_NAME, build_image, json_body, one_request, resolve_model

RAY = str(Path(sys.executable).with_name("ray"))
RAY_PORT = 8000


def wait_ready(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer 200 in {seconds:.0f} s")


def check_answer(port: int, path: str, body: bytes, expected: np.ndarray) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        outputs = json.loads(answer.read())["outputs"]
    got = np.asarray(outputs[0]["data"], np.float32)
    np.testing.assert_allclose(got, expected.ravel(), rtol=1e-4, atol=1e-4)


def load(port: int, path: str, body: bytes, args: argparse.Namespace) -> dict[str, Any]:
    target = serve_load.HttpTarget(
        "127.0.0.1", port, path, body, {"Content-Type": "application/json"}
    )
    result = serve_load.measure(target, args.concurrency, args.duration, warmup=2.0)
    latencies = result.latencies
    return {
        "rows_per_s": round(result.completed / args.duration, 1),
        "p50_ms": round(1e3 * latencies[len(latencies) // 2], 1) if latencies else None,
        "p99_ms": round(1e3 * latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
        "errors": result.errors,
        "client_cpu_s": round(result.client_cpu_s, 2),
        # Ray's processes leave this process tree (ray start daemonises them), so
        # machine_load.OthersMeter cannot tell them from other people's: the load average is
        # the honest measure of how busy the shared machine was.
        "load_1min": round(os.getloadavg()[0], 1),
    }


def serve_batch_application(home: str, max_batch_size: int, delay_s: float) -> Any:
    """One Ray Serve replica batching with ``@serve.batch``: OIP JSON in, GPUX's loaded model
    (``gpux.load``, CPU) on the rows joined along the batch axis, OIP JSON out. Defined here,
    in the script Ray pickles by value, so replicas need not import the benchmarks package."""
    import asyncio

    import orjson
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    types = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32}

    @serve.deployment(
        ray_actor_options={"num_cpus": 0.5, "runtime_env": {"env_vars": {"GPUX_HOME": home}}},
        max_ongoing_requests=64,
    )
    class RayBatched:
        def __init__(self) -> None:
            import gpux

            self.model = gpux.load(MODEL_NAME, backend="cpu")

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=delay_s)
        async def infer(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
            joined = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
            outputs = await asyncio.to_thread(self.model.run, joined)
            rows = np.cumsum([len(next(iter(f.values()))) for f in feeds])[:-1]
            split = {name: np.split(value, rows) for name, value in outputs.items()}
            return [{name: parts[i] for name, parts in split.items()} for i in range(len(feeds))]

        async def __call__(self, request: Request) -> Response:
            body = orjson.loads(await request.body())
            feed = {
                i["name"]: np.asarray(i["data"], types[i["datatype"]]).reshape(i["shape"])
                for i in body["inputs"]
            }
            outputs = await self.infer(feed)
            answer = {
                "model_name": MODEL_NAME,
                "outputs": [
                    {"name": n, "shape": list(v.shape), "datatype": "FP32", "data": v.ravel()}
                    for n, v in outputs.items()
                ],
            }
            return Response(
                orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY),
                media_type="application/json",
            )

    return RayBatched.bind()


def run(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime as ort

    model = resolve_model(args.model)
    feed = one_request(model, args.sequence)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    expected = session.run(None, feed)[0]
    body = json_body(feed)
    path = f"/v2/models/{MODEL_NAME}/infer"
    batching = ["--max-batch-size", str(args.max_batch_size)]
    batching += ["--max-batch-delay-ms", str(args.batch_delay_ms)]
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gpux-scale-") as folder:
        home = Path(folder)
        build_image(model, home, "cpu")
        env = {**os.environ, "GPUX_HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
        gpux = [sys.executable, "-m", "gpux"]

        port = 8080
        server = subprocess.Popen(
            [*gpux, "serve", MODEL_NAME, "--backend", "cpu", "--port", str(port), *batching],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready")
            check_answer(port, path, body, expected)
            rows["gpux serve"] = load(port, path, body, args)
        finally:
            server.terminate()
            server.wait(timeout=30)

        subprocess.run(
            [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", "6379",
             "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        try:
            unbatched = ["--max-batch-size", "1"]
            for label, replicas, flags in (
                ("Ray Serve, 1 replica", 1, batching),
                ("Ray Serve, 2 replicas", 2, batching),
                # GPUX's batcher in the replica, or none: what batching inside a replica buys.
                ("Ray Serve, 1 replica, unbatched", 1, unbatched),
            ):
                subprocess.run(
                    [*gpux, "ray", "deploy", MODEL_NAME, "--replicas", str(replicas),
                     "--num-cpus", "0.5", "--backend", "cpu", "--route-prefix", "/",
                     "--http-port", str(RAY_PORT), *flags],
                    env={**env, "RAY_ADDRESS": "127.0.0.1:6379"}, check=True, capture_output=True,
                )  # fmt: skip
                wait_ready(f"http://127.0.0.1:{RAY_PORT}/v2/health/ready")
                check_answer(RAY_PORT, path, body, expected)
                rows[label] = load(RAY_PORT, path, body, args)
            import ray
            from ray import serve

            # The same application replaced by one that batches with Ray's @serve.batch.
            ray.init(address="127.0.0.1:6379", log_to_driver=False)
            try:
                application = serve_batch_application(
                    str(home), args.max_batch_size, args.batch_delay_ms / 1000
                )
                serve.run(application, name=MODEL_NAME, route_prefix="/")
                check_answer(RAY_PORT, path, body, expected)
                rows["Ray Serve, 1 replica, @serve.batch"] = load(RAY_PORT, path, body, args)
            finally:
                ray.shutdown()
        finally:
            subprocess.run([RAY, "stop", "--force"], capture_output=True, check=False)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--sequence", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-delay-ms", type=float, default=2.0)
    parser.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.in_namespace:
        inner = [sys.executable, __file__, *sys.argv[1:], "--in-namespace"]
        command = "ip link set lo up && " + " ".join(f"'{part}'" for part in inner)
        # A PID namespace too: `ray stop` finds Ray's processes by name, so there it stops this
        # run's cluster only.
        namespace = ["unshare", "--net", "--pid", "--fork", "--mount-proc"]
        return subprocess.run([*namespace, "sh", "-c", command], check=False).returncode
    rows = run(args)
    print(f"{args.model}, c={args.concurrency}, {args.duration:.0f} s each, {os.cpu_count()} CPUs")
    base = rows["gpux serve"]["rows_per_s"]
    for label, row in rows.items():
        share = row["rows_per_s"] / base if base else float("nan")
        print(
            f"  {label:<36} {row['rows_per_s']:>8.1f} rows/s ({share:.2f}x)  "
            f"p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  errors {row['errors']}  "
            f"load {row['load_1min']}"
        )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
