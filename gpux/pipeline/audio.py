"""Audio -> mono float32 samples at the model's rate, cut into windows for streaming models.

What users send (``decode_audio``):

* file content: ``bytes``, ``bytearray`` or ``memoryview`` of a wav, flac or ogg (anything
  libsndfile reads, mp3 included);
* a ``Path``, or a ``str`` naming an existing file;
* a base64 ``str``, raw or as a data URL (``data:audio/wav;base64,...``), as JSON clients send;
* samples: a 1-D float array (or a list of numbers), taken to be at the model's rate already,
  or a ``(samples, sample_rate)`` tuple when it is not.

Resampling is a polyphase FIR with a Kaiser-windowed sinc, in numpy (``resample``).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from gpux.config.pipeline import AudioInput
from gpux.errors import ConfigValidationError, InputError, NotFoundError, value_kind

Samples = np.ndarray[Any, np.dtype[np.float32]]

MAX_SECONDS = 3600
MIN_RATE, MAX_RATE = 1000, 768000
FORMATS_HINT = "send a wav, flac or ogg file"

# Filter design: the sinc spans HALF_WIDTH samples of the lower rate on each side; the cutoff
# sits at ROLLOFF x the lower Nyquist frequency (-6 dB there), and BETA sets the Kaiser window
# for ~80 dB of rejection. Measured 44.1 -> 16 kHz: flat (< 0.02 dB) to 6.8 kHz, -35 dB at
# 7.8 kHz, more than 85 dB down from 8.1 kHz on, so nothing audible aliases.
HALF_WIDTH = 32
ROLLOFF = 0.92
BETA = 8.0

_DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w=.+-]+)*;base64,", re.IGNORECASE)
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}\s*$")
_SMALLEST_FILE = 64  # base64 characters of a file header; shorter strings are taken as paths


# -------------------------------------------------------------------------------------- decode
def decode_audio(value: Any, name: str, *, allow_files: bool = True) -> tuple[Samples, int | None]:
    """Mono float32 samples and their rate from what a user sent for input ``name``.

    The rate is ``None`` for bare samples (an array or a list): they are taken to be at the
    model's rate, which only the caller knows. Channels are averaged into one.
    ``allow_files=False`` (the server) refuses paths: a client must not make it read files.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return _read(bytes(value), name, "the data")
    if isinstance(value, Path):
        if not allow_files:
            raise _no_paths(name)
        return _read_path(value, name)
    if isinstance(value, str):
        return _decode_string(value, name, allow_files)
    if isinstance(value, tuple) and len(value) == 2 and _is_rate(value[1]):
        samples = _samples_from_array(value[0], name)
        _check_duration(len(samples), int(value[1]), name)
        return samples, int(value[1])
    if isinstance(value, np.ndarray | list):
        return _samples_from_array(value, name), None
    raise InputError(
        f"input '{name}' must be an audio file, its bytes or base64 text, got {value_kind(value)}",
        f"{FORMATS_HINT} (a path, bytes, or base64 text)",
    )


def _is_rate(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _decode_string(text: str, name: str, allow_files: bool) -> tuple[Samples, int | None]:
    match = _DATA_URL.match(text)
    if match:
        return _read(_base64(text[match.end() :], name), name, "the data URL")
    stripped = text.strip()
    path = _as_path(stripped) if allow_files else None
    if path is not None and _is_file(path):
        return _read_path(path, name)
    if len(stripped) >= _SMALLEST_FILE and _BASE64.match(stripped):
        return _read(_base64(stripped, name), name, "the base64 data")
    if not allow_files:
        raise _no_paths(name)
    return _read_path(path or Path(stripped), name)  # not a file: says so


def _no_paths(name: str) -> InputError:
    return InputError(
        f"input '{name}': file paths are not accepted here",
        "send the audio file's bytes or base64 instead",
    )


def _as_path(text: str) -> Path | None:
    try:
        return Path(text).expanduser() if len(text) < 4096 else None
    except RuntimeError:  # "~someone" with no such user
        return Path(text)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL character
        return False


def _base64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(
            f"input '{name}' is not valid base64",
            "encode the file's bytes with base64, e.g. base64.b64encode(open(path, 'rb').read())",
        ) from None


def _read_path(path: Path, name: str) -> tuple[Samples, int]:
    if not _is_file(path):
        shown = str(path) if len(str(path)) <= 80 else "..." + str(path)[-77:]
        raise NotFoundError(
            f"input '{name}': file '{shown}' not found",
            "check the path, or send the file's bytes or base64 text instead",
        )
    if path.stat().st_size == 0:
        raise InputError(f"input '{name}': '{path.name}' is empty", FORMATS_HINT)
    return _read(path, name, f"'{path.name}'")


def _read(source: bytes | Path, name: str, what: str) -> tuple[Samples, int]:
    import soundfile  # type: ignore[import-untyped]

    if isinstance(source, bytes) and not source:
        raise InputError(f"input '{name}': {what} is empty", FORMATS_HINT)
    try:
        with soundfile.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else source) as f:
            rate = int(f.samplerate)
            _check_duration(f.frames, rate, name)
            data = f.read(dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, OSError) as exc:
        reason = str(exc).rsplit(": ", 1)[-1].strip().rstrip(".") or type(exc).__name__
        raise InputError(
            f"input '{name}': {what} is not audio that can be decoded ({reason})", FORMATS_HINT
        ) from None
    if data.shape[0] == 0:
        raise InputError(f"input '{name}': {what} holds no samples", FORMATS_HINT)
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32), rate


def _samples_from_array(value: Any, name: str) -> Samples:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        array = np.asarray([])
    if array.ndim != 1 or array.dtype.kind not in "fiu" or array.dtype == np.bool_:
        raise InputError(
            f"input '{name}': samples must be a 1-D list of numbers, got "
            f"{f'shape {list(array.shape)} of {array.dtype}' if array.size else value_kind(value)}",
            "send mono float samples in [-1, 1], e.g. samples.mean(axis=1) for [frames, channels]",
        )
    if array.size == 0:
        raise InputError(f"input '{name}' holds no samples", "send at least one sample")
    if array.dtype.kind in "iu":
        # Integer PCM, scaled as libsndfile does: int16 / 2**15 etc.
        scale = float(2 ** (array.dtype.itemsize * 8 - 1))
        offset = scale if array.dtype.kind == "u" else 0.0
        array = (array.astype(np.float64) - offset) / scale
    samples = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(samples).all():
        raise InputError(
            f"input '{name}' holds NaN or infinite samples", "send finite samples in [-1, 1]"
        )
    return samples


def _check_duration(frames: int, rate: int, name: str) -> None:
    if frames > MAX_SECONDS * rate:
        raise InputError(
            f"input '{name}' lasts {frames / rate / 3600:.1f} h, more than the "
            f"{MAX_SECONDS // 3600} h limit",
            "cut the recording into parts of at most an hour and send them one by one",
        )


# ------------------------------------------------------------------------------------ resample
def resample(samples: np.ndarray[Any, Any], source_rate: int, target_rate: int) -> Samples:
    """Band-limited conversion of 1-D ``samples`` from ``source_rate`` to ``target_rate`` (Hz).

    Output sample ``n`` sits at input time ``n * source_rate / target_rate`` and the output
    has ``round(len(samples) * target_rate / source_rate)`` samples (halves rounded up).
    Frequencies above ``ROLLOFF`` x the lower rate's Nyquist frequency are filtered out, so
    downsampling does not alias; beyond the ends the signal is taken to be silent.
    """
    if source_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {source_rate} and {target_rate}")
    x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
    if source_rate == target_rate:
        return x.copy()
    divisor = math.gcd(source_rate, target_rate)
    up, down = target_rate // divisor, source_rate // divisor
    n_out = (len(x) * up + down // 2) // down
    if n_out == 0:
        return np.zeros(0, np.float32)

    # The kernel spans +-reach input samples; 2 * taps input samples around each output.
    scale = min(1.0, up / down)
    reach = HALF_WIDTH / scale
    taps = math.ceil(reach)
    padded = np.concatenate([np.zeros(taps - 1, np.float32), x, np.zeros(taps + 1, np.float32)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * taps)  # row i: x[i-taps+1:]
    offsets = np.arange(-(taps - 1), taps + 1, dtype=np.float64)

    out = np.empty(n_out, np.float32)
    if up <= 4096 and up * 16 <= n_out:
        # Polyphase: outputs n0, n0 + up, n0 + 2 up ... share one phase, so one set of weights,
        # and read rows base, base + down ... of the windows: a strided view, one mat-vec each.
        phases = np.arange(up, dtype=np.float64) / up
        weights = _kernel(phases[:, None] - offsets, scale, reach).astype(np.float32)
        for first in range(up):
            base, phase = divmod(first * down, up)
            count = len(range(first, n_out, up))
            out[first::up] = windows[base : base + count * down : down] @ weights[phase]
        return out

    # Many phases with few outputs each (unusual rate pairs, short clips): the weights of each
    # output are interpolated between those of _GRID evenly spaced phases (error < 1e-5), or
    # computed exactly when there are fewer outputs than that.
    grid = step = None
    if n_out > _GRID:
        exact = _kernel(np.arange(_GRID + 1)[:, None] / _GRID - offsets, scale, reach)
        grid, step = exact.astype(np.float32), np.diff(exact, axis=0).astype(np.float32)
    chunk = max(1, (1 << 18) // taps)
    for start in range(0, n_out, chunk):
        n = np.arange(start, min(n_out, start + chunk), dtype=np.int64)
        rows, remainders = np.divmod(n * down, up)
        if grid is None or step is None:
            weights = _kernel((remainders / up)[:, None] - offsets, scale, reach)
        else:
            position = remainders * (_GRID / up)
            index = position.astype(np.int64)
            fraction = (position - index).astype(np.float32)[:, None]
            weights = grid[index] + fraction * step[index]
        out[start : start + len(n)] = np.einsum(
            "ij,ij->i", windows[rows], weights.astype(np.float32, copy=False)
        )
    return out


_GRID = 512


def _kernel(t: np.ndarray[Any, Any], scale: float, reach: float) -> np.ndarray[Any, Any]:
    """Kaiser-windowed sinc at ``t`` input samples from the output position."""
    cutoff = ROLLOFF * scale  # in units of the input's Nyquist frequency
    inside = np.clip(1.0 - (t / reach) ** 2, 0.0, None)
    window = _bessel_i0(BETA * np.sqrt(inside)) / _bessel_i0(np.array(BETA))
    return np.where(np.abs(t) < reach, cutoff * np.sinc(cutoff * t) * window, 0.0)


# I0(x) = sum_k (x^2/4)^k / (k!)^2, in Horner form: 25 terms are exact in float64 for x <= 10,
# and three times faster than np.i0.
_I0_TERMS = np.array([1 / math.factorial(k) ** 2 for k in range(25)][::-1])


def _bessel_i0(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(np.polyval(_I0_TERMS, x * x / 4))


# -------------------------------------------------------------------------------- preprocessor
class AudioPreprocessor:
    """One audio input of a GPUXfile: decode, mix to mono, resample, cut into windows."""

    def __init__(self, spec: AudioInput, name: str = "audio", *, allow_files: bool = True) -> None:
        self.spec = spec
        self.name = name
        self.allow_files = allow_files

    def samples(self, value: Any) -> Samples:
        """Mono float32 samples at ``spec.sample_rate`` from anything ``decode_audio`` accepts."""
        samples, rate = decode_audio(value, self.name, allow_files=self.allow_files)
        target = self.spec.sample_rate
        if rate is None:
            _check_duration(len(samples), target, self.name)
            return samples
        if rate == target:
            return samples
        if not MIN_RATE <= rate <= MAX_RATE:
            raise InputError(
                f"input '{self.name}' is {rate} Hz, a rate that cannot be converted to the "
                f"model's {target} Hz (supported: {MIN_RATE}-{MAX_RATE} Hz)",
                f"convert the file to {target} Hz, e.g. ffmpeg -i in.wav -ar {target} out.wav",
            )
        if not self.spec.resample:
            raise InputError(
                f"input '{self.name}' is {rate} Hz but the model needs {target} Hz",
                f"set audio.resample: true or convert the file to {target} Hz",
            )
        return resample(samples, rate, target)

    def frames(self, samples: np.ndarray[Any, Any]) -> Samples:
        """Windows ``[n_frames, context + size]``, or the whole signal as ``[1, n]`` unframed.

        Window ``i`` holds the ``context`` samples before position ``i * size`` (zeros before
        the start) and then ``size`` new samples; the last one is zero-padded. There is always
        at least one window.
        """
        x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        framing = self.spec.frame
        if framing is None:
            return x[None, :].copy()
        size, context = framing.size, framing.context
        count = max(1, -(-len(x) // size))
        padded = np.zeros(context + count * size, np.float32)
        padded[context : context + len(x)] = x
        windows = np.lib.stride_tricks.sliding_window_view(padded, context + size)[::size]
        return np.ascontiguousarray(windows[:count])

    @property
    def frame_seconds(self) -> float | None:
        """Duration of the new samples in one window, or None without framing."""
        framing = self.spec.frame
        return None if framing is None else framing.size / self.spec.sample_rate


def initial_states(spec: AudioInput) -> dict[str, np.ndarray[Any, Any]]:
    """The first value of each carried state, by model input name."""
    states: dict[str, np.ndarray[Any, Any]] = {}
    for state in spec.state:
        try:
            dtype = np.dtype(state.dtype)
        except TypeError:
            raise ConfigValidationError(
                f"state '{state.input}': unknown dtype '{state.dtype}'",
                "use a numpy type name such as float32, float16 or int64",
            ) from None
        states[state.input] = np.full(state.shape, state.initial, dtype=dtype)
    return states


__all__ = [
    "MAX_SECONDS",
    "AudioPreprocessor",
    "decode_audio",
    "initial_states",
    "resample",
]
