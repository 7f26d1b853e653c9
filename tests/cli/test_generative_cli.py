"""A generative model end to end through the real CLI: ``gpux build`` stores the genai folder as
one layer per file (shared blobs stored once, an unchanged rebuild a no-op), ``gpux run`` streams
the answer (``--json`` with its figures, ``--interactive`` keeping the conversation), ``gpux
inspect`` says what is proven about placement, and ``gpux.load`` streams in Python."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gpux.runtime.generative import GenerativeModel
from gpux.store import Store, mediatypes
from tests.cli.expect import BoundCLI, assert_failure

GPUXFILE = """name: tiny-llm
model:
  source: ./tiny-llm
  format: genai
generation:
  max_new_tokens: 12
"""


@pytest.fixture(scope="module")
def project(workdir: Path, tiny_llm: Path) -> Path:
    folder = workdir / "llm"
    shutil.copytree(tiny_llm, folder / "tiny-llm")
    (folder / "GPUXfile").write_text(GPUXFILE)
    return folder


@pytest.fixture(scope="module")
def built(gpux: BoundCLI, project: Path) -> dict[str, object]:
    report: dict[str, object] = gpux.json("build", str(project), "--json")
    return report


def blob_count(home: Path) -> int:
    return sum(1 for _ in (home / "blobs" / "sha256").iterdir())


def test_build_stores_each_file_of_the_folder_as_a_layer(
    gpux: BoundCLI, built: dict[str, object], tiny_llm: Path
) -> None:
    assert built["cached"] is False
    image = Store(gpux.home).get("tiny-llm")
    files = {p.name: p.read_bytes() for p in tiny_llm.iterdir()}
    layers = {layer.title: layer for layer in image.layers}
    assert set(layers) == set(files)
    assert {layer.media_type for layer in image.layers} == {mediatypes.GENAI_FILE}
    for title, layer in layers.items():
        assert image.store.blobs.verified_path(layer.digest).read_bytes() == files[title]
    smoke = image.config["smoke"]
    assert smoke["usage"]["completion_tokens"] == 4
    assert smoke["placement"]["details"]["proof"] == "onnxruntime-log"
    assert image.config["generative"]["chat_template"] is True


def test_an_unchanged_rebuild_is_a_no_op(
    gpux: BoundCLI, built: dict[str, object], project: Path
) -> None:
    again = gpux.json("build", str(project), "--json")
    assert again["cached"] is True
    assert again["digest"] == built["digest"]
    assert [s["step"] for s in again["steps"] if not s["skipped"]] == [
        "read GPUXfile",
        "resolve model",
    ]


def test_images_sharing_files_store_them_once(
    gpux: BoundCLI, built: dict[str, object], project: Path, workdir: Path
) -> None:
    other = workdir / "llm-greedy-8"
    if not other.exists():
        shutil.copytree(project / "tiny-llm", other / "tiny-llm")
    (other / "GPUXfile").write_text(GPUXFILE.replace("max_new_tokens: 12", "max_new_tokens: 8"))
    before = blob_count(gpux.home)
    report = gpux.json("build", str(other), "-t", "tiny-llm:short", "--json")
    assert report["digest"] != built["digest"]
    # Only the new image's config and manifest are new blobs: every file is shared.
    assert blob_count(gpux.home) == before + 2


def test_run_streams_the_answer_and_matches_the_api(
    gpux: BoundCLI, built: dict[str, object]
) -> None:
    from gpux.runtime.generative import load_generative

    shown = gpux.ok("run", "tiny-llm", "--input", "Hello, world!", "--no-chat").stdout
    model = load_generative(Store(gpux.home).get("tiny-llm"))
    expected = model.generate("Hello, world!")
    assert shown == expected.text + "\n"  # type: ignore[union-attr]
    assert expected.completion_tokens == 12  # type: ignore[union-attr]


def test_run_json_adds_token_counts_and_timings(gpux: BoundCLI, built: dict[str, object]) -> None:
    report = gpux.json("run", "tiny-llm", "--input", "Hello", "--json", "--max-new-tokens", "5")
    assert report["usage"]["completion_tokens"] == 5
    assert report["usage"]["prompt_tokens"] > 20  # the chat template's system and user turns
    assert report["finish_reason"] == "length"
    assert report["time_to_first_token_ms"] > 0
    assert report["tokens_per_second"] > 0
    stopped = gpux.json(
        "run", "tiny-llm", "--input", "Hello", "--json", "--stop", report["text"][2:4]
    )
    assert stopped["finish_reason"] == "stop"
    assert stopped["text"] == report["text"][: report["text"].index(report["text"][2:4])]


def test_interactive_chat_keeps_the_history(gpux: BoundCLI, built: dict[str, object]) -> None:
    lines = gpux.ok("run", "tiny-llm", "--interactive", "--json", stdin="Hello\nAnd then?\n").stdout
    first, second = (json.loads(line) for line in lines.splitlines())
    # The second turn reads the first question and answer too.
    assert second["usage"]["prompt_tokens"] > (
        first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    )


def test_python_api_streams_an_iterator(gpux_home: Path, project: Path) -> None:
    import gpux

    model = gpux.load(project)
    assert isinstance(model, GenerativeModel)
    stream = model.generate("Hello, world!", stream=True)
    pieces = list(stream)
    whole = model.generate("Hello, world!")
    assert "".join(pieces) == whole.text  # type: ignore[union-attr]
    assert len(pieces) > 1


def test_inspect_says_what_is_proven(gpux: BoundCLI, built: dict[str, object]) -> None:
    info = gpux.json("inspect", "tiny-llm", "--json")
    assert info["kind"] == "generative"
    assert info["placement_proof"].startswith("proven at build")
    assert "CPUExecutionProvider" in info["placement_proof"]
    shown = gpux.ok("inspect", "tiny-llm").stdout
    assert "chat template  yes" in shown
    assert "model.onnx.data" in shown


def test_generation_flags_on_a_tensor_model_are_refused(
    gpux: BoundCLI, workdir: Path, symbolic_model_path: Path
) -> None:
    project = workdir / "linear"
    project.mkdir(exist_ok=True)
    shutil.copy(symbolic_model_path, project / "linear.onnx")
    (project / "GPUXfile").write_text("model: ./linear.onnx\n")
    gpux.ok("build", str(project))
    result = gpux("run", "linear", "--input", "[[1, 2, 3, 4]]", "--max-new-tokens", "3")
    assert_failure(result, 2, "--max-new-tokens: for generative models only")


@pytest.fixture(scope="module")
def symbolic_model_path(workdir: Path) -> Path:
    from tests import generated_models

    return generated_models.linear(workdir / "models" / "linear.onnx")


def zip_folder(folder: Path, archive: Path, inside: str) -> Path:
    import zipfile

    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.iterdir()):
            bundle.write(path, f"{inside}/{path.name}")
        bundle.writestr(f"{inside}/.DS_Store", b"junk")  # left out of the image
    return archive


def test_a_folder_inside_an_archive_served_over_http_builds_to_the_same_layers(
    gpux: BoundCLI, built: dict[str, object], tiny_llm: Path, workdir: Path
) -> None:
    import hashlib

    from tests.cli.test_sources import ModelServer

    served = workdir / "served-llm"
    archive = zip_folder(tiny_llm, served / "llm.zip", "models/tiny-llm")
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    server = ModelServer(served)
    try:
        project = workdir / "remote-llm"
        project.mkdir(exist_ok=True)
        (project / "GPUXfile").write_text(
            f"name: remote-llm\nmodel:\n  source: {server.url}/llm.zip\n  sha256: {sha256}\n"
            "  member: models/tiny-llm\n  format: genai\ngeneration:\n  max_new_tokens: 12\n"
        )
        report = gpux.json("build", str(project), "--json")
    finally:
        server.stop()
    store = Store(gpux.home)
    remote, local = store.get("remote-llm"), store.get("tiny-llm")
    assert {(x.title, x.digest) for x in remote.layers} == {
        (x.title, x.digest) for x in local.layers
    }
    assert remote.config["source"]["archive_sha256"] == sha256
    assert report["smoke"]["usage"]["completion_tokens"] == 4
    shown = gpux.ok("run", "remote-llm", "--input", "Hello, world!", "--no-chat").stdout
    assert shown == gpux.ok("run", "tiny-llm", "--input", "Hello, world!", "--no-chat").stdout


def test_an_archive_member_without_genai_config_is_a_source_error(
    gpux: BoundCLI, tiny_llm: Path, workdir: Path
) -> None:
    project = workdir / "archive-wrong-member"
    zip_folder(tiny_llm, project / "llm.zip", "models/tiny-llm")
    (project / "GPUXfile").write_text(
        "model:\n  source: ./llm.zip\n  member: models\n  format: genai\n"
    )
    result = gpux("build", str(project))
    assert_failure(result, 9, "folder 'models' has no genai_config.json")
    (project / "GPUXfile").write_text(
        "model:\n  source: ./llm.zip\n  member: other\n  format: genai\n"
    )
    assert_failure(gpux("build", str(project)), 9, "the archive has no files under 'other'")


def test_prune_removes_the_folder_layout_of_a_removed_image(
    gpux: BoundCLI, built: dict[str, object], workdir: Path, project: Path
) -> None:
    from gpux.store.folders import LAYOUTS, layout_name

    other = workdir / "llm-pruned"
    if not other.exists():
        shutil.copytree(project / "tiny-llm", other / "tiny-llm")
    (other / "GPUXfile").write_text(GPUXFILE.replace("max_new_tokens: 12", "max_new_tokens: 3"))
    digest = gpux.json("build", str(other), "-t", "pruned", "--json")["digest"]
    gpux.ok("run", "pruned", "--input", "Hi")  # lays the folder out
    gpux.ok("run", "tiny-llm", "--input", "Hi", "--max-new-tokens", "2")
    layout = gpux.home / LAYOUTS / layout_name(digest)
    kept = gpux.home / LAYOUTS / layout_name(str(built["digest"]))
    assert (layout / "genai_config.json").is_symlink()
    gpux.ok("rm", "pruned")
    gpux.ok("prune")
    assert not layout.exists()
    assert kept.is_dir()  # tiny-llm's image is still there
    assert gpux.ok("run", "tiny-llm", "--input", "Hi", "--max-new-tokens", "2").stdout


def test_doctor_proves_where_a_loaded_generative_model_runs(
    gpux: BoundCLI, built: dict[str, object]
) -> None:
    report = gpux.json("doctor", "--model", "tiny-llm", "--json")
    details = report["model"]["placement"]["details"]
    assert details["proof"] == "onnxruntime-log"
    assert list(details["nodes"]) == ["CPUExecutionProvider"]
    shown = gpux.ok("doctor", "--model", "tiny-llm").stdout
    assert "nodes on CPUExecutionProvider (onnxruntime-genai's session" in shown


def test_tensor_flags_on_a_generative_model_are_refused(
    gpux: BoundCLI, built: dict[str, object], tmp_path: Path
) -> None:
    result = gpux("run", "tiny-llm", "--input", "Hi", "--raw", "-o", str(tmp_path / "x.json"))
    assert_failure(result, 2, "--output, --raw: not for a generative model")
    assert not (tmp_path / "x.json").exists()
