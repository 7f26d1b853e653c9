"""Audio preprocessing: decoding, resampling quality, windows for streaming models, errors."""

from __future__ import annotations

import base64
import io
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from gpux.config.pipeline import AudioInput
from gpux.errors import ConfigValidationError, GPUXError, InputError, NotFoundError
from gpux.pipeline import audio
from gpux.pipeline.audio import AudioPreprocessor, decode_audio, initial_states, resample
from tests.pipeline.speech import ESPEAK_RATE, needs_espeak, silence_and_noise, speak

RATE = 16000
SILERO = AudioInput.model_validate(
    {
        "sample_rate": 16000,
        "frame": {"size": 512, "context": 64},
        "sample_rate_input": "sr",
        "state": [{"input": "state", "output": "stateN", "shape": [2, 1, 128]}],
    }
)


def tone(frequency: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t + 0.3)).astype(np.float32)


def encoded(signal: np.ndarray, rate: int, format: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, signal, rate, format=format, subtype=subtype)
    return buffer.getvalue()


def preprocessor(**spec: Any) -> AudioPreprocessor:
    return AudioPreprocessor(AudioInput.model_validate({"sample_rate": RATE, **spec}), "audio")


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# -------------------------------------------------------------------------------------- decode
SIGNAL = tone(440, RATE, 0.5) + tone(1000, RATE, 0.5, amplitude=0.25)


@pytest.mark.parametrize(
    ("format", "subtype", "tolerance"),
    [("WAV", "PCM_16", 1e-4), ("WAV", "FLOAT", 1e-7), ("FLAC", "PCM_16", 1e-4)],
)
def test_lossless_files_decode_to_the_signal(format: str, subtype: str, tolerance: float) -> None:
    samples, rate = decode_audio(encoded(SIGNAL, RATE, format, subtype), "audio")
    assert rate == RATE
    assert samples.dtype == np.float32 and samples.shape == SIGNAL.shape
    assert np.abs(samples - SIGNAL).max() < tolerance


def test_ogg_vorbis_decodes_close_to_the_signal() -> None:
    samples, rate = decode_audio(encoded(SIGNAL, RATE, "OGG", "VORBIS"), "audio")
    assert rate == RATE and abs(len(samples) - len(SIGNAL)) < RATE // 100
    n = min(len(samples), len(SIGNAL))
    assert np.corrcoef(samples[:n], SIGNAL[:n])[0, 1] > 0.99


def test_stereo_is_averaged_to_mono() -> None:
    difference = tone(3000, RATE, 0.5, amplitude=0.2)
    stereo = np.stack([SIGNAL + difference, SIGNAL - difference], axis=1)
    samples, _ = decode_audio(encoded(stereo, RATE, "WAV", "FLOAT"), "audio")
    assert samples.ndim == 1
    np.testing.assert_allclose(samples, SIGNAL, atol=1e-6)


def test_every_way_of_sending_a_file_decodes_the_same(tmp_path: Path) -> None:
    content = encoded(SIGNAL, RATE, "FLAC", "PCM_16")
    path = tmp_path / "clip.flac"
    path.write_bytes(content)
    text = base64.b64encode(content).decode()
    forms = [
        content,
        bytearray(content),
        memoryview(content),
        path,
        str(path),
        text,
        f"data:audio/flac;base64,{text}",
        "\n".join(text[i : i + 76] for i in range(0, len(text), 76)),  # MIME line breaks
    ]
    expected, _ = decode_audio(content, "audio")
    for form in forms:
        samples, rate = decode_audio(form, "audio")
        assert rate == RATE
        np.testing.assert_array_equal(samples, expected)


def test_short_base64_clips_are_not_taken_for_paths() -> None:
    clip = encoded(np.zeros(100, np.float32), 8000, "WAV", "PCM_16")  # 300 characters, no "/"
    samples, rate = decode_audio(base64.b64encode(clip).decode(), "audio")
    assert rate == 8000 and len(samples) == 100


def test_bare_samples_are_at_the_model_rate_and_tuples_carry_theirs() -> None:
    samples, rate = decode_audio(SIGNAL.astype(np.float64), "audio")
    assert rate is None and samples.dtype == np.float32
    assert decode_audio(SIGNAL.tolist(), "audio")[1] is None
    np.testing.assert_array_equal(preprocessor().samples(SIGNAL), SIGNAL)

    at_48k = tone(440, 48000, 0.5)
    np.testing.assert_allclose(
        preprocessor().samples((at_48k, 48000))[800:-800], tone(440, RATE, 0.5)[800:-800], atol=1e-4
    )
    pcm = (SIGNAL * 32767).astype(np.int16)
    np.testing.assert_allclose(decode_audio(pcm, "audio")[0], SIGNAL, atol=1e-4)


# ------------------------------------------------------------------------------------ resample
@pytest.mark.parametrize("source", [22050, 44100, 48000, 8000, 11025, 44056, 16001])
def test_a_resampled_sine_is_the_sine_at_the_new_rate(source: int) -> None:
    resampled = resample(tone(1000, source, 1.0), source, RATE)
    expected = tone(1000, RATE, 1.0)
    assert len(resampled) == len(expected)
    edge = RATE // 20  # the filter sees silence past the ends
    assert rms(resampled[edge:-edge] - expected[edge:-edge]) < 1e-3


def test_a_short_clip_at_an_unusual_rate_is_resampled_exactly() -> None:
    # Few outputs for many phases: the weights are computed per output.
    resampled = resample(tone(1000, 44101, 0.02), 44101, RATE)
    expected = tone(1000, RATE, 0.02)
    assert len(resampled) == len(expected)
    assert rms(resampled[100:-100] - expected[100:-100]) < 1e-3


@pytest.mark.parametrize(("frequency", "source"), [(10000, 44100), (9000, 48000), (12000, 32000)])
def test_tones_above_the_new_nyquist_frequency_are_removed(frequency: int, source: int) -> None:
    resampled = resample(tone(frequency, source, 1.0), source, RATE)
    attenuation = 20 * np.log10(rms(resampled[800:-800]) / rms(tone(frequency, source, 1.0)))
    assert attenuation < -60  # measured: about -95 dB


def test_the_passband_is_flat() -> None:
    for frequency in (100, 3000, 6000):
        resampled = resample(tone(frequency, 44100, 1.0), 44100, RATE)
        assert abs(rms(resampled[800:-800]) / rms(tone(frequency, RATE, 1.0)) - 1) < 1e-3


def test_ten_seconds_of_cd_audio_resample_quickly() -> None:
    noise = np.random.default_rng(0).uniform(-1, 1, 441000).astype(np.float32)
    started = time.perf_counter()
    resampled = resample(noise, 44100, RATE)
    assert time.perf_counter() - started < 0.5  # measured: ~5 ms on 2 cores
    assert len(resampled) == 160000 and np.isfinite(resampled).all()


@settings(max_examples=60, deadline=None)
@given(
    source=st.integers(1000, 768000),
    target=st.integers(1000, 768000),
    length=st.integers(0, 3000),
)
def test_the_output_length_is_the_rounded_duration(source: int, target: int, length: int) -> None:
    signal = np.ones(length, np.float32)
    resampled = resample(signal, source, target)
    exact = Fraction(length * target, source)
    assert len(resampled) == int(exact + Fraction(1, 2))  # round half up
    assert resampled.dtype == np.float32 and np.isfinite(resampled).all()


# ------------------------------------------------------------------------------------- windows
def test_windows_carry_the_previous_samples_as_context() -> None:
    frames = preprocessor(frame={"size": 4, "context": 2}).frames(np.arange(1, 11))
    expected = [[0, 0, 1, 2, 3, 4], [3, 4, 5, 6, 7, 8], [7, 8, 9, 10, 0, 0]]
    np.testing.assert_array_equal(frames, np.array(expected, np.float32))
    assert frames.dtype == np.float32


def test_window_counts() -> None:
    framed = preprocessor(frame={"size": 4})
    assert framed.frames(np.arange(8)).shape == (2, 4)
    assert framed.frames(np.arange(9)).shape == (3, 4)
    np.testing.assert_array_equal(framed.frames(np.zeros(0)), np.zeros((1, 4)))
    assert preprocessor().frames(np.arange(9)).shape == (1, 9)  # no framing: the whole signal


def test_silero_windows_are_576_samples() -> None:
    processor = AudioPreprocessor(SILERO, "audio")
    signal = np.random.default_rng(0).uniform(-1, 1, RATE).astype(np.float32)
    frames = processor.frames(signal)
    assert frames.shape == (32, 576)  # ceil(16000 / 512) windows of 64 + 512
    np.testing.assert_array_equal(frames[5, 64:], signal[5 * 512 : 6 * 512])
    np.testing.assert_array_equal(frames[5, :64], frames[4, -64:])
    assert processor.frame_seconds == 0.032
    assert preprocessor().frame_seconds is None


def test_initial_states() -> None:
    states = initial_states(SILERO)
    assert list(states) == ["state"]
    assert states["state"].shape == (2, 1, 128) and states["state"].dtype == np.float32
    assert not states["state"].any()

    spec = {"input": "h", "output": "hn", "shape": [3], "dtype": "float16", "initial": 0.5}
    custom = initial_states(AudioInput.model_validate({**SILERO.model_dump(), "state": [spec]}))
    np.testing.assert_array_equal(custom["h"], np.full(3, 0.5, np.float16))
    assert custom["h"].dtype == np.float16


def test_an_unknown_state_dtype_names_the_state() -> None:
    spec = {"input": "h", "output": "hn", "shape": [3], "dtype": "flaot32"}
    with pytest.raises(ConfigValidationError, match=r"state 'h'.*flaot32") as error:
        initial_states(AudioInput.model_validate({**SILERO.model_dump(), "state": [spec]}))
    assert error.value.hint


# -------------------------------------------------------------------------------------- errors
def header_only_wav() -> bytes:
    return encoded(np.zeros(0, np.float32), RATE, "WAV", "PCM_16")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"RIFF not really a wav file" * 10, "not audio that can be decoded"),
        (b"", "empty"),
        (header_only_wav(), "no samples"),
        ("data:audio/wav;base64,%%%", "not valid base64"),
        (12, "must be an audio file"),
        (np.zeros((2, 100)), "1-D"),
        (np.array([0.1, np.nan]), "NaN"),
        (np.array([], np.float32), "no samples"),
    ],
)
def test_unusable_values_are_input_errors(value: Any, message: str) -> None:
    with pytest.raises(InputError, match=message) as error:
        preprocessor().samples(value)
    assert "input 'audio'" in error.value.message and error.value.hint


def test_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").touch()
    with pytest.raises(InputError, match=r"'empty\.wav' is empty") as error:
        preprocessor().samples(tmp_path / "empty.wav")
    assert "input 'audio'" in error.value.message and "wav, flac or ogg" in str(error.value.hint)


@pytest.mark.parametrize("path", ["missing.wav", "recordings/today"])
def test_a_missing_file(tmp_path: Path, path: str) -> None:
    with pytest.raises(NotFoundError, match=f"input 'audio': file '.*{path}' not found"):
        preprocessor().samples(str(tmp_path / path))


def test_another_rate_without_resampling() -> None:
    clip = encoded(tone(440, 44100, 0.1), 44100, "WAV", "PCM_16")
    with pytest.raises(InputError) as error:
        preprocessor(resample=False).samples(clip)
    assert error.value.message == "input 'audio' is 44100 Hz but the model needs 16000 Hz"
    assert "resample: true" in str(error.value.hint)


def test_a_rate_that_cannot_be_converted() -> None:
    clip = encoded(tone(100, 500, 0.5), 500, "WAV", "PCM_16")
    with pytest.raises(InputError, match=r"'audio' is 500 Hz.*16000 Hz") as error:
        preprocessor().samples(clip)
    assert "16000" in str(error.value.hint)


def test_recordings_longer_than_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio, "MAX_SECONDS", 1)
    clip = encoded(tone(440, 8000, 1.5), 8000, "WAV", "PCM_16")
    for value in (clip, tone(440, RATE, 1.5), (tone(440, 8000, 1.5), 8000)):
        with pytest.raises(InputError, match=r"input 'audio' lasts .* limit") as error:
            preprocessor().samples(value)
        assert isinstance(error.value, GPUXError) and error.value.hint


# -------------------------------------------------------------------------------- real speech
def frame_rms(x: np.ndarray, rate: int, seconds: float = 0.05) -> np.ndarray:
    size = round(rate * seconds)
    count = len(x) // size
    return np.sqrt(np.mean(np.square(x[: count * size].reshape(count, size)), axis=1))


@needs_espeak
def test_spoken_sentences_keep_their_energy_where_the_speech_is(tmp_path: Path) -> None:
    spoken, rate = soundfile.read(
        speak("The quick brown fox jumps over the lazy dog.", tmp_path / "fox.wav"),
        dtype="float32",
    )
    assert rate == ESPEAK_RATE
    # speech, a second of silence, speech again
    recording = np.concatenate([spoken, np.zeros(rate, np.float32), spoken])
    soundfile.write(tmp_path / "two.wav", recording, rate, subtype="PCM_16")

    samples = preprocessor().samples(tmp_path / "two.wav")
    assert len(samples) == round(len(recording) * RATE / rate)
    envelope, original = frame_rms(samples, RATE), frame_rms(recording, rate)
    n = min(len(envelope), len(original))
    assert np.corrcoef(envelope[:n], original[:n])[0, 1] > 0.99

    speech = RATE * len(spoken) // rate
    gap = samples[speech + RATE // 50 : speech + RATE - RATE // 50]
    assert rms(gap) < 1e-4
    loud = frame_rms(samples[: speech - RATE // 2], RATE) > 0.02
    assert loud.mean() > 0.7  # espeak leaves short pauses between words


def test_silence_and_noise_helper(tmp_path: Path) -> None:
    samples = preprocessor().samples(silence_and_noise(tmp_path / "quiet.wav", 3))
    assert len(samples) == 3 * RATE
    assert not samples[:RATE].any()
    assert 0.004 < rms(samples[RATE:]) < 0.01 and np.abs(samples).max() < 0.0101  # PCM16 rounding
