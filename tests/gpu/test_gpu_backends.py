"""On a real NVIDIA GPU: auto picks CUDA and explains TensorRT, WebGPU runs on the GPU, results
match the CPU. Skipped where there is no NVIDIA GPU with onnxruntime-gpu (CI).

The reference models come from benchmarks/export_reference_models.py (set GPUX_REFERENCE_MODELS
to their folder); without them a generated model is used.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import gpux
from gpux.runtime import discovery, libraries
from tests import generated_models

HAS_CUDA = (
    libraries.nvidia_driver_version() is not None
    and "CUDAExecutionProvider" in discovery.runtime().providers
)
pytestmark = pytest.mark.skipif(
    not HAS_CUDA, reason="needs an NVIDIA GPU with onnxruntime-gpu (CI has neither)"
)

# The stated tolerance: max |GPU - CPU| <= 2e-3 x max |CPU output|. CUDA runs fp32 convolutions
# and GEMMs in TF32 by default (10-bit mantissa), WebGPU's shaders sum in other orders; on
# ResNet-50 the H100 measured 6e-4 of the output scale.
RELATIVE_TOLERANCE = 2e-3


def assert_matches(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    for name, value in expected.items():
        scale = float(np.max(np.abs(value))) or 1.0
        error = float(np.max(np.abs(got[name].astype(np.float64) - value)))
        print(f"  {name}: max |diff| {error:.3g} = {error / scale:.2e} of the output scale")
        assert error <= RELATIVE_TOLERANCE * scale, (name, error, scale)


def _model(tmp_path: Path, reference: str = "resnet50_b1") -> tuple[Path, dict[str, np.ndarray]]:
    """ResNet-50 (``reference``: resnet50_b1, a fixed batch, or resnet50_dyn, a symbolic one)
    when the reference models are there, else the linear model (a symbolic batch)."""
    folder = os.environ.get("GPUX_REFERENCE_MODELS")
    if folder and (Path(folder) / f"{reference}.onnx").exists():
        project = tmp_path / "resnet"
        project.mkdir()
        # A hard link (or a copy): a GPUXfile may not name a symbolic link out of its project.
        source, target = Path(folder) / f"{reference}.onnx", project / f"{reference}.onnx"
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        (project / "GPUXfile").write_text(f"name: resnet\nmodel: ./{reference}.onnx\n")
        pixels = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
        return project, {"pixels": pixels}
    project = tmp_path / "linear"
    generated_models.linear(project / "linear.onnx")
    (project / "GPUXfile").write_text("name: linear\nmodel: ./linear.onnx\n")
    return project, {"x": np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, np.ndarray]]:
    monkeypatch.setenv("GPUX_HOME", str(tmp_path / "home"))
    return _model(tmp_path)


def test_auto_picks_cuda_and_says_why_tensorrt_was_skipped(project: tuple) -> None:
    folder, _ = project
    with gpux.load(folder, warmup=False) as model:
        placement = model.placement
        assert placement.backend == "cuda", placement
        assert "CUDAExecutionProvider" in placement.providers
        if not libraries.find("tensorrt").found:
            assert placement.fallback_reason and "tensorrt" in placement.fallback_reason
            assert "libnvinfer" in placement.fallback_reason
        print("\nauto:", placement.to_json())


def test_cuda_matches_cpu(project: tuple) -> None:
    folder, feed = project
    with gpux.load(folder, backend="cpu", warmup=False) as cpu:
        expected = cpu.run(feed)
    with gpux.load(folder, backend="cuda") as cuda:
        got = cuda.run(feed)
        assignment = cuda.placement.details.get("assignment", {})
        print("\ncuda placement:", assignment)
    assert_matches(got, expected)


def test_webgpu_runs_on_the_gpu_through_vulkan(project: tuple) -> None:
    folder, feed = project
    with gpux.load(folder, backend="cpu", warmup=False) as cpu:
        expected = cpu.run(feed)
    with gpux.load(folder, backend="webgpu") as webgpu:
        placement = webgpu.placement
        assert placement.backend == "webgpu"
        assert placement.details["via"] == "device API"
        assert not placement.device.startswith("CPU")
        assert placement.details["assignment"]["share"] > 0.9
        # Fixed shapes: the graph is captured at load, after GPUX checked its replays.
        assert placement.details["graph_capture"] == {"enabled": True}, placement.details
        got = webgpu.run(feed)
        other = {k: v[::-1].copy() + 1 for k, v in feed.items()}
        got_other = webgpu.run(other)
        print("\nwebgpu:", placement.to_json())
    assert_matches(got, expected)
    with gpux.load(folder, backend="cpu", warmup=False) as cpu:
        assert_matches(got_other, cpu.run(other))


def test_cuda_graphs_replay_gives_the_same_results(project: tuple, tmp_path: Path) -> None:
    folder, feed = project
    gpuxfile = folder / "GPUXfile"
    gpuxfile.write_text(gpuxfile.read_text() + "runtime:\n  cuda:\n    cuda_graphs: true\n")
    with gpux.load(folder, backend="cpu", warmup=False) as cpu:
        expected = cpu.run(feed)
    with gpux.load(folder, backend="cuda") as cuda:
        graphs = cuda.placement.details["cuda_graphs"]
        print("\ncuda graphs:", graphs)
        for _ in range(3):  # capture, then replays with new data in the same buffers
            assert_matches(cuda.run(feed), expected)
        other = {k: v[::-1].copy() + 1 for k, v in feed.items()}
        with gpux.load(folder, backend="cpu", warmup=False) as cpu2:
            again = cpu2.run(other)
        assert_matches(cuda.run(other), again)


def test_cuda_graphs_of_every_batch_size_replay_from_many_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared engine's model threads call the sessions of several batch sizes at once.
    ONNX Runtime keeps a graph per calling thread, so each thread captures its own on its first
    calls of a session, and a capture (CUDA's global mode) failed when another thread ran CUDA
    work (an H100 engine with 6 model threads: "CudaCall ... Error in execution", then the
    engine died); those first calls now run alone (``_CaptureGuard``). 6 threads x 120 calls
    over 4 sizes all answer as the CPU does."""
    from gpux.pipeline.loading import load_image

    monkeypatch.setenv("GPUX_HOME", str(tmp_path / "home"))
    folder, feed = _model(tmp_path, "resnet50_dyn")
    one = {name: value[:1] for name, value in feed.items()}
    gpuxfile = folder / "GPUXfile"
    gpuxfile.write_text(gpuxfile.read_text() + "runtime:\n  cuda:\n    cuda_graphs: true\n")
    sizes = (1, 2, 4, 8)
    feeds = {n: {k: np.repeat(v, n, axis=0) * (1 + n / 10) for k, v in one.items()} for n in sizes}
    with gpux.load(folder, backend="cpu", warmup=False) as cpu:
        image = cpu.image
        expected = {n: cpu.run(feeds[n]) for n in sizes}
    assert image is not None
    model = load_image(image, "cuda", warmup=False, batch_sizes=sizes)
    try:
        graphs = model.placement.details["cuda_graphs"]
        print("\ncuda graphs:", graphs)
        assert graphs["enabled"] and graphs["batch_sizes"] == list(sizes), graphs

        def call(index: int) -> tuple[int, dict[str, np.ndarray]]:
            size = sizes[index % len(sizes)]
            return size, model.run(feeds[size])

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(call, range(120)))
    finally:
        model.close()
    for size, got in answers:
        assert_matches(got, expected[size])


def test_gpus_all_on_one_gpu_is_one_instance_equal_to_backend_cuda(project: tuple) -> None:
    """Issue 18 on a one-GPU machine: ``--gpus all`` places one instance, on GPU 0, and it
    answers exactly as ``--backend cuda`` does (same provider, same device, same kernels)."""
    from gpux.runtime import instances
    from gpux.runtime.instances import InstancePool

    folder, feed = project
    gpus = instances.nvidia_gpus()
    if len(gpus) != 1:
        pytest.skip(f"this check is for one-GPU machines; this one has {len(gpus)}")
    with gpux.load(folder, backend="cuda") as cuda:
        expected = cuda.run(feed)
    with gpux.load(folder, backend="cuda", gpus="all") as pooled:
        backend = pooled.backend
        labels = [i.label for i in backend.instances] if isinstance(backend, InstancePool) else []
        print("\n--gpus all:", pooled.placement.to_json())
        assert instances.instance_count(backend) == 1, labels
        placement = pooled.placement
        assert placement.backend == "cuda" and "CUDAExecutionProvider" in placement.providers
        got = pooled.run(feed)
    # Two sessions may pick different cuDNN algorithms: equal within the GPU tolerance, and
    # the print says whether they were bit-identical.
    print("bit-identical:", all(np.array_equal(got[k], v) for k, v in expected.items()))
    assert_matches(got, expected)


def test_batches_are_joined_into_page_locked_buffers(project: tuple) -> None:
    """What gpux serve does with a batch on the CUDA EP (gpux/runtime/host_memory.py): joined
    into a buffer the CUDA runtime has page-locked, which gives the same answer as the rows
    joined by numpy, and is reused for the next batch of its size."""
    from gpux.runtime import host_memory

    folder, feed = project
    with gpux.load(folder, warmup=False, backend="cuda") as model:
        buffers = host_memory.for_placement(model.placement)
        assert buffers.pins
        joined = {
            name: buffers.join([value[:1], value[1:]] if len(value) > 1 else [value])
            for name, value in feed.items()
        }
        assert buffers.pinned_bytes == sum(v.nbytes for v in joined.values())
        assert_matches(model.run(joined), model.run(feed))
        for array in joined.values():
            buffers.give(array)
        again = {name: buffers.join([value]) for name, value in feed.items()}
        assert all(again[name] is joined[name] for name in feed)
        buffers.close()


def test_copies_through_cuda_match_onnxruntimes() -> None:
    """gpux/runtime/cuda_copy.py, which a CUDA graph's buffers are filled and read with (the
    GIL released): the bytes arrive as ONNX Runtime's own copies see them, both ways, from
    any thread."""
    import onnxruntime as ort

    from gpux.runtime.cuda_copy import CudaCopies

    copies = CudaCopies.load(0)
    assert copies is not None
    host = np.random.default_rng(0).standard_normal((16, 3, 224, 224)).astype(np.float32)
    value = ort.OrtValue.ortvalue_from_shape_and_type(list(host.shape), np.float32, "cuda", 0)
    assert copies.to_device(value.data_ptr(), host)
    assert np.array_equal(value.numpy(), host)
    value.update_inplace(host[::-1].copy())
    back = copies.to_host(value.data_ptr(), host.shape, host.dtype)
    assert back is not None and np.array_equal(back, host[::-1])
    with concurrent.futures.ThreadPoolExecutor(1) as other:  # a thread with its own stream
        assert other.submit(copies.to_device, value.data_ptr(), host + 1).result()
    assert np.array_equal(value.numpy(), host + 1)
