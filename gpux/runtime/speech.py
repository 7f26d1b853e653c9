"""Speech-to-text: a Whisper-class onnxruntime-genai folder (``genai_config.json`` model type
``whisper``), loaded and transcribing audio.

onnxruntime-genai owns the model (encoder, cross-attention cache, decoder loop, search); this
module adds what GPUX promises around it: audio in any form GPUX reads, windows of 30 s for longer
recordings, the prompt Whisper expects (language, task, previous text), language detection,
streaming as an iterator of text pieces, token counts and timings.

Who does what with the audio, decided by reading and measuring onnxruntime-genai 0.18:

* Decoding and resampling are GPUX's audio pipeline (gpux/pipeline/audio.py): genai's decoder
  reads wav, flac and mp3 but not ogg ("Cannot detect audio stream format"), and GPUX's gives the
  same errors, limits and formats as every other audio model.
* The features are genai's own processor (``model.create_multimodal_processor()``), which runs
  the folder's ``audio_processor_config.json`` (STFT, log-mel): so they are computed exactly as the
  model's processor config says, and nothing is re-implemented here. It is handed the samples as
  a 32-bit float wav at the rate that config implies (``chunk_size`` seconds make 3000 frames of
  ``hop_length`` samples: 16 kHz for Whisper). Measured: its mel features of a 16 kHz float wav
  take 5 ms for 3 s of audio on 2 cores.
* The processor silently keeps the first ``chunk_size`` seconds only (a 60 s file gives the same
  3000 frames as its first 30 s), so longer audio is cut here into windows of that length,
  transcribed one after the other; each is one segment of the result. Cuts are at fixed times,
  not at pauses: a word across a boundary may be split.

Language detection (multilingual models with no language given): the decoder reads
``<|startoftranscript|>`` after the first window and the most likely language token wins; the
rest of the prompt is appended to that same generator, so the audio is encoded once.
"""

from __future__ import annotations

import io
import json
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpux.config.generation import Generation
from gpux.config.speech import Speech
from gpux.errors import BackendError, InputError, ModelError
from gpux.runtime.backend import Placement
from gpux.runtime.genai_placement import genai_placement
from gpux.runtime.generative import (
    Completion,
    Stream,
    folder_providers,
    genai_provider_for,
    load_error,
    open_genai_model,
    read_genai_config,
    require_genai,
    search_options,
)

if TYPE_CHECKING:
    from gpux.store import Image

SPEECH_TYPES = ("whisper",)
ENGLISH_ONLY_VOCABULARY = 51865  # OpenAI's rule: a smaller Whisper vocabulary is English-only
# Settings of `generation:` that mean nothing for a transcript (they are refused, not ignored).
TEXT_ONLY_SETTINGS = ("stop", "guidance")


@dataclass
class Segment:
    """One window of the audio and what was heard in it."""

    id: int
    start: float  # seconds
    end: float
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (end of text) or "length" (max_new_tokens reached)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "text": self.text,
            "tokens": self.token_ids,
        }


@dataclass
class Transcription:
    """The text of a recording, its segments and figures."""

    text: str
    language: str | None
    duration: float  # seconds of audio
    segments: list[Segment]
    completion: Completion  # token counts, timings, finish reason of the whole

    def to_json(self) -> dict[str, Any]:
        return {
            **self.completion.to_json(),
            "text": self.text,
            "language": self.language,
            "duration": round(self.duration, 3),
            "segments": [segment.to_json() for segment in self.segments],
        }


@dataclass
class _Prompt:
    """Whisper's special tokens for this folder, from its generation_config.json and tokenizer."""

    start: str = "<|startoftranscript|>"
    previous: str = "<|startofprev|>"
    no_timestamps: str = "<|notimestamps|>"
    multilingual: bool = True
    languages: dict[str, str] = field(default_factory=dict)  # "en" -> "<|en|>"
    tasks: dict[str, str] = field(default_factory=dict)  # "transcribe" -> "<|transcribe|>"

    def tokens(self, language: str | None, task: str) -> str:
        """What follows the start token (and the detected language, when there is one)."""
        if not self.multilingual:
            return self.no_timestamps
        assert language is not None
        return self.languages[language] + self.tasks[task] + self.no_timestamps


def _read_prompt(folder: Path, vocabulary: int) -> _Prompt:
    tokenizer = _json(folder / "tokenizer.json")
    specials = {
        str(token.get("content")): int(token["id"])
        for token in tokenizer.get("added_tokens", [])
        if isinstance(token, dict) and isinstance(token.get("id"), int)
    }
    generation = _json(folder / "generation_config.json")
    names = {identifier: name for name, identifier in specials.items()}
    prompt = _Prompt()
    for key, attribute in (
        ("decoder_start_token_id", "start"),
        ("prev_sot_token_id", "previous"),
        ("no_timestamps_token_id", "no_timestamps"),
    ):
        if generation.get(key) in names:
            setattr(prompt, attribute, names[generation[key]])
    missing = [t for t in (prompt.start, prompt.no_timestamps) if t not in specials]
    if missing:
        raise ModelError(
            f"the tokenizer of '{folder.name}' lacks Whisper's {', '.join(missing)}",
            "copy tokenizer.json from the folder onnxruntime_genai.models.builder wrote",
        )
    multilingual = generation.get("is_multilingual")
    prompt.multilingual = (
        bool(multilingual)
        if isinstance(multilingual, bool)
        else vocabulary >= ENGLISH_ONLY_VOCABULARY
    )
    languages = generation.get("lang_to_id")
    tokens = languages if isinstance(languages, dict) else specials
    for token in tokens:
        code = token[2:-2] if token.startswith("<|") and token.endswith("|>") else ""
        if code.isalpha() and code.islower() and 2 <= len(code) <= 3 and token in specials:
            prompt.languages[code] = token
    for task in ("transcribe", "translate"):
        if f"<|{task}|>" in specials:
            prompt.tasks[task] = f"<|{task}|>"
    if prompt.multilingual and (not prompt.languages or "transcribe" not in prompt.tasks):
        prompt.multilingual = False  # nothing to say which language: read it as English-only
    return prompt


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelError(f"'{path}' is not readable JSON: {exc}") from exc
    return value if isinstance(value, dict) else {}


def _sample_rate(folder: Path) -> tuple[int, float]:
    """(samples per second, seconds per window) that the processor config implies."""
    config = _json(folder / "audio_processor_config.json")
    steps = config.get("feature_extraction", {}).get("sequence", [])
    attributes: dict[str, Any] = {}
    for step in steps if isinstance(steps, list) else []:
        operation = step.get("operation", {}) if isinstance(step, dict) else {}
        attributes.update(operation.get("attrs") or {})
    if not steps:
        raise ModelError(
            f"'{folder.name}' has no audio_processor_config.json with a feature_extraction "
            "sequence, which onnxruntime-genai needs to compute a Whisper's features",
            "copy the whole folder that onnxruntime_genai.models.builder wrote",
        )
    rate = attributes.get("target_sample_rate")
    chunk = float(attributes.get("chunk_size", 30))
    if not isinstance(rate, int):
        # chunk_size seconds are 3000 frames of hop_length samples (Whisper's 30 s, 16 kHz).
        rate = round(3000 * int(attributes.get("hop_length", 160)) / chunk)
    return rate, chunk


class Transcript(Stream):
    """The text pieces of one transcription as they are decoded, window after window; an
    iterator. Once exhausted, ``completion`` holds the totals and ``transcription`` the result
    with its segments. ``close()`` stops it (the current window's generator is freed)."""

    def __init__(
        self,
        model: SpeechModel,
        samples: np.ndarray[Any, Any],
        language: str | None,
        task: str,
        prompt_text: str | None,
        settings: Generation,
    ) -> None:
        self.segments: list[Segment] = []
        self.language = language
        self.duration = len(samples) / model.sample_rate
        per_window = model.window_seconds * model.sample_rate
        self._windows = [
            samples[start : start + int(per_window)]
            for start in range(0, max(1, len(samples)), int(per_window))
        ]
        self._speech = model
        previous = ""
        if prompt_text and prompt_text.strip():
            previous = model.prompt.previous + " " + prompt_text.strip()
        self._previous = previous
        prompt_tokens = len(self._windows) * model.prompt_length(previous)
        pieces = self._transcribe(task, settings)
        self._begin(pieces, prompt_tokens, (), model)

    @property
    def transcription(self) -> Transcription:
        if self.completion is None:
            raise RuntimeError("the transcript is not finished: iterate over it first")
        text = self.completion.text.strip()
        return Transcription(text, self.language, self.duration, self.segments, self.completion)

    def _transcribe(self, task: str, settings: Generation) -> Generator[tuple[int, str], None, str]:
        model = self._speech
        finish = "stop"
        started = False  # the first piece loses Whisper's leading space
        for index, window in enumerate(self._windows):
            start = index * model.window_seconds
            segment = Segment(index, start, start + len(window) / model.sample_rate, "", [], "")
            # Only the first window reads the caller's prompt (Whisper conditions later windows
            # on earlier text; that can loop on a repeated phrase, so GPUX does not).
            previous = self._previous if index == 0 else ""
            generator = model._generator(window, previous, settings)
            try:
                if self.language is None and model.prompt.multilingual:
                    self.language = model._detect(generator)
                generator.append_tokens(model._tokens(model.prompt.tokens(self.language, task)))
                decoder = model.tokenizer.create_stream()
                segment.finish_reason = "length"
                while not generator.is_done():
                    generator.generate_next_token()
                    token = int(generator.get_next_tokens()[0])
                    if token in model.eos_token_ids:
                        segment.finish_reason = "stop"
                        break
                    piece = decoder.decode(token)
                    segment.token_ids.append(token)
                    segment.text += piece
                    if not started:
                        piece = piece.lstrip()
                        started = bool(piece)
                    yield token, piece
            finally:
                del generator
            segment.text = segment.text.strip()
            self.segments.append(segment)
            if segment.finish_reason == "length":
                finish = "length"
        return finish


class SpeechModel:
    """A Whisper-class onnxruntime-genai folder, loaded on one backend.

    ``transcribe(audio)`` returns a :class:`Transcription`, or a :class:`Transcript` of text
    pieces with ``stream=True``. The audio is anything GPUX's audio pipeline reads: a path, file
    bytes (wav, flac, ogg, mp3), base64 text, or samples (``(array, rate)``, or an array at
    ``sample_rate``).
    """

    def __init__(
        self,
        folder: Path,
        backend: str = "auto",
        *,
        device: int = 0,
        threads: int = 0,
        defaults: Generation | None = None,
        speech: Speech | None = None,
        prove_placement: bool = False,
    ) -> None:
        og = require_genai()
        self.folder = folder
        self.config = read_genai_config(folder)
        model_type = self.config["model"].get("type")
        if model_type not in SPEECH_TYPES:
            raise ModelError(
                f"the model folder '{folder.name}' is a '{model_type}', not a speech model",
                "a speech model's genai_config.json has model type 'whisper'",
            )
        self.defaults = defaults or Generation()
        self.speech = speech or Speech()
        provider = genai_provider_for(backend, og)
        fallback = None
        try:
            self._model, log = open_genai_model(
                og, folder, provider, device, threads, prove_placement, encoder=True
            )
        except Exception as exc:  # genai raises RuntimeError/OSError with ONNX Runtime's text
            if backend != "auto" or not folder_providers(self.config):
                raise load_error(folder, backend, exc) from exc
            fallback = f"the folder's provider could not start: {exc}"
            provider = "cpu"
            try:
                self._model, log = open_genai_model(
                    og, folder, provider, device, threads, prove_placement, encoder=True
                )
            except Exception as second:
                raise load_error(folder, backend, second) from second
        self._og = og
        self._opened = (provider, device, threads)
        self.processor = self._model.create_multimodal_processor()
        self.tokenizer = og.Tokenizer(self._model)
        self.image: Image | None = None
        self.placement = genai_placement(self._model, backend, provider, log)
        self.placement.fallback_reason = fallback
        self.eos_token_ids = set(int(i) for i in self.tokenizer.eos_token_ids)
        self.context_length = int(self.config["model"].get("context_length") or 0)
        self.prompt = _read_prompt(folder, int(self.config["model"].get("vocab_size") or 0))
        self.sample_rate, self.window_seconds = _sample_rate(folder)
        self.check_speech(self.speech)

    def prove_placement(self) -> Placement:
        """Open the model once more with ONNX Runtime's placement log on, read where the nodes
        of its encoder and decoder run, and keep that as ``placement`` (for ``gpux doctor``)."""
        if self.placement.details.get("proof") == "onnxruntime-log":
            return self.placement
        provider, device, threads = self._opened
        witness, log = open_genai_model(
            self._og, self.folder, provider, device, threads, True, encoder=True
        )
        proven = genai_placement(witness, self.placement.requested, provider, log)
        del witness
        proven.fallback_reason = self.placement.fallback_reason
        self.placement = proven
        return proven

    @property
    def languages(self) -> list[str]:
        """The language codes this model knows (empty: English only)."""
        return sorted(self.prompt.languages) if self.prompt.multilingual else []

    def check_speech(self, speech: Speech) -> None:
        """An InputError when this model cannot do what ``speech`` asks."""
        if not self.prompt.multilingual:
            if speech.language not in (None, "en"):
                raise InputError(
                    f"this model transcribes English only, not '{speech.language}'",
                    "leave the language out (or say 'en'), or use a multilingual Whisper",
                )
            if speech.task == "translate":
                raise InputError(
                    "this model is English-only: it cannot translate",
                    "use task 'transcribe', or a multilingual Whisper",
                )
        elif speech.language is not None and speech.language not in self.prompt.languages:
            known = ", ".join(self.languages[:20]) + (" ..." if len(self.languages) > 20 else "")
            raise InputError(
                f"this model does not know the language '{speech.language}'",
                f"use one of: {known}; or leave the language out to detect it",
            )

    def prompt_length(self, previous: str) -> int:
        text = previous + self.prompt.start + self.prompt.tokens(self._any_language(), "transcribe")
        return len(self._tokens(text))

    def _any_language(self) -> str | None:
        return next(iter(self.prompt.languages), None) if self.prompt.multilingual else None

    def _tokens(self, text: str) -> list[int]:
        return [int(token) for token in self.tokenizer.encode(text)]

    def samples(self, audio: Any, *, allow_files: bool = True) -> np.ndarray[Any, Any]:
        """Mono float32 samples at ``sample_rate`` (GPUX's audio pipeline: decode, resample)."""
        from gpux.config.pipeline import AudioInput
        from gpux.pipeline.audio import AudioPreprocessor

        spec = AudioInput(sample_rate=self.sample_rate)
        return AudioPreprocessor(spec, "audio", allow_files=allow_files).samples(audio)

    def transcribe(
        self,
        audio: Any,
        *,
        language: str | None = None,
        task: str | None = None,
        prompt: str | None = None,
        stream: bool = False,
        allow_files: bool = True,
        **overrides: Any,
    ) -> Transcription | Transcript:
        """What is said in ``audio``. ``language`` (ISO 639-1) and ``task`` (transcribe or
        translate) override the GPUXfile's ``speech:``; ``prompt`` is text that came before
        (names, spellings) for the first window. Keyword overrides: max_new_tokens (per 30 s
        window), temperature, top_p, top_k, repetition_penalty, seed."""
        self.settings(language, task, overrides)  # a mistake is said before decoding
        samples = self.samples(audio, allow_files=allow_files)
        result = self.start(samples, language=language, task=task, prompt=prompt, **overrides)
        if stream:
            return result
        for _ in result:
            pass
        return result.transcription

    def settings(
        self, language: str | None, task: str | None, overrides: dict[str, Any]
    ) -> tuple[Speech, Generation]:
        """The call's speech and generation settings over the defaults; an InputError when
        they are invalid or this model cannot follow them."""
        refused = [key for key in TEXT_ONLY_SETTINGS if overrides.get(key)]
        if refused:
            raise InputError(
                f"{', '.join(refused)}: not for a speech model",
                "a transcript ends where the speech does; leave these out",
            )
        try:
            settings = self.defaults.merged(**overrides)
            speech = Speech.model_validate(
                {
                    "language": language or self.speech.language,
                    "task": task or self.speech.task,
                }
            )
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise InputError(f"invalid transcription setting: {exc}", "see docs/cli.md") from exc
        self.check_speech(speech)
        return speech, settings

    def start(
        self,
        samples: np.ndarray[Any, Any],
        *,
        language: str | None = None,
        task: str | None = None,
        prompt: str | None = None,
        **overrides: Any,
    ) -> Transcript:
        """The transcript of ``samples`` (mono float32 at ``sample_rate``, see ``samples()``),
        not yet decoded: iterating over it runs the model."""
        speech, settings = self.settings(language, task, overrides)
        chosen = speech.language or (None if self.prompt.multilingual else "en")
        return Transcript(self, samples, chosen, speech.task, prompt, settings)

    def _generator(self, window: np.ndarray[Any, Any], previous: str, settings: Generation) -> Any:
        """A genai generator that has read ``window`` and the prompt up to the start token."""
        import soundfile  # type: ignore[import-untyped]

        og = self._og
        wav = io.BytesIO()
        soundfile.write(wav, window, self.sample_rate, format="WAV", subtype="FLOAT")
        try:
            inputs = self.processor(
                [previous + self.prompt.start], audios=og.Audios.open_bytes(wav.getvalue())
            )
        except Exception as exc:
            raise BackendError(f"onnxruntime-genai could not compute the features: {exc}") from exc
        params = og.GeneratorParams(self._model)
        prompt_tokens = int(inputs["input_ids"].as_numpy().shape[-1])
        task_prompt = self.prompt.tokens(self._any_language(), "transcribe")
        limit = prompt_tokens + len(self._tokens(task_prompt))
        limit += settings.max_new_tokens
        params.set_search_options(**search_options(settings, limit, self.context_length))
        try:
            generator = og.Generator(self._model, params)
            generator.set_inputs(inputs)
        except Exception as exc:
            raise BackendError(f"onnxruntime-genai could not start a transcription: {exc}") from exc
        return generator

    def _detect(self, generator: Any) -> str:
        """The most likely language of the window ``generator`` has read (its first logits)."""
        logits = np.asarray(generator.get_logits()).reshape(-1)
        scores = {
            code: float(logits[self._tokens(token)[0]])
            for code, token in self.prompt.languages.items()
        }
        return max(scores, key=lambda code: scores[code])

    def close(self) -> None:
        self._model = None
        self.processor = None

    def __enter__(self) -> SpeechModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_speech(image: Image) -> bool:
    """True for an image built from a speech-to-text model (a genai folder of a Whisper)."""
    info = image.config.get("generative")
    return isinstance(info, dict) and info.get("type") in SPEECH_TYPES


def load_speech(image: Image, backend: str | None = None) -> SpeechModel:
    """A speech image loaded on ``backend`` (None: its GPUXfile's ``runtime.backend``)."""
    from gpux.config.schema import Runtime
    from gpux.store import mediatypes
    from gpux.store.folders import layout_folder

    gpuxfile = image.config.get("gpuxfile", {})
    runtime = Runtime.model_validate(gpuxfile.get("runtime", {}))
    model = SpeechModel(
        layout_folder(image, mediatypes.GENAI_FILE),
        backend or runtime.backend.value,
        device=runtime.device,
        threads=runtime.threads,
        defaults=Generation.model_validate(gpuxfile.get("generation") or {}),
        speech=Speech.model_validate(gpuxfile.get("speech") or {}),
    )
    model.image = image
    return model
