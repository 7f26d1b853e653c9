"""The generative engine: an onnxruntime-genai model folder, loaded and generating text.

onnxruntime-genai owns the loop (KV cache, search, sampling, guidance through llguidance); this
module adds what GPUX promises around it: settings from the GPUXfile with per-call overrides,
the folder's chat template, stop strings (genai stops on end-of-sequence tokens only), streaming
as an iterator of text pieces, token counts and timings, and where the model runs.

Where the model runs: gpux/runtime/genai_placement.py. Several generations as the rows of one
batch: gpux/runtime/generative_batch.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpux.config.generation import Generation
from gpux.errors import BackendError, InputError, ModelError
from gpux.runtime.backend import Placement
from gpux.runtime.genai_placement import genai_placement

if TYPE_CHECKING:
    from gpux.store import Image

# GPUX backend -> onnxruntime-genai provider name (``og.Config.append_provider``).
GENAI_PROVIDERS = {"cuda": "cuda", "directml": "dml", "openvino": "OpenVINO", "webgpu": "WebGPU"}


def require_genai() -> Any:
    """``onnxruntime_genai``, or a BackendError naming the extra that installs it."""
    try:
        import onnxruntime_genai
    except ImportError as exc:
        raise BackendError(
            f"onnxruntime-genai is not installed ({exc})",
            "install the build paired with your ONNX Runtime: pip install 'gpux[cpu]' "
            "(onnxruntime-genai) or 'gpux[cuda]' (onnxruntime-genai-cuda)",
        ) from exc
    import os

    # gpux/__init__.py turns ONNX Runtime's telemetry off; genai has a switch of its own.
    if os.environ.get("ORT_DISABLE_TELEMETRY", "1") != "0":
        onnxruntime_genai.disable_telemetry_events()
    return onnxruntime_genai


@dataclass
class Completion:
    """One generation's text and figures. ``tokens_per_second`` is the decode rate: tokens after
    the first over the time after the first (the prompt's processing is in ``time_to_first_token``)."""

    text: str
    finish_reason: str  # "stop" (end-of-sequence token or stop string) or "length"
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token: float | None  # seconds; None when nothing was generated
    seconds: float
    token_ids: list[int] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float | None:
        if self.time_to_first_token is None or self.completion_tokens < 2:
            return None
        decoding = self.seconds - self.time_to_first_token
        return (self.completion_tokens - 1) / decoding if decoding > 0 else None

    def to_json(self) -> dict[str, Any]:
        ttft = self.time_to_first_token
        rate = self.tokens_per_second
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            },
            "time_to_first_token_ms": None if ttft is None else round(ttft * 1e3, 3),
            "tokens_per_second": None if rate is None else round(rate, 2),
            "seconds": round(self.seconds, 4),
        }


class Stream:
    """The pieces of text of one generation, as they are decoded; an iterator.

    ``completion`` is set once the iterator is exhausted. Text that could begin a stop string is
    held back until it cannot, so the pieces never show a stop string or a part of one, and they
    concatenate to ``completion.text``. ``close()`` (or leaving a ``for`` loop early and dropping
    the stream) ends the generation.
    """

    def __init__(
        self, model: GenerativeModel, prompt_ids: Sequence[int], settings: Generation
    ) -> None:
        self._begin(model._pieces(prompt_ids, settings), len(prompt_ids), settings.stop, model)

    @classmethod
    def over(
        cls,
        pieces: Generator[tuple[int, str], None, str],
        prompt_tokens: int,
        stops: Sequence[str],
        owner: object,
        *,
        started: float = 0.0,
    ) -> Stream:
        """A stream over ``pieces`` made elsewhere (a row of a batch, gpux/runtime/
        generative_batch.py): ``owner`` is kept alive while the stream is; ``started`` (a
        ``time.perf_counter()``) is when its prompt began to run, if before the first read."""
        stream = cls.__new__(cls)
        stream._begin(pieces, prompt_tokens, stops, owner)
        stream._started = started
        return stream

    def _begin(
        self,
        pieces: Generator[tuple[int, str], None, str],
        prompt_tokens: int,
        stops: Sequence[str],
        owner: object,
    ) -> None:
        """Set up over ``pieces`` ((token, text) per generated token, returning the finish
        reason); other engines (gpux/runtime/speech.py) subclass the stream and call this."""
        self._pieces = pieces
        self.completion: Completion | None = None
        self._started = 0.0  # set when the first piece is asked for: the prompt runs then
        self._first: float | None = None
        self._model = owner  # kept alive while the stream is
        self._prompt_tokens = prompt_tokens
        self._stops = stops
        self._text = ""  # everything decoded (before any stop string is cut)
        self._sent = 0  # characters of _text already yielded
        self._finish = "length"
        self._done = False
        self.token_ids: list[int] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if not self._started:
            self._started = time.perf_counter()
        while not self._done:
            try:
                token, piece = next(self._pieces)
            except StopIteration as end:
                self._finish = str(end.value or "length")
                self._done = True
                break
            if self._first is None:
                self._first = time.perf_counter() - self._started
            self.token_ids.append(token)
            self._text += piece
            cut = _first_stop(self._text, self._stops, self._sent)
            if cut is not None:
                self._text = self._text[:cut]
                self._finish = "stop"
                self._done = True
                self._pieces.close()
                break
            ready = len(self._text) - _held_back(self._text, self._stops)
            if ready > self._sent:
                piece_out = self._text[self._sent : ready]
                self._sent = ready
                return piece_out
        if self.completion is None:
            self.completion = Completion(
                text=self._text,
                finish_reason=self._finish,
                prompt_tokens=self._prompt_tokens,
                completion_tokens=len(self.token_ids),
                time_to_first_token=self._first,
                seconds=time.perf_counter() - self._started,
                token_ids=list(self.token_ids),
            )
        if self._sent < len(self._text):
            rest = self._text[self._sent :]
            self._sent = len(self._text)
            return rest
        raise StopIteration

    @property
    def prompt_tokens(self) -> int:
        return self._prompt_tokens

    def close(self) -> None:
        """Stop generating (frees the generator and its KV cache)."""
        self._pieces.close()
        self._done = True


def _one_line(exc: BaseException) -> str:
    """llguidance's multi-line report (source echo, carets) as one line of its messages."""
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [
        line for line in lines if line and not set(line) <= {"^", " "} and not _ECHO.match(line)
    ]
    return "; ".join(kept)


_ECHO = re.compile(r"^\d+ \|")


def _first_stop(text: str, stops: Sequence[str], sent: int) -> int | None:
    """Where the earliest stop string starts in ``text``, searching from what may still change."""
    found = None
    for stop in stops:
        at = text.find(stop, max(0, sent - len(stop) + 1))
        if at != -1 and (found is None or at < found):
            found = at
    return found


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters could be the start of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class GenerativeModel:
    """An onnxruntime-genai model folder, loaded on one backend.

    ``generate(prompt)`` continues a text; ``chat(messages)`` applies the folder's chat template
    first. Both take the ``generation`` defaults, overridden per call by keyword, and return a
    :class:`Completion`, or a :class:`Stream` of text pieces with ``stream=True``.
    """

    def __init__(
        self,
        folder: Path,
        backend: str = "auto",
        *,
        device: int = 0,
        threads: int = 0,
        defaults: Generation | None = None,
        prove_placement: bool = False,
    ) -> None:
        og = require_genai()
        self.folder = folder
        self.defaults = defaults or Generation()
        self.config = read_genai_config(folder)
        provider = genai_provider_for(backend, og)
        fallback = None
        try:
            self._model, log = open_genai_model(
                og, folder, provider, device, threads, prove_placement
            )
        except Exception as exc:  # genai raises RuntimeError/OSError with ONNX Runtime's text
            if backend != "auto" or not folder_providers(self.config):
                raise load_error(folder, backend, exc) from exc
            # `auto` keeps the folder's providers where they work, and the CPU where they don't.
            fallback = f"the folder's provider could not start: {exc}"
            provider = "cpu"
            try:
                self._model, log = open_genai_model(
                    og, folder, provider, device, threads, prove_placement
                )
            except Exception as second:
                raise load_error(folder, backend, second) from second
        self.tokenizer = og.Tokenizer(self._model)
        self._og = og
        self._opened = (provider, device, threads)
        self.image: Image | None = None
        self.placement = genai_placement(self._model, backend, provider, log)
        self.placement.fallback_reason = fallback
        self.chat_template = chat_template_of(folder)
        self.eos_token_ids = set(int(i) for i in self.tokenizer.eos_token_ids)
        self.context_length = int(self.config["model"].get("context_length") or 0)
        # genai reads this id at the end of a batch row as padding (runtime/generative_batch.py)
        pad = self.config["model"].get("pad_token_id")
        self.pad_token_id: int | None = pad if isinstance(pad, int) else None

    def prove_placement(self) -> Placement:
        """Open the model once more with ONNX Runtime's placement log on, read where its nodes
        run, and keep that as ``placement`` (for ``gpux doctor``; the build proves it at load)."""
        if self.placement.details.get("proof") == "onnxruntime-log":
            return self.placement
        provider, device, threads = self._opened
        witness, log = open_genai_model(
            self._og, self.folder, provider, device, threads, prove=True
        )
        proven = genai_placement(witness, self.placement.requested, provider, log)
        del witness
        proven.fallback_reason = self.placement.fallback_reason
        self.placement = proven
        return proven

    # ---- text -> tokens
    def encode(self, text: str) -> list[int]:
        return [int(token) for token in self.tokenizer.encode(text)]

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The conversation as the model was trained to read it, ending with the assistant's turn."""
        if self.chat_template is None:
            raise InputError(
                f"the model folder '{self.folder.name}' has no chat template",
                "use generate(prompt) for plain text continuation, or add 'chat_template' to "
                "its tokenizer_config.json",
            )
        for message in messages:
            if not isinstance(message.get("role"), str) or not isinstance(
                message.get("content"), str
            ):
                raise InputError(
                    f"a chat message must have a text 'role' and 'content' (got {dict(message)})",
                    'write messages as [{"role": "user", "content": "Hello"}]',
                )
        text: str = self.tokenizer.apply_chat_template(
            json.dumps([dict(m) for m in messages]),
            template_str=self.chat_template,
            add_generation_prompt=True,
        )
        return text

    # ---- generation
    def generate(
        self, prompt: str, *, stream: bool = False, **overrides: Any
    ) -> Completion | Stream:
        """Continue ``prompt``. Keyword overrides: max_new_tokens, temperature, top_p, top_k,
        repetition_penalty, stop, seed, guidance (see ``generation:`` in docs/gpuxfile.md)."""
        return self._start(self.encode(prompt), stream, overrides)

    def generate_ids(
        self, prompt_ids: Sequence[int], *, stream: bool = False, **overrides: Any
    ) -> Completion | Stream:
        """``generate`` for a prompt already tokenised (this model's token ids)."""
        return self._start(self.checked_ids(prompt_ids), stream, overrides)

    def checked_ids(self, prompt_ids: Sequence[int]) -> list[int]:
        """``prompt_ids`` as ints, once each is known to be in the vocabulary (else InputError)."""
        vocabulary = int(self.config["model"].get("vocab_size") or 0)
        bad = next((i for i in prompt_ids if i < 0 or (vocabulary and i >= vocabulary)), None)
        if bad is not None:
            raise InputError(
                f"token id {bad} is not in the model's vocabulary (0 to {vocabulary - 1})",
                "send token ids of this model's own tokenizer, or send the text",
            )
        return [int(i) for i in prompt_ids]

    def chat(
        self, messages: Sequence[Mapping[str, str]], *, stream: bool = False, **overrides: Any
    ) -> Completion | Stream:
        """Answer the conversation ``[{"role": "user", "content": ...}, ...]``."""
        return self._start(self.encode(self.chat_prompt(messages)), stream, overrides)

    def _start(
        self, prompt_ids: list[int], stream: bool, overrides: dict[str, Any]
    ) -> Completion | Stream:
        result = Stream(self, prompt_ids, self.checked_settings(prompt_ids, overrides))
        if stream:
            return result
        for _ in result:
            pass
        assert result.completion is not None
        return result.completion

    def checked_settings(
        self, prompt_ids: Sequence[int], overrides: Mapping[str, Any]
    ) -> Generation:
        """The defaults with ``overrides``, once they and the prompt are known to be valid
        (an InputError says what is not)."""
        try:
            settings = self.defaults.merged(**overrides)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise InputError(f"invalid generation setting: {exc}", "see docs/gpuxfile.md") from exc
        if not prompt_ids:
            raise InputError("the prompt is empty", "give some text to continue")
        if self.context_length and len(prompt_ids) >= self.context_length:
            raise InputError(
                f"the prompt has {len(prompt_ids)} tokens; the model reads at most "
                f"{self.context_length} (its context length), answer included",
                "shorten the prompt",
            )
        return settings

    def _pieces(
        self, prompt_ids: Sequence[int], settings: Generation
    ) -> Generator[tuple[int, str], None, str]:
        """(token, text piece) per generated token; returns the finish reason."""
        generator = self.open_generator(settings, len(prompt_ids) + settings.max_new_tokens)
        try:
            generator.append_tokens(list(prompt_ids))
        except Exception as exc:
            raise BackendError(f"onnxruntime-genai failed on the prompt: {exc}") from exc
        decoder = self.tokenizer.create_stream()
        try:
            while not generator.is_done():
                generator.generate_next_token()
                token = int(generator.get_next_tokens()[0])
                if token in self.eos_token_ids:
                    return "stop"
                yield token, decoder.decode(token)
            return "length"
        finally:
            del generator

    def open_generator(self, settings: Generation, limit: int, batch_size: int = 1) -> Any:
        """An ``og.Generator`` of ``batch_size`` rows for ``settings``, generating up to ``limit``
        tokens per row, prompt (padding included) and answer together."""
        og = self._og
        params = og.GeneratorParams(self._model)
        options = search_options(settings, limit, self.context_length)
        if batch_size > 1:
            options["batch_size"] = batch_size
        params.set_search_options(**options)
        if settings.guidance is not None:
            try:
                params.set_guidance(settings.guidance.kind, settings.guidance.data)
            except Exception as exc:
                raise InputError(
                    f"onnxruntime-genai refused the {settings.guidance.kind} guidance: {exc}",
                    "check the schema, regex or grammar",
                ) from exc
        try:
            generator = og.Generator(self._model, params)
        except Exception as exc:
            if settings.guidance is not None and "grammar" in str(exc):
                # llguidance compiles the schema, regex or grammar here, not in set_guidance.
                raise InputError(
                    f"the {settings.guidance.kind} guidance does not compile: {_one_line(exc)}",
                    "fix the schema, regex or grammar (llguidance's dialect: no look-around in "
                    "regexes)",
                ) from exc
            raise BackendError(f"onnxruntime-genai could not start a generation: {exc}") from exc
        return generator

    def close(self) -> None:
        self._model = None

    def __enter__(self) -> GenerativeModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_generative(image: Image) -> bool:
    """True for an image built from a generative model (``model.format: genai``)."""
    return isinstance(image.config.get("generative"), dict)


def load_generative(image: Image, backend: str | None = None) -> GenerativeModel:
    """A generative image loaded on ``backend`` (None: its GPUXfile's ``runtime.backend``)."""
    from gpux.config.schema import Runtime
    from gpux.store import mediatypes
    from gpux.store.folders import layout_folder

    gpuxfile = image.config.get("gpuxfile", {})
    runtime = Runtime.model_validate(gpuxfile.get("runtime", {}))
    defaults = Generation.model_validate(gpuxfile.get("generation") or {})
    model = GenerativeModel(
        layout_folder(image, mediatypes.GENAI_FILE),
        backend or runtime.backend.value,
        device=runtime.device,
        threads=runtime.threads,
        defaults=defaults,
    )
    model.image = image
    return model


def open_genai_model(
    og: Any,
    folder: Path,
    provider: str | None,
    device: int,
    threads: int,
    prove: bool,
    *,
    encoder: bool = False,
) -> tuple[Any, str]:
    """The genai model on ``provider`` (None: the folder's), and ONNX Runtime's log of its
    session creation when ``prove`` (empty otherwise). ``encoder``: the folder has an encoder
    session too (Whisper), which gets the same options."""
    settings = og.Config(str(folder))
    overlay: dict[str, Any] = {}
    if threads:
        overlay["intra_op_num_threads"] = threads
    if prove:
        overlay["log_severity_level"] = 0  # ONNX Runtime logs its node placements
    if overlay:
        sections = ("decoder", "encoder") if encoder else ("decoder",)
        options = {section: {"session_options": overlay} for section in sections}
        settings.overlay(json.dumps({"model": options}))
    if provider is not None:
        settings.clear_providers()
        if provider != "cpu":
            settings.append_provider(provider)
            if provider == "cuda":
                settings.set_provider_option(provider, "device_id", str(device))
    if not prove:
        return og.Model(settings), ""
    from gpux.runtime.discovery import captured_native_stderr

    with captured_native_stderr() as log:
        model = og.Model(settings)
    return model, "\n".join(log)


def load_error(folder: Path, backend: str, exc: BaseException) -> BackendError:
    return BackendError(
        f"onnxruntime-genai could not load the model folder '{folder}' on {backend}: {exc}",
        "check that the folder was made for this backend (the builder's -e option) and "
        "that onnxruntime-genai's version can read it (gpux doctor)",
    )


def folder_providers(config: dict[str, Any]) -> list[Any]:
    decoder = config["model"].get("decoder")
    options = decoder.get("session_options", {}) if isinstance(decoder, dict) else {}
    providers = options.get("provider_options", []) if isinstance(options, dict) else []
    return providers if isinstance(providers, list) else []


def read_genai_config(folder: Path) -> dict[str, Any]:
    path = folder / "genai_config.json"
    try:
        config = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"'{path}' is not readable JSON: {exc}",
            "make the folder again with onnxruntime_genai.models.builder",
        ) from exc
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ModelError(
            f"'{path}' has no 'model' section, so it is not an onnxruntime-genai configuration",
            "make the folder again with onnxruntime_genai.models.builder",
        )
    return config


def chat_template_of(folder: Path) -> str | None:
    """The template the folder ships: chat_template.jinja, else tokenizer_config.json's."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text("utf-8")
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    template = config.get("chat_template") if isinstance(config, dict) else None
    return template if isinstance(template, str) and template else None


def genai_provider_for(backend: str, og: Any) -> str | None:
    """The genai provider for a GPUX backend; None keeps the folder's own provider list."""
    if backend == "auto":
        return None
    if backend == "cpu":
        return "cpu"
    if backend in GENAI_PROVIDERS:
        if backend == "cuda" and not og.is_cuda_available():
            raise BackendError(
                "backend 'cuda' was requested but this onnxruntime-genai build has no CUDA",
                "install the CUDA build: pip install 'gpux[cuda]' (onnxruntime-genai-cuda)",
            )
        return GENAI_PROVIDERS[backend]
    raise BackendError(
        f"backend '{backend}' cannot run generative models",
        f"use one of: auto, cpu, {', '.join(GENAI_PROVIDERS)}",
    )


def search_options(settings: Generation, limit: int, context_length: int | None) -> dict[str, Any]:
    """onnxruntime-genai's search options for ``settings``: at most ``limit`` tokens in all
    (prompt included), cut to the context length; sampling only with a temperature."""
    if context_length:
        limit = min(limit, context_length)
    options: dict[str, Any] = {
        "max_length": limit,
        "do_sample": settings.temperature > 0,
        "repetition_penalty": settings.repetition_penalty,
    }
    if settings.temperature > 0:
        options.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    if settings.seed is not None:
        options["random_seed"] = settings.seed
    return options
