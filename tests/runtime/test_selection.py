"""Backend selection on made-up machines: the order ``auto`` tries backends in, why each one
that is passed over was, and which of those reasons are worth telling the user."""

from __future__ import annotations

import sys

import pytest

from gpux.runtime import discovery, selection
from gpux.runtime.providers import INSTALL_HINTS, PRIORITY
from tests.runtime.conftest import WEBGPU_PLUGIN, Machine, adapter, device

EVERYTHING = [b for b in PRIORITY if b != "cpu"]


def backends(plan: selection.Plan) -> list[str]:
    return [c.backend for c in plan.candidates]


def skipped(plan: selection.Plan) -> dict[str, selection.Skip]:
    return {s.backend: s for s in plan.skipped}


# -- priority ---------------------------------------------------------------------------------


def test_auto_tries_every_offered_backend_fastest_first(machine: Machine) -> None:
    machine.offer(*EVERYTHING).nvidia().libraries.add("rocm")
    plan = selection.plan("auto")
    assert backends(plan) == PRIORITY
    assert [c.provider for c in plan.candidates] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "MIGraphXExecutionProvider",
        "CoreMLExecutionProvider",
        "DmlExecutionProvider",
        "OpenVINOExecutionProvider",
        "WebGpuExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert all(c.via == "providers list" for c in plan.candidates)
    assert plan.skipped == []
    assert plan.explanation() is None


@pytest.mark.parametrize(
    "offered",
    [
        ["cuda", "openvino"],
        ["webgpu", "tensorrt"],
        ["directml", "coreml"],
        ["rocm", "webgpu", "cuda"],
        [],
    ],
)
def test_auto_keeps_the_priority_order_limited_to_what_is_offered(
    machine: Machine, offered: list[str]
) -> None:
    machine.offer(*offered).nvidia().libraries.add("rocm")
    plan = selection.plan("auto")
    assert backends(plan) == [b for b in PRIORITY if b in offered or b == "cpu"]
    assert [s.backend for s in plan.skipped] == [
        b for b in PRIORITY if b not in offered and b != "cpu"
    ]


@pytest.mark.parametrize(
    ("providers", "expected"),
    [
        (["MIGraphXExecutionProvider", "ROCMExecutionProvider"], "MIGraphXExecutionProvider"),
        (["ROCMExecutionProvider"], "ROCMExecutionProvider"),
        (["MIGraphXExecutionProvider"], "MIGraphXExecutionProvider"),
    ],
)
def test_rocm_prefers_migraphx_and_takes_either(
    machine: Machine, providers: list[str], expected: str
) -> None:
    machine.providers = [*providers, "CPUExecutionProvider"]
    machine.libraries = {"migraphx"}
    plan = selection.plan("auto")
    assert [(c.backend, c.provider) for c in plan.candidates] == [
        ("rocm", expected),
        ("cpu", "CPUExecutionProvider"),
    ]


def test_rocm_without_its_libraries_is_skipped(machine: Machine) -> None:
    machine.offer("rocm").vendors.add("AMD")
    plan = selection.plan("auto")
    assert backends(plan) == ["cpu"]
    rocm = skipped(plan)["rocm"]
    assert rocm.reason == "ROCm libraries are missing (libamdhip64 not found)"
    assert rocm.hint == INSTALL_HINTS["rocm"]
    assert rocm.relevant


def test_a_bare_cpu_machine_has_nothing_to_explain(machine: Machine) -> None:
    plan = selection.plan("auto")
    assert backends(plan) == ["cpu"]
    assert [s.backend for s in plan.skipped] == EVERYTHING
    assert not any(s.relevant for s in plan.skipped)
    assert plan.explanation() is None
    cuda = skipped(plan)["cuda"]
    assert (
        cuda.reason
        == "not in this ONNX Runtime build (onnxruntime 1.32.0 offers CPUExecutionProvider)"
    )
    assert cuda.hint == f"{INSTALL_HINTS['cuda']}, or use --backend auto"
    assert cuda.to_json() == {"backend": "cuda", "reason": cuda.reason, "hint": cuda.hint}


def test_the_reason_names_every_installed_runtime_package(machine: Machine) -> None:
    machine.distributions = ["onnxruntime 1.32.0", "onnxruntime-gpu 1.32.0"]
    reason = skipped(selection.plan("cuda"))["cuda"].reason
    assert reason == (
        "not in this ONNX Runtime build (onnxruntime 1.32.0, onnxruntime-gpu 1.32.0 offers "
        "CPUExecutionProvider)"
    )
    machine.distributions = []
    assert "(no onnxruntime package offers" in selection.plan("cuda").skipped[0].reason


# -- NVIDIA libraries -------------------------------------------------------------------------


def test_tensorrt_listed_without_libnvinfer_falls_to_cuda_and_says_why(machine: Machine) -> None:
    machine.offer("tensorrt", "cuda").nvidia("tensorrt")
    plan = selection.plan("auto")
    assert backends(plan) == ["cuda", "cpu"]
    tensorrt = skipped(plan)["tensorrt"]
    assert tensorrt.reason == (
        "ONNX Runtime lists TensorrtExecutionProvider but TensorRT's libraries are missing "
        "(libnvinfer.so.10 not found)"
    )
    assert "tensorrt-cu13" in tensorrt.hint
    assert "--backend cuda" in tensorrt.hint
    assert tensorrt.relevant
    assert plan.explanation() == f"tensorrt: {tensorrt.reason}"


def test_no_nvidia_driver_skips_cuda_and_tensorrt_naming_libcuda(machine: Machine) -> None:
    machine.offer("tensorrt", "cuda").nvidia("nvidia-driver")
    plan = selection.plan("auto")
    assert backends(plan) == ["cpu"]
    for name in ("tensorrt", "cuda"):
        skip = skipped(plan)[name]
        assert skip.reason == "no NVIDIA driver (libcuda not found)"
        assert skip.hint.startswith("install the NVIDIA driver")
        assert skip.relevant
    assert machine.preloads == 0  # no driver: nothing to preload
    explained = plan.explanation() or ""
    assert explained.startswith(
        "tensorrt: no NVIDIA driver (libcuda not found); cuda: no NVIDIA driver (libcuda not found)"
    )


def test_missing_cudnn_names_cudnn_9(machine: Machine) -> None:
    machine.offer("cuda").nvidia("cudnn")
    skip = skipped(selection.plan("auto"))["cuda"]
    assert skip.reason == "cuDNN 9 is missing (libcudnn.so.9 not found)"
    assert skip.hint == "pip install nvidia-cudnn-cu13"
    assert machine.preloads == 1  # ONNX Runtime was asked to preload the nvidia-* wheels first


def test_missing_cuda_runtime_quotes_what_the_preload_said(machine: Machine) -> None:
    machine.offer("cuda").nvidia("cuda-runtime")
    machine.preload_error = "libcudart.so.13: cannot open shared object file"
    skip = skipped(selection.plan("auto"))["cuda"]
    assert skip.reason == (
        "the CUDA runtime is missing (libcudart.so.13 / libcudart.so.12 not found); "
        "preload said: libcudart.so.13: cannot open shared object file"
    )
    assert "gpux[cuda]" in skip.hint


def test_a_working_best_backend_has_no_fallback_to_explain(machine: Machine) -> None:
    # NVIDIA hardware makes directml and webgpu worth a word when auto falls below them, but
    # they rank below TensorRT: running on TensorRT is no fallback.
    machine.offer("tensorrt", "cuda").nvidia()
    plan = selection.plan("auto")
    assert backends(plan) == ["tensorrt", "cuda", "cpu"]
    assert skipped(plan)["webgpu"].relevant
    assert plan.explanation() is None
    assert plan.explanation("cpu") == f"webgpu: {skipped(plan)['webgpu'].reason}"


def test_explanation_of_a_later_candidate_lists_what_ranks_above_it(machine: Machine) -> None:
    machine.offer("tensorrt").nvidia("tensorrt").lavapipe()
    plan = selection.plan("auto")
    assert backends(plan) == ["cpu"]
    explained = plan.explanation()
    assert explained is not None
    assert [part.split(":")[0] for part in explained.split("; ")] == ["tensorrt", "cuda", "webgpu"]


# -- plugin EPs -------------------------------------------------------------------------------


def test_a_plugin_with_a_gpu_device_is_used_through_the_device_api(machine: Machine) -> None:
    gpu = device("WebGpuExecutionProvider", "GPU", "AMD", Description="Radeon RX 7900")
    machine.plugins = [WEBGPU_PLUGIN]
    machine.devices.append(gpu)
    plan = selection.plan("auto")
    assert backends(plan) == ["webgpu", "cpu"]
    webgpu = plan.candidates[0]
    assert webgpu.provider == "WebGpuExecutionProvider"
    assert webgpu.devices == [gpu]
    assert webgpu.via == "device API"
    assert plan.candidates[1].via == "providers list"  # the CPU is in every build


def test_a_plugin_without_devices_is_skipped_listing_the_adapters(machine: Machine) -> None:
    machine.lavapipe()
    plan = selection.plan("auto", describe_adapters=True)
    assert backends(plan) == ["cpu"]
    webgpu = skipped(plan)["webgpu"]
    assert webgpu.reason == (
        "the WebGpuExecutionProvider plugin is installed but reports no GPU device (adapters wgpu "
        "sees: llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, software), llvmpipe (LLVM 15.0.6, 256 "
        "bits) (OpenGL, software))"
    )
    assert "software adapters such as lavapipe are not used" in webgpu.hint
    assert webgpu.relevant  # an installed plugin is worth a word even with no GPU vendor
    assert plan.explanation() == f"webgpu: {webgpu.reason}"


def test_a_plugin_that_only_offers_a_cpu_device_does_not_count(machine: Machine) -> None:
    machine.lavapipe()
    machine.adapters = [adapter("AMD Radeon 780M", "AMD", "IntegratedGPU")]
    machine.devices.append(device("WebGpuExecutionProvider", "CPU", "Mesa"))
    webgpu = skipped(selection.plan("auto", describe_adapters=True))["webgpu"]
    assert "reports no GPU device (adapters wgpu sees: AMD Radeon 780M (Vulkan))" in webgpu.reason
    # The run path never enumerates adapters (about 300 ms); it points at `gpux doctor`.
    quick = skipped(selection.plan("auto"))["webgpu"]
    assert "reports no GPU device ('gpux doctor' lists the adapters)" in quick.reason


def test_a_plugin_with_no_adapter_at_all_says_none(machine: Machine) -> None:
    machine.plugins = [WEBGPU_PLUGIN]
    plan = selection.plan("webgpu", describe_adapters=True)
    assert "(adapters wgpu sees: none)" in plan.skipped[0].reason


def test_a_plugin_also_in_the_providers_list_still_needs_the_device_api(machine: Machine) -> None:
    # ONNX Runtime >= 1.31 lists a registered plugin EP among the classic providers too; asked
    # for by name there it silently runs on the CPU, so only its devices count.
    machine.offer("webgpu").lavapipe()
    plan = selection.plan("webgpu")
    assert plan.candidates == []
    assert plan.skipped[0].reason.startswith(
        "the WebGpuExecutionProvider plugin is installed but reports no GPU device"
    )
    gpu = device("WebGpuExecutionProvider", "GPU", "Intel")
    machine.devices.append(gpu)
    plan = selection.plan("webgpu")
    assert [(c.backend, c.via, c.devices) for c in plan.candidates] == [
        ("webgpu", "device API", [gpu])
    ]


# -- relevance: which passed-over backends are worth telling an `auto` user --------------------


@pytest.mark.parametrize(
    ("vendor", "relevant"),
    [
        ("NVIDIA", {"tensorrt", "cuda", "webgpu"}),
        ("AMD", {"rocm", "webgpu"}),
        ("Intel", {"openvino", "webgpu"}),
        ("Qualcomm", {"webgpu"}),
    ],
)
def test_missing_backends_matter_only_with_matching_hardware(
    machine: Machine, vendor: str, relevant: set[str]
) -> None:
    machine.vendors = {vendor}
    plan = selection.plan("auto")
    assert backends(plan) == ["cpu"]
    expected = relevant | ({"directml"} if sys.platform == "win32" else set())
    assert {s.backend for s in plan.skipped if s.relevant} == expected


@pytest.mark.parametrize(
    ("backend", "vendor", "platform"),
    [("directml", "NVIDIA", "win32"), ("coreml", "Apple", "darwin")],
)
def test_platform_bound_backends_matter_only_on_their_platform(
    machine: Machine, monkeypatch: pytest.MonkeyPatch, backend: str, vendor: str, platform: str
) -> None:
    runtime = machine.runtime()
    monkeypatch.setattr(sys, "platform", platform)
    outcome = selection._check(backend, runtime, {vendor})
    assert isinstance(outcome, selection.Skip) and outcome.relevant
    monkeypatch.setattr(sys, "platform", "linux")
    outcome = selection._check(backend, runtime, {vendor})
    assert isinstance(outcome, selection.Skip) and not outcome.relevant


def test_check_on_its_own(machine: Machine) -> None:
    runtime = machine.runtime()
    assert selection._check("cpu", runtime, set()) == selection.Candidate(
        "cpu", "CPUExecutionProvider"
    )
    cuda = selection._check("cuda", runtime, {"NVIDIA"})
    assert isinstance(cuda, selection.Skip)
    assert cuda.relevant and cuda.reason.startswith("not in this ONNX Runtime build")
    cuda = selection._check("cuda", runtime, set())
    assert isinstance(cuda, selection.Skip) and not cuda.relevant
    machine.offer("cuda").nvidia()
    assert selection._check("cuda", machine.runtime(), set()) == selection.Candidate(
        "cuda", "CUDAExecutionProvider"
    )


# -- explicit requests ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", EVERYTHING)
def test_an_explicit_unavailable_backend_gives_no_candidates(
    machine: Machine, backend: str
) -> None:
    machine.lavapipe()
    plan = selection.plan(backend)
    assert plan.requested == backend
    assert plan.candidates == []  # never a quiet CPU run
    assert [s.backend for s in plan.skipped] == [backend]
    assert plan.skipped[0].reason
    assert plan.skipped[0].hint


def test_an_explicit_available_backend_is_the_only_candidate(machine: Machine) -> None:
    machine.offer("tensorrt", "cuda").nvidia()
    plan = selection.plan("cuda")
    assert [(c.backend, c.provider) for c in plan.candidates] == [("cuda", "CUDAExecutionProvider")]
    assert plan.skipped == []
    assert backends(selection.plan("cpu")) == ["cpu"]


def test_the_real_machine_plans_without_error() -> None:
    """No fakes: whatever this machine has, auto ends on a candidate and the CPU is one."""
    plan = selection.plan("auto")
    assert plan.candidates and plan.candidates[-1].backend == "cpu"
    assert {c.backend for c in plan.candidates} | {s.backend for s in plan.skipped} == set(PRIORITY)
    assert isinstance(discovery.runtime().providers, list)
