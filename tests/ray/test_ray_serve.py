"""Ray Serve on a real two-node Ray cluster: a head and a second node with one logical GPU, in a
network and PID namespace of their own (``unshare --net --pid``, then ``lo`` up) so that Ray
registers only 127.0.0.1 and ``ray stop`` sees no other Ray. One cluster for the module: tests/ray/cluster_driver.py deploys and sends the
traffic inside the namespace and reports what it saw; the tests assert on that report.

About three minutes on two busy cores, most of it Ray starting its processes (two
``ray start`` take ~50 s, five replicas ~50 s)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests import generated_models
from tests.cli.expect import BoundCLI
from tests.ray.cluster_driver import INPUT, KILL_REQUESTS

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (gpux[ray])")
pytestmark = pytest.mark.slow

IMAGES = ("linear-a:1", "linear-b:1", "linear-c:1")
# Its own network (Ray registers only 127.0.0.1) and its own processes: `ray stop` finds Ray's
# processes by name, so in a PID namespace it stops this cluster only, and whatever the cluster
# left behind ends with the namespace.
NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--mount-proc"]
REPO = Path(__file__).resolve().parents[2]


def can_make_network_namespace() -> str | None:
    """Why a private network namespace cannot be made here, or None."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare (util-linux) and ip (iproute2)"
    probe = subprocess.run(
        [*NAMESPACE, "sh", "-c", "ip link set lo up"], capture_output=True, check=False
    )
    return None if probe.returncode == 0 else "unshare --net needs root (or CAP_SYS_ADMIN)"


def build_images(cli: BoundCLI, folder: Path) -> None:
    """Three linear models that differ in their bias (+0, +10, +20), so that each answer shows
    which image made it."""
    for index, image in enumerate(IMAGES):
        project = folder / image.partition(":")[0]
        model = generated_models.linear(project / "linear.onnx")
        proto = onnx.load(model)
        for initializer in proto.graph.initializer:
            if initializer.name == "b":
                bias = generated_models.LINEAR_B + np.float32(10 * index)
                initializer.CopyFrom(numpy_helper.from_array(bias, "b"))
        onnx.save(proto, model)
        (project / "GPUXfile").write_text("model: ./linear.onnx\n")
        cli.ok("build", str(project), "-t", image, "-q")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], BoundCLI]:
    reason = can_make_network_namespace()
    if reason:
        pytest.skip(reason)
    cli = BoundCLI(tmp_path_factory.mktemp("ray-home"))
    build_images(cli, tmp_path_factory.mktemp("ray-projects"))
    driver = f"ip link set lo up && {sys.executable} -m tests.ray.cluster_driver"
    env = {**os.environ, "GPUX_HOME": str(cli.home), "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(
        [*NAMESPACE, "sh", "-c", f"{driver} {' '.join(IMAGES)}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    report: dict[str, Any] = json.loads(lines[-1])
    assert "failed" not in report, report.get("failed")
    print("ray cluster timings:", report["timings"])  # shown with pytest -s
    return report, cli


def run_outputs(cli: BoundCLI, image: str) -> np.ndarray:
    """What ``gpux run`` answers for the driver's input."""
    answer = cli.json("run", image, "-i", f"x={json.dumps(INPUT)}")
    return np.asarray(answer["outputs"]["y"]["data"], np.float32).ravel()


def test_two_images_with_two_replicas_each_spread_the_requests(
    cluster: tuple[dict[str, Any], BoundCLI],
) -> None:
    report, _ = cluster
    for image in IMAGES[:2]:
        answers = report["spread"][image]["answers"]
        assert {a["status"] for a in answers} == {200}
        by_replica = Counter(a["replica"] for a in answers)
        assert len(by_replica) == 2, by_replica  # both replicas answered
        assert len({a.rpartition("pid=")[2] for a in by_replica}) == 2  # two processes
        replicas = report["spread"][image]["replicas"].values()
        assert len(replicas) == 2
        for replica in replicas:  # GPUX's placement proof, per replica
            assert replica["models"][image]["backend"] == "cpu"
            assert replica["models"][image]["providers"] == ["CPUExecutionProvider"]


def test_ray_places_replicas_by_their_resources(cluster: tuple[dict[str, Any], BoundCLI]) -> None:
    """linear-b asked for half a GPU: Ray put both replicas on the second node, which alone has
    one, and gave each that GPU; GPUX reports that the model still runs on the CPU."""
    report, _ = cluster
    replicas_b = list(report["spread"]["linear-b:1"]["replicas"].values())
    assert {r["node_id"] for r in replicas_b} != {report["head_node"]}
    assert len({r["node_id"] for r in replicas_b}) == 1
    assert all(r["ray_gpu_ids"] == ["0"] and r["cuda_visible_devices"] == "0" for r in replicas_b)
    for replica in report["spread"]["linear-a:1"]["replicas"].values():
        assert replica["ray_gpu_ids"] == []


def test_outputs_equal_gpux_run(cluster: tuple[dict[str, Any], BoundCLI]) -> None:
    report, cli = cluster
    served = {image: report["spread"][image]["answers"] for image in IMAGES[:2]}
    for image, answers in report["multiplexed"]["answers"].items():
        served.setdefault(image, []).extend(answers)
    assert set(served) == set(IMAGES)
    for image, answers in served.items():
        expected = run_outputs(cli, image)
        for answer in answers:
            np.testing.assert_array_equal(np.asarray(answer["outputs"]["y"], np.float32), expected)
        if image in report["spread"]:  # /predict: the first row, as gpux serve answers it
            predicted = report["spread"][image]["predict"]
            assert predicted["status"] == 200 and predicted["backend"] == "cpu"
            got = np.asarray(predicted["result"]["y"], np.float32)
            np.testing.assert_array_equal(got, expected[:3])


def test_a_multiplexed_replica_serves_three_images(
    cluster: tuple[dict[str, Any], BoundCLI],
) -> None:
    report, _ = cluster
    mux = report["multiplexed"]
    answers = [a for image in IMAGES for a in mux["answers"][image]]
    assert {a["status"] for a in answers} == {200}
    assert len({a["replica"] for a in answers}) == 1  # one replica, three images
    assert sorted(mux["replica"]["models"]) == sorted(IMAGES)
    refused = mux["without_header"]
    assert refused["status"] == 400
    assert "serve_multiplexed_model_id" in refused["error"]


def test_a_replica_killed_under_load_answers_every_request_and_is_replaced(
    cluster: tuple[dict[str, Any], BoundCLI],
) -> None:
    """SIGKILL of one of linear-a's two replicas while 6 clients send requests. What Ray does: the
    requests in flight on the killed replica at that moment (at most the 6 the clients had out)
    are answered 500 by Ray's proxy, which does not retry a request its replica died with; every
    later request goes to the live replica; Ray starts a replacement. With one retry per
    request in the client (Ray's fault-tolerance guide asks clients for retries), every request
    is answered with its outputs (seen: 0 and 2 of 120 needed the retry in two runs)."""
    report, _ = cluster
    killed = report["killed"]
    answers = killed["answers"]
    assert killed["killed"]["pid"] in killed["killed"]["before"]
    assert len(answers) == KILL_REQUESTS
    assert {a["status"] for a in answers} == {200}, [a for a in answers if a["status"] != 200]
    retried = [a for a in answers if "first_status" in a]
    assert len(retried) <= 6, retried
    assert {a["first_status"] for a in retried} <= {500, 503}
    assert not any("first_status" in a for a in answers[-40:])  # after the kill: the live one
    replaced = killed["replaced"]
    assert replaced is not None, "Ray did not replace the killed replica in 120 s"
    assert killed["killed"]["pid"] not in replaced["pids"]


def test_the_command_line_prints_its_routes(cluster: tuple[dict[str, Any], BoundCLI]) -> None:
    report, _ = cluster
    by_name = {d["application"]: d for d in report["deployed"]}
    assert by_name["linear-a"]["url"] == "http://127.0.0.1:8000/linear-a"
    assert by_name["mux"] == {
        "application": "mux",
        "images": list(IMAGES),
        "url": "http://127.0.0.1:8000",
        "multiplexed": True,
    }


def test_replicas_ray_cannot_place_fail_in_bounded_time_and_leave_nothing(
    cluster: tuple[dict[str, Any], BoundCLI],
) -> None:
    """``gpux ray deploy linear-c --timeout 2`` asking for what no node has (2 GPUs, 64 CPUs) or
    what is taken (the second node's GPU, held by linear-b): it exits 10 within seconds (Ray's
    own ``serve.run`` waits forever), the message names the application, the resources one
    replica needs and what the cluster has, and the half-made application is gone while the
    others still run."""
    report, _ = cluster
    found = report["unplaceable"]
    for case in ("gpus_no_node_has", "cpus_no_node_has", "gpu_taken"):
        assert found[case]["rc"] == 10, found[case]
        assert found[case]["seconds"] < 60, found[case]
        assert "'linear-c' (0 of 1 replicas running)" in found[case]["stderr"], found[case]
        assert "application was removed" in found[case]["stderr"]
    no_gpu = found["gpus_no_node_has"]["stderr"]
    assert "needs CPU 1, GPU 2 and no node of the cluster has that" in no_gpu, no_gpu
    assert "the largest has CPU 2, GPU 1" in no_gpu and "--num-gpus" in no_gpu
    no_cpu = found["cpus_no_node_has"]["stderr"]
    assert "needs CPU 64 and no node of the cluster has that" in no_cpu, no_cpu
    taken = found["gpu_taken"]["stderr"]
    assert "which some node has, but the cluster has only CPU" in taken, taken
    assert "GPU 0 free" in taken and "--replicas" in taken
    assert "linear-c" not in found["applications"]
    assert found["applications"] == {"linear-a": "RUNNING", "linear-b": "RUNNING", "mux": "RUNNING"}
