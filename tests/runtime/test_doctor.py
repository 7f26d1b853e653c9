"""``gpux doctor`` as data on made-up machines, and the discovery pieces it is built from."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

import gpux.api
from gpux.runtime import discovery, doctor, libraries, selection
from gpux.runtime.providers import PRIORITY
from tests.runtime.conftest import WEBGPU_PLUGIN, Machine, adapter, device


def test_the_lavapipe_box(machine: Machine) -> None:
    machine.lavapipe()
    report = doctor.diagnose()
    json.dumps(report)  # --json prints it as is
    assert report["adapters"][0] == {
        "name": "llvmpipe (LLVM 15.0.6, 256 bits)",
        "vendor": "Mesa",
        "vendor_id": 0x10005,
        "type": "CPU",
        "backend": "Vulkan",
        "description": "",
    }
    assert report["adapter_error"] is None
    assert report["onnxruntime"]["plugins"] == [
        {
            "module": "onnxruntime_ep_webgpu",
            "library": "/site-packages/libwebgpu.so",
            "eps": ["WebGpuExecutionProvider"],
            "error": None,
        }
    ]
    auto = report["auto"]
    assert auto["order"] == PRIORITY
    assert auto["choice"] == "cpu"
    assert auto["candidates"] == [
        {"backend": "cpu", "provider": "CPUExecutionProvider", "via": "providers list"}
    ]
    assert [s["backend"] for s in auto["skipped"]] == PRIORITY[:-1]
    assert [s["backend"] for s in auto["skipped"] if s["relevant"]] == ["webgpu"]
    [hint] = report["hints"]
    assert hint.startswith("webgpu: the WebGpuExecutionProvider plugin is installed but reports ")
    assert ". Fix: run on a machine with a Vulkan, Metal or D3D12 GPU" in hint
    assert "model" not in report


def test_nvidia_section(machine: Machine) -> None:
    machine.offer("tensorrt", "cuda").nvidia("tensorrt")
    report = doctor.diagnose()
    nvidia = report["nvidia"]
    assert nvidia["driver"] == "580.65.06"
    assert nvidia["gpus"] == ["NVIDIA GeForce RTX 4090"]
    found = {lib["name"]: lib["found"] for lib in nvidia["libraries"]}
    assert found == {
        "nvidia-driver": "libcuda.so.1",
        "cuda-runtime": "libcudart.so.13",
        "cublas": "libcublas.so.13",
        "cudnn": "libcudnn.so.9",
        "tensorrt": None,
    }
    assert report["auto"]["choice"] == "cuda"
    assert any(
        h.startswith("tensorrt: ONNX Runtime lists TensorrtExecutionProvider")
        for h in report["hints"]
    )
    assert not any("onnxruntime-gpu is not installed" in h for h in report["hints"])


def test_an_nvidia_gpu_without_onnxruntime_gpu(machine: Machine) -> None:
    machine.nvidia()
    hints = doctor.diagnose()["hints"]
    assert (
        "NVIDIA GPU found but onnxruntime-gpu is not installed: pip install 'gpux[cuda]'" in hints
    )
    # and, with no plugin either, the WebGPU route
    assert any(h.startswith("NVIDIA GPU found but no GPU backend is installed") for h in hints)


def test_a_gpu_without_any_gpu_backend_points_to_webgpu(machine: Machine) -> None:
    machine.vendors = {"AMD", "Intel"}
    hints = doctor.diagnose()["hints"]
    assert hints[0] == (
        "AMD/Intel GPU found but no GPU backend is installed; the WebGPU backend runs on any "
        "Vulkan/Metal/D3D12 GPU: pip install 'gpux[cpu,webgpu]'"
    )
    assert any(h.startswith("rocm: not in this ONNX Runtime build") for h in hints)
    assert any(h.startswith("openvino: not in this ONNX Runtime build") for h in hints)


def test_a_working_plugin_gpu(machine: Machine) -> None:
    machine.plugins = [WEBGPU_PLUGIN]
    machine.vendors = {"AMD"}
    machine.adapters = [adapter("AMD Radeon RX 7900 XTX", "AMD", "DiscreteGPU")]
    machine.devices.append(device("WebGpuExecutionProvider", "GPU", "AMD"))
    report = doctor.diagnose()
    assert report["auto"]["choice"] == "webgpu"
    assert report["auto"]["candidates"][0]["via"] == "device API"
    assert report["onnxruntime"]["devices"][1]["ep"] == "WebGpuExecutionProvider"
    assert not any("no GPU backend is installed" in h for h in report["hints"])


def test_two_onnx_runtime_packages_are_flagged(machine: Machine) -> None:
    machine.distributions = ["onnxruntime 1.32.0", "onnxruntime-gpu 1.32.0"]
    hints = doctor.diagnose()["hints"]
    assert hints[0].startswith(
        "several ONNX Runtime packages are installed (onnxruntime 1.32.0, onnxruntime-gpu 1.32.0)"
    )
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in hints[0]


def test_wgpu_failure_is_reported_not_raised(machine: Machine) -> None:
    machine.adapter_error = "wgpu could not enumerate adapters: no loader"
    report = doctor.diagnose()
    assert report["adapters"] == []
    assert report["adapter_error"] == "wgpu could not enumerate adapters: no loader"


def test_a_model_that_cannot_load_is_reported_in_the_report(
    machine: Machine, gpux_home: Path
) -> None:
    report = gpux.api.diagnose("nosuch")
    assert report["model"]["target"] == "nosuch"
    assert report["model"]["error"] == "image 'nosuch' not found"
    assert report["model"]["hint"]


def test_a_model_on_the_real_machine_reports_its_placement(
    symbolic_model: Path, gpux_home: Path
) -> None:
    model = gpux.api.diagnose(str(symbolic_model))["model"]
    placement = model["placement"]
    assert placement["requested"] == "auto"
    assert placement["backend"] == selection.plan("auto").candidates[0].backend
    assignment = placement["details"]["assignment"]
    assert assignment["known"] is True and assignment["nodes_on_backend"] >= 1


# -- discovery --------------------------------------------------------------------------------


def test_native_stderr_is_captured_not_shown(capfd: pytest.CaptureFixture[str]) -> None:
    with discovery.captured_native_stderr() as captured:
        os.write(2, b"error: XDG_RUNTIME_DIR is invalid or not set in the environment.\n")
        os.write(2, b"MESA: warning: second line\n")
    assert captured == [
        "error: XDG_RUNTIME_DIR is invalid or not set in the environment.",
        "MESA: warning: second line",
    ]
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"  # fd 2 is restored


def test_native_stderr_is_restored_when_probing_raises(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError), discovery.captured_native_stderr():
        os.write(2, b"noise\n")
        raise RuntimeError("probe failed")
    os.write(2, b"visible\n")
    assert capfd.readouterr().err == "visible\n"


def test_without_wgpu_adapters_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wgpu", None)  # import wgpu raises ImportError
    found, error = discovery.adapters.__wrapped__()
    assert found == ()
    assert error == "wgpu is not installed (pip install 'gpux[webgpu]' to list GPU adapters)"


def _pci(root: Path, name: str, vendor: int, device_class: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "vendor").write_text(f"0x{vendor:04x}\n")
    (folder / "class").write_text(f"{device_class}\n")


def test_hardware_vendors_come_from_pci_display_controllers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Cheap vendor detection (no wgpu enumeration, which costs ~300 ms on every command)."""
    _pci(tmp_path, "0000:01:00.0", 0x8086, "0x030000")  # Intel VGA controller
    _pci(tmp_path, "0000:02:00.0", 0x10DE, "0x020000")  # an NVIDIA *network* device: not a GPU
    monkeypatch.setattr(discovery, "PCI_DEVICES", str(tmp_path))
    monkeypatch.setattr(libraries, "nvidia_driver_version", lambda: None)
    assert discovery.hardware_vendors.__wrapped__() == {"Intel"}
    monkeypatch.setattr(discovery, "PCI_DEVICES", str(tmp_path / "none"))
    assert discovery.hardware_vendors.__wrapped__() == set()
    monkeypatch.setattr(libraries, "nvidia_driver_version", lambda: "580.65.06")
    assert discovery.hardware_vendors.__wrapped__() == {"NVIDIA"}  # the driver says so


def test_runtime_devices_for(machine: Machine) -> None:
    gpu = device("WebGpuExecutionProvider")
    machine.devices.append(gpu)
    runtime = machine.runtime()
    assert runtime.devices_for("WebGpuExecutionProvider") == [gpu]
    assert runtime.devices_for("CUDAExecutionProvider") == []
    assert runtime.to_json()["devices"][1] == {
        "ep": "WebGpuExecutionProvider",
        "type": "GPU",
        "vendor": "NVIDIA",
        "vendor_id": 0x10DE,
        "device_id": 0x2684,
        "metadata": {},
    }


def test_a_broken_plugin_package_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = types.ModuleType("onnxruntime_ep_broken")

    def no_library() -> str:
        raise OSError("libbroken.so: cannot open shared object file")

    broken.get_library_path = no_library  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "onnxruntime_ep_broken", broken)
    monkeypatch.setattr(discovery, "_plugin_modules", lambda: ["onnxruntime_ep_broken"])
    assert discovery._register_plugins.__wrapped__() == (
        discovery.Plugin(
            "onnxruntime_ep_broken",
            None,
            [],
            "cannot load: libbroken.so: cannot open shared object file",
        ),
    )


def test_registering_the_real_plugins_twice_is_no_error() -> None:
    first = discovery.register_plugins()
    again = discovery._register_plugins.__wrapped__()  # ONNX Runtime says "already registered"
    assert [p.module for p in again] == [p.module for p in first]
    assert all(p.error is None for p in again if p.ep_names)


def test_the_installed_generation_engine_pairs_with_onnx_runtime(machine: Machine) -> None:
    from importlib import metadata

    report = doctor.diagnose()
    version = metadata.version("onnxruntime-genai")
    assert report["onnxruntime_genai"]["distributions"] == [f"onnxruntime-genai {version}"]
    assert not any("onnxruntime-genai" in hint for hint in report["hints"])


def test_a_generation_engine_for_another_onnx_runtime_is_flagged() -> None:
    assert doctor.genai_hints(["onnxruntime 1.32.0"], ["onnxruntime-genai 0.18.0"]) == []
    assert doctor.genai_hints(["onnxruntime-gpu 1.31.1"], ["onnxruntime-genai-cuda 0.18.0"]) == []
    (mismatch,) = doctor.genai_hints(["onnxruntime-gpu 1.31.1"], ["onnxruntime-genai 0.18.0"])
    assert mismatch.startswith(
        "onnxruntime-genai 0.18.0 runs on onnxruntime, but onnxruntime-gpu 1.31.1 is installed"
    )
    assert mismatch.endswith("pip uninstall -y onnxruntime-genai && pip install 'gpux[cuda]'")
    (two,) = doctor.genai_hints(
        ["onnxruntime 1.32.0"], ["onnxruntime-genai 0.18.0", "onnxruntime-genai-cuda 0.18.0"]
    )
    assert two.startswith("several onnxruntime-genai packages are installed")
