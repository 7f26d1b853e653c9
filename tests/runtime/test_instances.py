"""Model instances on several devices (gpux/runtime/instances.py): ``--gpus`` on made-up
machines of 1, 2 and 8 GPUs, CUDA's numbering, the pool's routing to the least busy instance,
failures reported while the others serve, and real CPU instances with the same answers."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpux.errors import BackendError, UsageError
from gpux.runtime.backend import Backend, Placement
from gpux.runtime.instances import (
    Gpu,
    GpuRequest,
    InstancePlan,
    InstancePool,
    load_all,
    parse_nvidia_smi,
    plan,
    visible,
)
from tests import generated_models


def machine(count: int) -> list[Gpu]:
    return [Gpu(i, "NVIDIA H200", 141 * 2**30, f"GPU-{i:04d}-aaaa") for i in range(count)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all", GpuRequest(every=True)),
        ("ALL ", GpuRequest(every=True)),
        ("2", GpuRequest(count=2)),
        ("0,1", GpuRequest(ids=(0, 1))),
        ("3,1", GpuRequest(ids=(3, 1))),
        ("device=1", GpuRequest(ids=(1,))),
        ("1,", GpuRequest(ids=(1,))),
        (2, GpuRequest(count=2)),
        ([0, 2], GpuRequest(ids=(0, 2))),
    ],
)
def test_gpu_requests_parse(text: Any, expected: GpuRequest) -> None:
    assert GpuRequest.parse(text) == expected


@pytest.mark.parametrize("text", ["al", "0", "-1", "1,1", "a,b", "", ",", "65", True, [], [-1]])
def test_bad_gpu_requests_name_the_forms(text: Any) -> None:
    with pytest.raises(UsageError) as caught:
        GpuRequest.parse(text)
    assert "all, a count (2), or device ids" in str(caught.value.hint)


@pytest.mark.parametrize("gpus", [1, 2, 8])
def test_all_gives_one_instance_per_gpu(gpus: int) -> None:
    plans = plan(GpuRequest(every=True), machine(gpus), "cuda", cores=16)
    assert [p.device for p in plans] == list(range(gpus))
    assert [p.label for p in plans] == [f"cuda:{i}" for i in range(gpus)]


def test_counts_and_ids_on_made_up_machines() -> None:
    eight = machine(8)
    assert [p.device for p in plan(GpuRequest(count=3), eight, "cuda", 16)] == [0, 1, 2]
    assert [p.device for p in plan(GpuRequest(ids=(7, 2)), eight, "tensorrt", 16)] == [7, 2]
    assert [p.device for p in plan(GpuRequest(count=1), machine(1), "cuda", 16)] == [0]
    with pytest.raises(UsageError) as caught:
        plan(GpuRequest(count=3), machine(2), "cuda", 16)
    assert "sees 2 GPU(s) (0, 1)" in caught.value.message
    with pytest.raises(UsageError) as caught:
        plan(GpuRequest(ids=(0, 5)), machine(2), "cuda", 16)
    assert "no GPU 5 (cuda sees 0, 1)" in caught.value.message
    with pytest.raises(UsageError, match="sees no GPU"):
        plan(GpuRequest(every=True), [], "cuda", 16)


def test_cpu_copies_share_the_cores() -> None:
    plans = plan(GpuRequest(count=2), [], "cpu", cores=8)
    assert [(p.device, p.threads, p.label) for p in plans] == [(None, 4, "cpu:0")] * 2
    assert len(plan(GpuRequest(every=True), [], "cpu", cores=8)) == 1
    assert plan(GpuRequest(count=3), [], "cpu", cores=2)[0].threads == 1
    with pytest.raises(UsageError, match="names devices, but the cpu backend has one"):
        plan(GpuRequest(ids=(0, 1)), [], "cpu", cores=8)


def test_cuda_numbering_follows_cuda_visible_devices() -> None:
    smi = (
        "0, NVIDIA H200, 143771, GPU-aaaa-0000\n"
        "1, NVIDIA H200, 143771, GPU-bbbb-1111\n"
        "2, NVIDIA H100 80GB HBM3, 81559, GPU-cccc-2222\n"
        "garbage line\n"
    )
    gpus = parse_nvidia_smi(smi)
    assert [(g.index, g.memory_bytes) for g in gpus] == [
        (0, 143771 * 2**20),
        (1, 143771 * 2**20),
        (2, 81559 * 2**20),
    ]
    assert visible(gpus, None) == gpus
    assert [(g.index, g.uuid) for g in visible(gpus, "2,0")] == [
        (0, "GPU-cccc-2222"),
        (1, "GPU-aaaa-0000"),
    ]
    assert [g.uuid for g in visible(gpus, "GPU-bbbb")] == ["GPU-bbbb-1111"]
    # CUDA stops at the first entry that names no GPU.
    assert [g.uuid for g in visible(gpus, "1,7,0")] == ["GPU-bbbb-1111"]
    assert visible(gpus, "") == []


class Slow(Backend):
    """A made-up instance: each call takes ``seconds``; records how many ran at once."""

    name = "slow"

    def __init__(self, label: str, seconds: float, log: list[str]) -> None:
        self.label, self.seconds, self.log = label, seconds, log

    @classmethod
    def load(cls, *args: Any, **kwargs: Any) -> Backend:
        raise NotImplementedError

    def run(self, feed: Any) -> dict[str, np.ndarray]:
        self.log.append(self.label)
        time.sleep(self.seconds)
        return {"y": np.asarray(feed["x"]) * 2}

    @property
    def placement(self) -> Placement:
        return Placement("cuda", ["CUDAExecutionProvider"], self.label, "cuda")

    def close(self) -> None:
        pass


def test_calls_go_to_the_least_busy_instance() -> None:
    log: list[str] = []
    pool = InstancePool(
        [(f"cuda:{i}", Slow(f"cuda:{i}", 0.2, log)) for i in range(2)], batch_input="x"
    )
    seen: list[str] = []
    pool.on_call = lambda index, label, rows, seconds: seen.append(f"{index} {label}")
    # One after another: the calls take turns, so light load spreads too.
    for _ in range(4):
        pool.run({"x": np.ones((3, 2))})
    assert log == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    # Two at once: each instance gets one, never both on one while the other idles.
    log.clear()
    threads = [threading.Thread(target=pool.run, args=({"x": np.ones((1, 2))},)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(log) == ["cuda:0", "cuda:1"]
    stats = pool.stats()
    assert [(s["device"], s["calls"], s["rows"], s["in_flight"]) for s in stats] == [
        ("cuda:0", 3, 7, 0),
        ("cuda:1", 3, 7, 0),
    ]
    assert all(s["busy_seconds"] >= 0.6 for s in stats)
    assert len(seen) == 6
    placement = pool.placement
    assert placement.device == "cuda:0, cuda:1"
    assert [i["device"] for i in placement.details["instances"]] == ["cuda:0", "cuda:1"]


def test_an_instance_that_fails_is_reported_and_the_others_serve() -> None:
    log: list[str] = []

    def load_one(one: InstancePlan) -> Backend:
        if one.device == 1:
            raise BackendError("CUDA error: out of memory on device 1", "free it")
        return Slow(one.label, 0.0, log)

    plans = [InstancePlan("cuda", i) for i in range(3)]
    pool = load_all(plans, load_one)
    assert [i.label for i in pool.instances] == ["cuda:0", "cuda:2"]
    assert pool.placement.details["failed_instances"] == [
        {"instance": "cuda:1", "error": "CUDA error: out of memory on device 1"}
    ]
    assert pool.stats()[-1] == {
        "instance": None,
        "device": "cuda:1",
        "error": "CUDA error: out of memory on device 1",
    }
    for _ in range(4):
        pool.run({"x": np.ones(1)})
    assert sorted(set(log)) == ["cuda:0", "cuda:2"]

    def broken(one: InstancePlan) -> Backend:
        raise BackendError(f"no device {one.device}", "check the driver")

    with pytest.raises(BackendError, match=r"no instance started \(cuda:0: no device 0; cuda:1"):
        load_all(plans[:2], broken)
    with pytest.raises(BackendError, match="no device 0"):
        load_all(plans[:1], broken)


def test_cpu_instances_answer_as_one_session(tmp_path: Path, gpux_home: Path) -> None:
    import gpux
    from gpux.api import load_image

    folder = tmp_path / "p"
    folder.mkdir()
    generated_models.linear(folder / "linear.onnx")
    (folder / "GPUXfile").write_text("name: lin\nmodel: ./linear.onnx\n")
    image = gpux.build(str(folder), backend="cpu").image
    one = load_image(image, "cpu")
    two = load_image(image, "cpu", gpus="2")
    assert isinstance(two.backend, InstancePool)
    assert [i.label for i in two.backend.instances] == ["cpu:0", "cpu:0"]
    assert [i["backend"] for i in two.placement.details["instances"]] == ["cpu", "cpu"]
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    for _ in range(4):
        np.testing.assert_allclose(two.run({"x": x})["y"], one.run({"x": x})["y"], rtol=1e-6)
    assert [s["calls"] for s in two.backend.stats()] == [3, 3]  # 1 warm-up each, then 2 each
    with pytest.raises(UsageError, match="names devices, but the cpu backend has one"):
        load_image(image, "cpu", gpus="0,1")
    two.close()
    one.close()


def test_auto_with_gpus_never_ends_on_the_cpu(tmp_path: Path, gpux_home: Path) -> None:
    """This machine has no GPU backend: asking for GPUs is refused, not served on the CPU."""
    import gpux
    from gpux.api import load_image
    from gpux.runtime import selection

    if any(c.backend != "cpu" for c in selection.plan("auto").candidates):
        pytest.skip("this machine has a GPU backend")
    folder = tmp_path / "p"
    folder.mkdir()
    generated_models.linear(folder / "linear.onnx")
    (folder / "GPUXfile").write_text("name: lin\nmodel: ./linear.onnx\nruntime:\n  gpus: all\n")
    image = gpux.build(str(folder), backend="cpu").image
    with pytest.raises(BackendError, match="--gpus all: no GPU backend works here") as caught:
        load_image(image, "auto")
    assert "--backend cpu --gpus N" in str(caught.value.hint)
