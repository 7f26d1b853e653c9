"""Real speech and non-speech recordings for audio tests, made on the spot.

Speech comes from espeak-ng (installed by ``make system-deps``, which ``make test`` runs first);
it writes 22050 Hz mono PCM16 wav files.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(
    ESPEAK is None, reason="espeak-ng is not installed; run 'make system-deps'"
)
ESPEAK_RATE = 22050


def speak(text: str, path: Path, words_per_minute: int = 150) -> Path:
    """``text`` spoken by espeak-ng into the wav file ``path`` (22050 Hz mono PCM16)."""
    if ESPEAK is None:
        pytest.skip("espeak-ng is not installed; run 'make system-deps'")
    subprocess.run(
        [ESPEAK, "-s", str(words_per_minute), "-w", str(path), text],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


def silence_and_noise(path: Path, seconds: float, rate: int = 16000) -> Path:
    """A wav of ``seconds``: 1 s of digital silence, then white noise of amplitude 0.01.

    The noise is seeded, so every run writes the same file.
    """
    total = round(seconds * rate)
    signal = np.zeros(total, np.float32)
    quiet = min(rate, total)
    noise = np.random.default_rng(0).uniform(-0.01, 0.01, total - quiet)
    signal[quiet:] = noise.astype(np.float32)
    soundfile.write(path, signal, rate, subtype="PCM_16")
    return path
