"""Accelerators end to end on a machine without a GPU (CI, the dev box): ``gpux doctor`` shows
the lavapipe adapter, ONNX Runtime and the registered WebGPU plugin, and why ``auto`` picks the
CPU; explicit backends that cannot run are errors, never a quiet CPU run; ``auto`` says on
stderr, in ``build --json`` and in ``inspect --json`` which better backend it passed over."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import onnxruntime
import pytest

from gpux.runtime import discovery
from gpux.runtime.providers import ACCELERATED_PROVIDERS, PRIORITY
from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure, hint_of
from tests.conftest import CLI, Result

BACKEND = 7
X = "x=[[1, 2, 3, 4]]"
NO_DEVICE = "the WebGpuExecutionProvider plugin is installed but reports no GPU device"
ACCELERATED = ACCELERATED_PROVIDERS
LAVAPIPE = any(Path("/usr/share/vulkan/icd.d").glob("lvp_icd*.json"))
needs_lavapipe = pytest.mark.skipif(
    not LAVAPIPE, reason="lavapipe is not installed (make system-deps installs it)"
)
# Mesa prints this on fd 2 when it probes Vulkan/GL without a session: doctor must swallow it.
NOISY = {"XDG_RUNTIME_DIR": ""}


@pytest.fixture(scope="module", autouse=True)
def a_machine_without_gpu() -> None:
    if ACCELERATED & set(onnxruntime.get_available_providers()) or discovery.hardware_vendors():
        pytest.skip("this machine has a GPU or an accelerated ONNX Runtime")
    if importlib.util.find_spec("onnxruntime_ep_webgpu") is None:
        pytest.skip("the WebGPU plugin (dev dependency onnxruntime-ep-webgpu) is not installed")


@pytest.fixture(scope="module")
def lin(gpux: BoundCLI, workdir: Path) -> Path:
    """The image ``lin`` (x float32 [batch, 4] -> y [batch, 3]), built under ``auto``."""
    folder = workdir / "lin"
    generated_models.linear(folder / "linear.onnx")
    (folder / "GPUXfile").write_text("name: lin\nmodel: ./linear.onnx\n")
    gpux.ok("build", str(folder), "-q")
    return folder


def clean(result: Result) -> None:
    shown = f"exit {result.code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.code == 0, shown
    assert "Traceback" not in result.output, shown
    assert "XDG_RUNTIME_DIR" not in result.output, shown  # Mesa's noise stays captured


# -- gpux doctor ------------------------------------------------------------------------------


@needs_lavapipe
def test_doctor_shows_the_machine_and_why_auto_picks_the_cpu(cli: CLI) -> None:
    result = cli("doctor", env=NOISY)
    clean(result)
    assert result.stderr == ""
    out = result.stdout
    flat = " ".join(out.split())
    assert re.search(r"^ llvmpipe .*│ Mesa\s+│ CPU\s+│ Vulkan", out, re.M), out
    assert f"ONNX Runtime {onnxruntime.__version__}" in out
    assert f"providers: {', '.join(onnxruntime.get_available_providers())}" in out
    assert "plugin onnxruntime_ep_webgpu: WebGpuExecutionProvider registered" in out
    rows = re.findall(r"^ (\w+)\s+│ (unavailable|usable|chosen)\s+│", out, re.M)
    assert [backend for backend, _ in rows] == PRIORITY
    assert dict(rows)["cpu"] == "chosen"
    assert all(status == "unavailable" for backend, status in rows if backend != "cpu")
    assert f"hint: webgpu: {NO_DEVICE} (adapters wgpu sees: llvmpipe" in flat
    assert "software adapters such as lavapipe are not used" in flat


@needs_lavapipe
def test_doctor_json(cli: CLI) -> None:
    result = cli("doctor", "--json", env=NOISY)
    clean(result)
    assert result.stderr == ""
    report = json.loads(result.stdout)
    vulkan = [a for a in report["adapters"] if a["backend"] == "Vulkan"]
    assert vulkan, report["adapters"]
    assert vulkan[0]["name"].startswith("llvmpipe")
    assert (vulkan[0]["type"], vulkan[0]["vendor"]) == ("CPU", "Mesa")
    assert report["adapter_error"] is None
    runtime = report["onnxruntime"]
    assert runtime["version"] == onnxruntime.__version__
    assert runtime["providers"] == onnxruntime.get_available_providers()
    [plugin] = [p for p in runtime["plugins"] if p["module"] == "onnxruntime_ep_webgpu"]
    assert plugin["eps"] == ["WebGpuExecutionProvider"]
    assert plugin["error"] is None
    assert Path(plugin["library"]).is_file()
    assert not [d for d in runtime["devices"] if d["ep"] == "WebGpuExecutionProvider"]
    auto = report["auto"]
    assert auto["order"] == PRIORITY
    assert auto["choice"] == "cpu"
    assert [c["backend"] for c in auto["candidates"]] == ["cpu"]
    skipped = {s["backend"]: s for s in auto["skipped"]}
    assert list(skipped) == PRIORITY[:-1]
    assert skipped["webgpu"]["relevant"] is True
    assert skipped["webgpu"]["reason"].startswith(NO_DEVICE)
    assert "llvmpipe" in skipped["webgpu"]["reason"]
    assert not any(s["relevant"] for name, s in skipped.items() if name != "webgpu")
    assert [h for h in report["hints"] if h.startswith(f"webgpu: {NO_DEVICE}")]
    assert report["nvidia"]["driver"] is None
    assert "model" not in report


def test_doctor_with_a_model_reports_its_placement(gpux: BoundCLI, lin: Path) -> None:
    result = gpux("doctor", "--model", "lin", "--json", env=NOISY)
    clean(result)
    assert result.stderr == ""  # the fallback is in the report, not a note on stderr
    model = json.loads(result.stdout)["model"]
    assert model["target"] == "lin"
    placement = model["placement"]
    assert placement["backend"] == "cpu"
    assert placement["providers"] == ["CPUExecutionProvider"]
    assert placement["requested"] == "auto"
    assert placement["fallback_reason"].startswith(f"webgpu: {NO_DEVICE}")
    assignment = placement["details"]["assignment"]
    assert assignment["known"] is True
    assert assignment["share"] == 1.0
    assert assignment["nodes_on_backend"] == assignment["nodes"] >= 1

    text = gpux("doctor", "--model", "lin")
    clean(text)
    assert re.search(
        r"^model lin: runs on cpu \(CPUExecutionProvider\), (\d+)/\1 nodes$", text.stdout, re.M
    ), text.stdout


def test_doctor_with_a_missing_model_still_reports(gpux: BoundCLI) -> None:
    result = gpux("doctor", "--model", "nosuch", "--json")
    clean(result)
    model = json.loads(result.stdout)["model"]
    assert model == {"target": "nosuch", "error": "image 'nosuch' not found", "hint": model["hint"]}
    assert model["hint"]


# -- auto: the fallback is visible ------------------------------------------------------------


def test_the_fallback_is_said_once_on_stderr_and_kept_in_json(
    lin: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    fresh = BoundCLI(tmp_path_factory.mktemp("fresh-home"))
    first = fresh("run", "lin", "-i", X, cwd=lin.parent, env=NOISY)
    assert first.code == 4  # not built in this store yet: nothing to say about the machine
    built = fresh("build", str(lin), env=NOISY)
    clean(built)
    warning = " ".join(built.stderr.split())
    assert f"warning: backend 'auto' fell back to cpu: webgpu: {NO_DEVICE}" in warning
    assert "shown once for this machine" in warning
    notes = list((fresh.home / "notes").iterdir())
    assert len(notes) == 1 and NO_DEVICE in notes[0].read_text()
    for _ in range(2):  # later runs and builds: quiet on stderr, the reason still in JSON
        result = fresh("run", "lin", "-i", X, env=NOISY)
        clean(result)
        assert result.stderr == ""
        body = json.loads(result.stdout)  # stdout stays one JSON document
        assert body["backend"] == "cpu"
        assert body["fallback_reason"].startswith(f"webgpu: {NO_DEVICE}")
        assert body["outputs"]["y"]["data"] == [[7.0, 6.0, 8.5]]
        rebuilt = fresh("build", str(lin), "--force", "--json", env=NOISY)
        clean(rebuilt)
        assert "fell back" not in rebuilt.stderr
        [kept] = [w for w in json.loads(rebuilt.stdout)["warnings"] if "fell back" in w]
        assert kept.startswith(f"backend 'auto' fell back to cpu: webgpu: {NO_DEVICE}")
    # Forgetting the notes (or another machine, another reason) says it again, as a run's note.
    notes[0].unlink()
    again = fresh("run", "lin", "-i", X, env=NOISY)
    clean(again)
    note = " ".join(again.stderr.split())
    assert note.startswith("note: running on cpu; better backends were passed over: webgpu: ")
    assert NO_DEVICE in note and "shown once for this machine" in note


def test_build_json_reports_the_fallback_warning(gpux: BoundCLI, workdir: Path) -> None:
    folder = workdir / "lin2"
    generated_models.linear(folder / "linear.onnx")
    (folder / "GPUXfile").write_text("name: lin2\nmodel: ./linear.onnx\n")
    result = gpux("build", str(folder), "--json")
    clean(result)
    report = json.loads(result.stdout)
    [warning] = [w for w in report["warnings"] if "fell back" in w]
    assert warning.startswith(f"backend 'auto' fell back to cpu: webgpu: {NO_DEVICE}")
    assert report["placement"]["backend"] == "cpu"
    assert report["placement"]["fallback_reason"].startswith(f"webgpu: {NO_DEVICE}")
    assert report["placement"]["details"]["assignment"]["share"] == 1.0


def test_inspect_json_shows_the_smoke_placement(gpux: BoundCLI, lin: Path) -> None:
    placement = gpux.json("inspect", "lin", "--json")["smoke"]["placement"]
    assert placement["backend"] == "cpu"
    assert placement["requested"] == "auto"
    assert placement["fallback_reason"].startswith(f"webgpu: {NO_DEVICE}")
    assert placement["details"]["via"] == "providers list"
    assignment = placement["details"]["assignment"]
    assert assignment["known"] is True
    assert assignment["share"] == 1.0
    assert assignment["nodes"] == assignment["nodes_on_backend"] >= 1


# -- explicit backends that cannot run: errors, never a quiet CPU run --------------------------

CAUSES = {
    "cuda": "not in this ONNX Runtime build (onnxruntime",
    "tensorrt": "not in this ONNX Runtime build (onnxruntime",
    "webgpu": NO_DEVICE,
}


@pytest.mark.parametrize("backend", list(CAUSES))
def test_run_with_an_unavailable_backend_fails(gpux: BoundCLI, lin: Path, backend: str) -> None:
    result = gpux("run", "lin", "-i", X, "--backend", backend, env=NOISY)
    assert_failure(result, BACKEND, f"backend '{backend}' is not available: {CAUSES[backend]}")
    assert "note: running on" not in result.stderr
    assert "XDG_RUNTIME_DIR" not in result.stderr
    hint = hint_of(result)
    if backend == "webgpu":
        assert "Vulkan, Metal or D3D12 GPU" in hint
    else:
        assert "pip install" in hint and "--backend auto" in hint


def test_build_of_a_webgpu_gpuxfile_fails_and_stores_nothing(gpux: BoundCLI, workdir: Path) -> None:
    folder = workdir / "wg"
    generated_models.linear(folder / "linear.onnx")
    (folder / "GPUXfile").write_text("name: wg\nmodel: ./linear.onnx\nruntime: {backend: webgpu}\n")
    result = gpux("build", str(folder), "-q")
    assert_failure(result, BACKEND, f"backend 'webgpu' is not available: {NO_DEVICE}")
    assert "software adapters such as lavapipe are not used" in hint_of(result)
    assert not [name for name in gpux.names() if name.startswith("wg:")]
