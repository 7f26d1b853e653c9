"""A speech model (the tiny random Whisper) end to end through the real CLI: ``gpux build``
checks the folder and smoke-transcribes a tone, ``gpux run`` prints the text of an audio file
(``--json`` with segments and figures), ``gpux inspect`` shows the speech defaults, ``gpux.load``
transcribes in Python; GPUXfiles that ask a speech model for what it cannot do fail the build."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from gpux.runtime.speech import SpeechModel, Transcription, load_speech
from gpux.store import Store
from tests.cli.expect import BoundCLI, assert_failure, hint_of

GPUXFILE = """name: whisper
model:
  source: ./tiny-whisper
  format: genai
speech:
  language: en
generation:
  max_new_tokens: 64
"""


@pytest.fixture(scope="module")
def project(workdir: Path, tiny_whisper: Path) -> Path:
    folder = workdir / "whisper"
    shutil.copytree(tiny_whisper, folder / "tiny-whisper")
    (folder / "GPUXfile").write_text(GPUXFILE)
    return folder


@pytest.fixture(scope="module")
def built(gpux: BoundCLI, project: Path) -> dict[str, object]:
    report: dict[str, object] = gpux.json("build", str(project), "--json")
    return report


@pytest.fixture(scope="module")
def meeting(workdir: Path) -> Path:
    """3 s of a 44.1 kHz stereo FLAC: decoded and resampled by GPUX, not by genai."""
    rate = 44100
    t = np.arange(3 * rate) / rate
    left = 0.3 * np.sin(2 * np.pi * 330 * t)
    right = 0.2 * np.sin(2 * np.pi * 550 * t)
    path = workdir / "meeting.flac"
    soundfile.write(path, np.stack([left, right], axis=1).astype(np.float32), rate)
    return path


def test_build_checks_the_folder_and_smoke_transcribes(
    gpux: BoundCLI, built: dict[str, object]
) -> None:
    image = Store(gpux.home).get("whisper")
    info = image.config["generative"]
    assert (info["type"], info["task"]) == ("whisper", "speech-to-text")
    smoke = image.config["smoke"]
    assert smoke["audio"] == "1 s of a 440 Hz tone"
    assert smoke["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}
    assert smoke["language"] == "en"
    assert smoke["placement"]["details"]["proof"] == "onnxruntime-log"
    titles = {layer.title for layer in image.layers}
    assert {"encoder.onnx", "decoder.onnx", "audio_processor_config.json"} <= titles


def test_run_prints_the_text_the_api_transcribes(
    gpux: BoundCLI, built: dict[str, object], meeting: Path
) -> None:
    shown = gpux.ok("run", "whisper", "--input", str(meeting)).stdout
    model = load_speech(Store(gpux.home).get("whisper"))
    expected = model.transcribe(meeting)
    assert isinstance(expected, Transcription)
    assert shown == expected.text + "\n"
    assert expected.completion.completion_tokens > 5


def test_run_json_has_segments_language_and_figures(
    gpux: BoundCLI, built: dict[str, object], meeting: Path
) -> None:
    report = gpux.json("run", "whisper", "--input", str(meeting), "--json", "--language", "fr")
    assert report["language"] == "fr"
    assert report["duration"] == 3.0
    assert [(s["start"], s["end"]) for s in report["segments"]] == [(0.0, 3.0)]
    assert report["segments"][0]["text"] == report["text"]
    assert report["usage"]["prompt_tokens"] == 4
    assert report["time_to_first_token_ms"] > 0
    short = gpux.json("run", "whisper", "-i", str(meeting), "--json", "--max-new-tokens", "2")
    assert (short["usage"]["completion_tokens"], short["finish_reason"]) == (2, "length")


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["--stop", "x"], 2, "--stop: not for a speech model"),
        (["--language", "ja"], 6, "does not know the language 'ja'"),
    ],
)
def test_what_a_speech_model_cannot_do_is_refused(
    gpux: BoundCLI,
    built: dict[str, object],
    meeting: Path,
    arguments: list[str],
    code: int,
    message: str,
) -> None:
    result = gpux("run", "whisper", "--input", str(meeting), *arguments)
    assert_failure(result, code, message)


def test_a_file_that_is_not_audio_is_refused(
    gpux: BoundCLI, built: dict[str, object], workdir: Path
) -> None:
    notes = workdir / "notes.flac"
    notes.write_text("these are not sounds " * 20)
    result = gpux("run", "whisper", "--input", str(notes))
    assert_failure(result, 6, "not audio that can be decoded")
    assert "wav, flac or ogg" in hint_of(result)


def test_speech_flags_on_a_text_model_are_refused(
    gpux: BoundCLI, workdir: Path, tiny_llm: Path
) -> None:
    project = workdir / "llm"
    if not project.exists():
        shutil.copytree(tiny_llm, project / "tiny-llm")
    (project / "GPUXfile").write_text("name: llm\nmodel:\n  source: ./tiny-llm\n  format: genai\n")
    gpux.ok("build", str(project))
    result = gpux("run", "llm", "--input", "Hello", "--language", "en")
    assert_failure(result, 2, "--language: for speech models only")


def test_inspect_shows_the_speech_defaults(gpux: BoundCLI, built: dict[str, object]) -> None:
    info = gpux.json("inspect", "whisper", "--json")
    assert info["speech"] == {"language": "en", "task": "transcribe"}
    shown = gpux.ok("inspect", "whisper").stdout
    assert "language en, transcribe" in shown
    assert "chat template" not in shown
    assert "from 1 s of a 440 Hz tone" in shown


def test_python_api_loads_a_speech_model_that_transcribes(
    gpux_home: Path, project: Path, meeting: Path
) -> None:
    import gpux

    model = gpux.load(project)
    assert isinstance(model, SpeechModel)
    pieces = list(model.transcribe(meeting, stream=True))  # type: ignore[call-overload]
    whole = model.transcribe(meeting)
    assert isinstance(whole, Transcription)
    assert "".join(pieces) == whole.text
    assert whole.language == "en"  # the GPUXfile's speech.language


CONFIG = 3
SPEECH = "model:\n  source: ./tiny-whisper\n  format: genai\n"
LLM = "model:\n  source: ./tiny-llm\n  format: genai\n"


@pytest.mark.parametrize(
    ("gpuxfile", "fragments", "hint"),
    [
        (
            "model: ./tiny-whisper/encoder.onnx\nspeech:\n  language: en\n",
            ["'speech' applies to generative models"],
            "",
        ),
        (LLM + "speech:\n  language: en\n", ["speech: the model folder is a 'llama'"], "remove"),
        (SPEECH + "speech:\n  language: english\n", ["not an ISO 639-1 code"], ""),
        (SPEECH + "speech:\n  task: summarise\n", ["speech.task"], ""),
        (SPEECH + "speech:\n  language: ja\n", ["speech: this model does not know"], "use one"),
        (SPEECH + "generation:\n  stop: [END]\n", ["generation.stop: not for a speech"], "remove"),
    ],
    ids=[
        "speech without genai",
        "speech on an LLM",
        "a language name",
        "unknown task",
        "a language the model lacks",
        "stop strings",
    ],
)
def test_a_wrong_speech_gpuxfile_names_the_problem_and_the_fix(
    gpux: BoundCLI,
    workdir: Path,
    tiny_whisper: Path,
    tiny_llm: Path,
    gpuxfile: str,
    fragments: list[str],
    hint: str,
) -> None:
    project = workdir / "wrong" / str(abs(hash(gpuxfile)))
    if not project.exists():
        shutil.copytree(tiny_whisper, project / "tiny-whisper")
        shutil.copytree(tiny_llm, project / "tiny-llm")
    (project / "GPUXfile").write_text(gpuxfile)
    before = set(gpux.names())
    result = gpux("build", str(project), "-t", "wrong")
    assert_failure(result, CONFIG, *fragments)
    assert hint in hint_of(result)
    assert set(gpux.names()) == before
