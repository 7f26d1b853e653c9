"""The tiny Whisper of tools/make_tiny_whisper.py, checked without GPUX: onnxruntime-genai runs
it with its own processor, and its decoder gives with a KV cache what it gives without one, so a
cache bug in the fixture cannot hide behind two runs of the same engine."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import onnxruntime_genai as og
import soundfile

from tools.make_tiny_whisper import ENDS_AFTER, FRAMES, MELS, make_tiny_whisper

PROMPT = "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"


def wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def tone(hertz: float, seconds: float = 2.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hertz * t)).astype(np.float32)


def genai_transcript(folder: Path, audio: bytes) -> list[int]:
    model = og.Model(str(folder))
    processor = model.create_multimodal_processor()
    inputs = processor([PROMPT], audios=og.Audios.open_bytes(audio))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=448)
    generator = og.Generator(model, params)
    generator.set_inputs(inputs)
    while not generator.is_done():
        generator.generate_next_token()
    return [int(t) for t in generator.get_sequence(0)]


def test_genai_runs_the_folder_and_the_words_depend_on_the_audio(tiny_whisper: Path) -> None:
    low = genai_transcript(tiny_whisper, wav(tone(220)))
    noise = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1
    other = genai_transcript(tiny_whisper, wav(noise))
    prompt = [int(t) for t in og.Tokenizer(og.Model(str(tiny_whisper))).encode(PROMPT)]
    assert len(prompt) == 4  # the special tokens are single tokens
    assert low[:4] == other[:4] == prompt
    assert low != other
    # The designed end: the logits at position ENDS_AFTER pick <|endoftext|> (genai does not
    # append it), so a sequence holds at most ENDS_AFTER + 1 tokens.
    assert len(low) <= ENDS_AFTER + 1 and len(other) <= ENDS_AFTER + 1


def test_the_decoder_gives_with_its_cache_what_it_gives_without(tiny_whisper: Path) -> None:
    encoder = ort.InferenceSession(str(tiny_whisper / "encoder.onnx"))
    decoder = ort.InferenceSession(str(tiny_whisper / "decoder.onnx"))
    features = np.random.default_rng(1).standard_normal((1, MELS, FRAMES)).astype(np.float32)
    encoded = dict(
        zip(
            [o.name for o in encoder.get_outputs()],
            encoder.run(None, {"audio_features": features}),
            strict=True,
        )
    )
    cross = {
        name.replace("present", "past"): value
        for name, value in encoded.items()
        if name.startswith("present_")
    }
    layers = sum(1 for name in cross if name.startswith("past_key_cross_"))
    heads, head = cross["past_key_cross_0"].shape[1], cross["past_key_cross_0"].shape[3]
    empty = np.zeros((1, heads, 0, head), np.float32)
    tokens = np.array([[1, 2, 7, 11, 300, 301, 302]], np.int32)

    def run(ids: np.ndarray, past: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in decoder.get_outputs()]
        return dict(zip(names, decoder.run(None, {"input_ids": ids, **past, **cross}), strict=True))

    no_past = {f"past_{kind}_self_{i}": empty for i in range(layers) for kind in ("key", "value")}
    whole = run(tokens, no_past)["logits"]
    first = run(tokens[:, :4], no_past)
    steps = [first["logits"]]
    past = {name.replace("present", "past"): v for name, v in first.items() if "self" in name}
    for position in range(4, tokens.shape[1]):
        out = run(tokens[:, position : position + 1], past)
        steps.append(out["logits"])
        past = {name.replace("present", "past"): v for name, v in out.items() if "self" in name}
    np.testing.assert_allclose(np.concatenate(steps, axis=1), whole, rtol=1e-4, atol=1e-4)


def test_the_same_seed_makes_the_same_bytes(tiny_whisper: Path, tmp_path: Path) -> None:
    again = make_tiny_whisper(tmp_path / "again")
    for path in sorted(tiny_whisper.iterdir()):
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    size = sum(path.stat().st_size for path in tiny_whisper.iterdir())
    assert size < 2_000_000
