"""``POST /v1/audio/transcriptions``, OpenAI's speech-to-text route, for speech images (a
Whisper genai folder, gpux/runtime/speech.py), so that ``client.audio.transcriptions.create``
of the openai SDK works unchanged.

The body is a multipart form: ``file`` (the audio: wav, flac, ogg, mp3 ...), ``model``, and
optionally ``language`` (ISO 639-1), ``prompt`` (text that came before), ``response_format``
(``json``, ``text``, ``verbose_json``, ``srt``, ``vtt``), ``temperature`` (0-1) and
``timestamp_granularities[]`` (``segment`` only), ``stream`` (server-sent events as OpenAI sends
them: ``transcript.text.delta`` per piece, ``transcript.text.done``, then ``data: [DONE]``). Other
fields OpenAI's clients send are ignored; word timestamps, and streaming a format other than json
or text, are refused with a 400 naming the field.

The form is read within the server's limits (the body's size, ``--max-form-parts``, one file),
the audio decoded and resampled off the event loop (a file that is not audio is a 400 before
anything is queued), then the transcription joins the model's generations (gpux/serve/generation.py):
the same queue (503 when full), timeout to the first token (504), cancellation when the client
goes away, and token metrics (``gpux_prompt_tokens``, ``gpux_generated_tokens``, time to first
token and between tokens) as chat and text completions. Segments are the 30 s windows the engine
transcribes one after the other (``verbose_json``, ``srt`` and ``vtt`` show them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from gpux.errors import GPUXError, InputError
from gpux.runtime.generative import Completion
from gpux.runtime.speech import Transcript, Transcription
from gpux.serve import bodies
from gpux.serve.generation import Cancelled, Generation, Interleaver
from gpux.serve.guards import HTTPError, RequestPolicy, openai_error
from gpux.serve.openai_requests import OpenAIBody, OpenAIRefusal, parse

if TYPE_CHECKING:
    from gpux.serve.app import ServedModel

CLIENT_CLOSED = 499
_LIST_FIELDS = {"timestamp_granularities[]": "timestamp_granularities", "include[]": "include"}


class TranscriptionRequest(OpenAIBody):
    model: str
    language: str | None = None
    prompt: str | None = None
    response_format: Literal["json", "text", "verbose_json", "srt", "vtt"] = "json"
    temperature: float | None = Field(default=None, ge=0, le=1)
    timestamp_granularities: list[str] = Field(default_factory=list)
    stream: bool = False

    def refuse_unsupported(self) -> None:
        if self.stream and self.response_format not in ("json", "text"):
            raise OpenAIRefusal(
                400,
                f"a streamed transcription is text: response_format '{self.response_format}' "
                "cannot be streamed",
                "ask for json or text with stream, or leave stream out",
                param="response_format",
            )
        unknown = [g for g in self.timestamp_granularities if g != "segment"]
        if unknown:
            raise OpenAIRefusal(
                400,
                f"timestamp granularity '{unknown[0]}' is not supported",
                "ask for 'segment' (the 30 s windows) or leave timestamp_granularities out",
                param="timestamp_granularities",
            )


def transcriptions_handler(
    find: Callable[[str], ServedModel],
    interleavers: dict[str, Interleaver],
    policy: RequestPolicy,
) -> Callable[[Request], Awaitable[Response]]:
    """The route's handler; ``find`` answers a model's name with the served model or a 404."""

    async def transcriptions(request: Request) -> Response:
        bodies.require_media(
            request,
            (bodies.FORM,),
            "send the audio file and the fields as multipart/form-data (what the openai SDK's "
            "client.audio.transcriptions.create sends)",
        )
        fields, audio = await _read_form(request, policy)
        asked = parse(TranscriptionRequest, fields)
        asked.refuse_unsupported()
        served = find(asked.model)
        request.state.model = served.name
        model = served.speech
        if model is None:
            raise OpenAIRefusal(
                400,
                f"model '{served.name}' does not transcribe speech",
                "send audio to a speech model (a Whisper); GET /v1/models lists what each "
                "model does",
                param="model",
            )
        if audio is None:
            raise OpenAIRefusal(
                400,
                "the form has no 'file'",
                "send the audio as the file part 'file'",
                param="file",
            )
        settings: dict[str, Any] = {"temperature": asked.temperature}
        model.settings(asked.language, None, settings)  # a wrong language: 400 before decoding
        samples = await asyncio.to_thread(model.samples, audio, allow_files=False)
        del audio

        def start() -> Transcript:
            return model.start(samples, language=asked.language, prompt=asked.prompt, **settings)

        generation, first = await _started(served, interleavers[served.name], start)
        if asked.stream:
            return StreamingResponse(
                _transcript_events(request, generation, first),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        transcription = await _finished(request, generation, first)
        if transcription is None:  # nobody is waiting for this answer any more
            return Response(status_code=CLIENT_CLOSED)
        return formatted(transcription, asked.response_format)

    return transcriptions


async def _read_form(request: Request, policy: RequestPolicy) -> tuple[dict[str, Any], Any]:
    """The form's text fields (lists for ``name[]``) and the bytes of its ``file`` part."""
    limit = policy.max_form_parts
    fields: dict[str, Any] = {}
    audio = None
    try:
        async with request.form(
            max_files=1, max_fields=limit, max_part_size=policy.max_body_bytes
        ) as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if key == "file":
                        audio = await value.read()
                    continue
                if key in _LIST_FIELDS:
                    fields.setdefault(_LIST_FIELDS[key], []).append(value)
                else:
                    fields[key] = value
    except HTTPException as exc:  # Starlette's answer to a malformed or oversized form
        if exc.detail.startswith(("Too many", "Part exceeded", "Field exceeded")):
            raise HTTPError(
                413,
                f"the form is too large: {exc.detail}",
                f"send one file and at most {limit} fields (gpux serve --max-form-parts)",
            ) from exc
        raise HTTPError(
            400, f"the multipart body is malformed: {exc.detail}", "send it again"
        ) from exc
    return fields, audio


async def _started(
    served: ServedModel, interleaver: Interleaver, start: Callable[[], Transcript]
) -> tuple[Generation, Any]:
    """The transcription queued among the model's generations, and its first event."""
    from gpux.serve.openai_api import start_generation

    generation, first = await start_generation(served, interleaver, start, "transcribing")
    return generation, first


async def _finished(request: Request, generation: Generation, first: Any) -> Transcription | None:
    """The whole transcription; None when the client went away first (then it is cancelled)."""
    from gpux.serve.openai_api import await_completion

    completion = await await_completion(request, generation, first)
    if completion is None:
        return None
    transcript = generation.stream
    assert isinstance(transcript, Transcript)
    return transcript.transcription


async def _transcript_events(
    request: Request, generation: Generation, first: Any
) -> AsyncIterator[str]:
    """OpenAI's transcription stream: ``transcript.text.delta`` per piece, then
    ``transcript.text.done`` with the text and usage, then ``data: [DONE]``. A client that
    disconnects cancels the transcription."""
    from gpux.serve.openai_api import sse_data, wait_disconnected

    watcher = asyncio.ensure_future(wait_disconnected(request))
    watcher.add_done_callback(lambda _: generation.cancel())
    event: Any = first
    try:
        while True:
            if isinstance(event, str):
                yield sse_data({"type": "transcript.text.delta", "delta": event})
            elif isinstance(event, Completion):
                transcript = generation.stream
                assert isinstance(transcript, Transcript)
                done = {"type": "transcript.text.done", "text": transcript.transcription.text}
                yield sse_data({**done, "usage": _token_usage(event)})
                yield "data: [DONE]\n\n"
                return
            elif isinstance(event, Cancelled):
                return
            else:  # the headers are gone: the error goes in the stream
                status = 400 if isinstance(event, InputError) else 500
                message = event.message if isinstance(event, GPUXError) else str(event)
                yield sse_data(openai_error(status, message, None))
                yield "data: [DONE]\n\n"
                return
            event = await generation.events.get()
    finally:
        watcher.cancel()
        generation.cancel()


def _token_usage(completion: Completion) -> dict[str, Any]:
    return {
        "type": "tokens",
        "input_tokens": completion.prompt_tokens,
        "output_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


def formatted(transcription: Transcription, response_format: str) -> Response:
    """The answer in OpenAI's ``response_format``."""
    text = transcription.text
    completion = transcription.completion
    if response_format == "text":
        return PlainTextResponse(text)
    if response_format in ("srt", "vtt"):
        return PlainTextResponse(_subtitles(transcription, response_format))
    if response_format == "verbose_json":
        return JSONResponse(
            {
                "task": "transcribe",
                "language": transcription.language,
                "duration": round(transcription.duration, 3),
                "text": text,
                "segments": [
                    {
                        "id": segment.id,
                        "seek": round(segment.start * 100),  # Whisper's: in 10 ms frames
                        "start": round(segment.start, 3),
                        "end": round(segment.end, 3),
                        "text": segment.text,
                        "tokens": segment.token_ids,
                        "temperature": 0.0,
                    }
                    for segment in transcription.segments
                ],
                "usage": {"type": "duration", "seconds": round(transcription.duration, 3)},
            }
        )
    return JSONResponse({"text": text, "usage": _token_usage(completion)})


def _subtitles(transcription: Transcription, kind: str) -> str:
    separator = "," if kind == "srt" else "."
    blocks = []
    for number, segment in enumerate(transcription.segments, 1):
        if not segment.text:
            continue
        times = f"{_clock(segment.start, separator)} --> {_clock(segment.end, separator)}"
        head = f"{number}\n" if kind == "srt" else ""
        blocks.append(f"{head}{times}\n{segment.text}\n")
    body = "\n".join(blocks)
    return f"WEBVTT\n\n{body}" if kind == "vtt" else body


def _clock(seconds: float, separator: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, thousandths = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{thousandths:03d}"
