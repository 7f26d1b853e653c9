"""The speech engine against onnxruntime-genai itself, on the tiny random Whisper.

The reference is a bare onnxruntime-genai loop (its processor, ``og.Generator`` step by step),
written here without GPUX, on the same 16 kHz samples."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime_genai as og
import pytest
import soundfile

from gpux.errors import InputError, NotFoundError
from gpux.pipeline.audio import resample
from gpux.runtime.speech import SpeechModel, Transcript, Transcription

RATE = 16000


@pytest.fixture(scope="module")
def model(tiny_whisper: Path) -> SpeechModel:
    return SpeechModel(tiny_whisper, "cpu")


def tone(hertz: float, seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(int(hertz)).standard_normal(len(t)) * 0.02
    return (0.3 * np.sin(2 * np.pi * hertz * t) + noise).astype(np.float32)


def bare_genai_greedy(folder: Path, samples: np.ndarray, prompt: str) -> list[int]:
    """The tokens onnxruntime-genai's own loop picks after ``prompt``, end of text excluded."""
    genai_model = og.Model(str(folder))
    processor = genai_model.create_multimodal_processor()
    wav = io.BytesIO()
    soundfile.write(wav, samples, RATE, format="WAV", subtype="FLOAT")
    inputs = processor([prompt], audios=og.Audios.open_bytes(wav.getvalue()))
    params = og.GeneratorParams(genai_model)
    params.set_search_options(do_sample=False, max_length=448)
    generator = og.Generator(genai_model, params)
    generator.set_inputs(inputs)
    while not generator.is_done():
        generator.generate_next_token()
    sequence = [int(t) for t in generator.get_sequence(0)]
    prompt_length = int(inputs["input_ids"].as_numpy().shape[-1])
    eos = set(int(t) for t in og.Tokenizer(genai_model).eos_token_ids)
    return [t for t in sequence[prompt_length:] if t not in eos]


def transcribe(model: SpeechModel, audio: object, **settings: object) -> Transcription:
    result = model.transcribe(audio, **settings)
    assert isinstance(result, Transcription)
    return result


PROMPT = "<|startoftranscript|><|{}|><|transcribe|><|notimestamps|>"


@pytest.mark.parametrize("language", ["en", "fr"])
def test_greedy_tokens_equal_a_bare_genai_loop(
    model: SpeechModel, tiny_whisper: Path, language: str
) -> None:
    samples = tone(330, 3.0)
    ours = transcribe(model, (samples, RATE), language=language)
    reference = bare_genai_greedy(tiny_whisper, samples, PROMPT.format(language))
    assert ours.segments[0].token_ids == reference
    assert ours.completion.completion_tokens == len(reference) > 5
    assert ours.completion.prompt_tokens == 4
    assert ours.completion.finish_reason == "stop"
    assert ours.language == language
    assert ours.text == model.tokenizer.decode(reference).strip()


def test_a_detected_language_is_the_likeliest_and_transcribes_as_if_given(
    model: SpeechModel, tiny_whisper: Path
) -> None:
    samples = tone(520, 2.0)
    detected = transcribe(model, (samples, RATE))
    assert detected.language in model.languages
    # The detection reads the decoder's first logits: the same as a bare loop's first step.
    genai_model = og.Model(str(tiny_whisper))
    processor = genai_model.create_multimodal_processor()
    wav = io.BytesIO()
    soundfile.write(wav, samples, RATE, format="WAV", subtype="FLOAT")
    inputs = processor(["<|startoftranscript|>"], audios=og.Audios.open_bytes(wav.getvalue()))
    params = og.GeneratorParams(genai_model)
    params.set_search_options(max_length=448)
    generator = og.Generator(genai_model, params)
    generator.set_inputs(inputs)
    logits = np.asarray(generator.get_logits()).reshape(-1)
    vocabulary = json.loads((tiny_whisper / "generation_config.json").read_text())["lang_to_id"]
    best = max(vocabulary, key=lambda token: logits[vocabulary[token]])
    assert f"<|{detected.language}|>" == best
    given = transcribe(model, (samples, RATE), language=detected.language)
    assert given.segments[0].token_ids == detected.segments[0].token_ids


def test_long_audio_is_cut_into_30_s_windows_each_transcribed_as_alone(
    model: SpeechModel, tiny_whisper: Path
) -> None:
    samples = np.concatenate([tone(300, 30.0), tone(600, 30.0), tone(900, 10.0)])
    result = transcribe(model, (samples, RATE), language="en")
    assert [(s.start, s.end) for s in result.segments] == [(0, 30), (30, 60), (60, 70)]
    assert result.duration == 70.0
    for segment, start in zip(result.segments, (0, 30, 60), strict=True):
        window = samples[start * RATE : (start + 30) * RATE]
        assert segment.token_ids == bare_genai_greedy(tiny_whisper, window, PROMPT.format("en"))
    assert result.completion.prompt_tokens == 3 * 4
    assert result.completion.completion_tokens == sum(len(s.token_ids) for s in result.segments)
    assert result.text == " ".join(s.text for s in result.segments)


def test_streamed_pieces_concatenate_to_the_text(model: SpeechModel) -> None:
    samples = tone(440, 40.0)
    stream = model.transcribe((samples, RATE), language="en", stream=True)
    assert isinstance(stream, Transcript)
    pieces = list(stream)
    assert len(pieces) > 10
    whole = transcribe(model, (samples, RATE), language="en")
    assert "".join(pieces) == whole.text
    assert stream.transcription.segments == whole.segments


def test_a_file_at_another_rate_is_resampled_by_gpux(model: SpeechModel, tmp_path: Path) -> None:
    loud = tone(350, 4.0, rate=44100)
    path = tmp_path / "meeting.flac"
    soundfile.write(path, np.stack([loud, loud], axis=1), 44100, subtype="PCM_24")
    from_file = transcribe(model, path, language="en")
    decoded, rate = soundfile.read(path, dtype="float32")
    samples = resample(decoded.mean(axis=1), rate, RATE)
    assert from_file.segments[0].token_ids == (
        transcribe(model, (samples, RATE), language="en").segments[0].token_ids
    )
    assert from_file.duration == pytest.approx(4.0)
    # bytes and base64 are the same audio
    assert transcribe(model, path.read_bytes(), language="en").text == from_file.text


def test_a_prompt_is_read_as_previous_text(model: SpeechModel, tiny_whisper: Path) -> None:
    samples = tone(250, 2.0)
    prompted = transcribe(model, (samples, RATE), language="en", prompt="Budget meeting")
    previous = "<|startofprev|> Budget meeting"
    reference = bare_genai_greedy(tiny_whisper, samples, previous + PROMPT.format("en"))
    assert prompted.segments[0].token_ids == reference
    assert prompted.completion.prompt_tokens == 4 + len(model._tokens(" Budget meeting")) + 1


def test_sampling_settings_and_max_new_tokens_apply(model: SpeechModel) -> None:
    samples = tone(700, 2.0)
    short = transcribe(model, (samples, RATE), language="en", max_new_tokens=3)
    assert short.completion.completion_tokens == 3
    assert short.completion.finish_reason == "length"
    first = transcribe(model, (samples, RATE), language="en", temperature=1.5, seed=7)
    again = transcribe(model, (samples, RATE), language="en", temperature=1.5, seed=7)
    assert first.segments[0].token_ids == again.segments[0].token_ids


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"language": "ja"}, "does not know the language 'ja'"),
        ({"language": "english"}, "not an ISO 639-1 code"),
        ({"task": "summarise"}, "invalid transcription setting"),
        ({"stop": ["x"]}, "stop: not for a speech model"),
        ({"temperature": -1}, "invalid transcription setting"),
    ],
)
def test_settings_the_model_cannot_follow_are_input_errors(
    model: SpeechModel, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        model.transcribe((tone(300, 1.0), RATE), **settings)


def test_what_is_not_audio_is_an_input_error(model: SpeechModel, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not audio that can be decoded"):
        model.transcribe(b"this is not audio" * 100)
    with pytest.raises(NotFoundError):
        model.transcribe(tmp_path / "missing.wav")
    with pytest.raises(InputError, match="file paths are not accepted"):
        model.transcribe(str(tmp_path / "missing.wav"), allow_files=False)


def test_an_english_only_model_refuses_other_languages_and_translation(
    tiny_whisper: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "english-only"
    shutil.copytree(tiny_whisper, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, "is_multilingual": False}))
    english = SpeechModel(folder, "cpu")
    assert english.languages == []
    samples = tone(300, 2.0)
    result = transcribe(english, (samples, RATE))
    assert result.language == "en"
    reference = bare_genai_greedy(folder, samples, "<|startoftranscript|><|notimestamps|>")
    assert result.segments[0].token_ids == reference
    assert result.completion.prompt_tokens == 2
    with pytest.raises(InputError, match="English only"):
        english.transcribe((samples, RATE), language="de")
    with pytest.raises(InputError, match="cannot translate"):
        english.transcribe((samples, RATE), task="translate")


def test_a_text_model_folder_is_not_a_speech_model(tiny_llm: Path) -> None:
    from gpux.errors import ModelError

    with pytest.raises(ModelError, match="is a 'llama', not a speech model"):
        SpeechModel(tiny_llm, "cpu")
