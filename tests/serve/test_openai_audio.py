"""``POST /v1/audio/transcriptions`` of a real ``gpux serve`` on loopback, driven by the official
``openai`` SDK (``client.audio.transcriptions.create``), against the tiny random Whisper of
tools/make_tiny_whisper.py, behind a bearer token and a 1 MB body limit; the answers are what
the same model transcribes in this process."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile

from gpux.runtime.speech import SpeechModel, Transcription
from tests.cli.expect import BoundCLI
from tests.serve.conftest import Server, start_server, stop_server
from tests.serve.test_openai_api import metric

TOKEN = "audio-test-token"
WHISPER_GPUXFILE = """name: whisper
model:
  source: ./tiny-whisper
  format: genai
generation:
  max_new_tokens: 64
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_whisper: Path, tiny_llm: Path
) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("audio-home")
    cli = BoundCLI(home)
    for name, folder, gpuxfile in (
        ("whisper", tiny_whisper, WHISPER_GPUXFILE),
        ("llm", tiny_llm, "name: llm\nmodel:\n  source: ./tiny-llm\n  format: genai\n"),
    ):
        project = home / name
        shutil.copytree(folder, project / folder.name)
        (project / "GPUXfile").write_text(gpuxfile)
        cli.ok("build", str(project), "-q")
    served = start_server(
        cli,
        *("whisper", "llm", "--backend", "cpu", "--max-body-mb", "1"),
        env={"GPUX_TOKEN": TOKEN},
    )
    yield served
    assert stop_server(served) == 0, served.log()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=TOKEN, max_retries=0)


@pytest.fixture(scope="module")
def local(tiny_whisper: Path) -> SpeechModel:
    """The same model in this process, for what the server must answer."""
    return SpeechModel(tiny_whisper, "cpu")


@pytest.fixture(scope="module")
def meeting(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """35 s of 22.05 kHz FLAC (two windows), 0.3 MB: under the server's 1 MB limit."""
    rate = 22050
    t = np.arange(35 * rate) / rate
    tone = 0.3 * np.sin(2 * np.pi * 300 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
    path = tmp_path_factory.mktemp("audio") / "meeting.flac"
    soundfile.write(path, tone.astype(np.float32), rate, subtype="PCM_16")
    return path


def expected(local: SpeechModel, audio: Path, **settings: object) -> Transcription:
    result = local.transcribe(audio, **settings)
    assert isinstance(result, Transcription)
    return result


def test_the_sdk_transcribes_as_the_model_does_in_process(
    client: openai.OpenAI, local: SpeechModel, meeting: Path, server: Server
) -> None:
    before = metric(server, "gpux_generated_tokens_total", model="whisper")
    with meeting.open("rb") as audio:
        answer = client.audio.transcriptions.create(model="whisper", file=audio, language="en")
    truth = expected(local, meeting, language="en")
    assert answer.text == truth.text
    assert len(truth.segments) == 2
    usage = answer.usage
    assert usage is not None and usage.type == "tokens"
    assert usage.input_tokens == truth.completion.prompt_tokens == 8
    assert usage.output_tokens == truth.completion.completion_tokens
    generated = metric(server, "gpux_generated_tokens_total", model="whisper") - before
    assert generated == truth.completion.completion_tokens
    assert metric(server, "gpux_time_to_first_token_seconds_count", model="whisper") >= 1


def test_detection_prompt_and_temperature_reach_the_model(
    client: openai.OpenAI, local: SpeechModel, meeting: Path
) -> None:
    detected = client.audio.transcriptions.create(
        model="whisper", file=meeting.read_bytes(), response_format="verbose_json"
    )
    truth = expected(local, meeting)
    assert detected.language == truth.language
    assert detected.text == truth.text
    prompted = client.audio.transcriptions.create(
        model="whisper", file=meeting, language="fr", prompt="Budget meeting", temperature=0
    )
    assert prompted.text == expected(local, meeting, language="fr", prompt="Budget meeting").text


def test_a_streamed_transcription_sends_openai_events(
    client: openai.OpenAI, local: SpeechModel, meeting: Path
) -> None:
    truth = expected(local, meeting, language="en")
    events = list(
        client.audio.transcriptions.create(
            model="whisper", file=meeting, language="en", stream=True
        )
    )
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) > 10
    assert "".join(e.delta for e in deltas) == truth.text  # type: ignore[union-attr]
    done = events[-1]
    assert done.type == "transcript.text.done"
    assert done.text == truth.text  # type: ignore[union-attr]
    usage = done.usage  # type: ignore[union-attr]
    assert usage is not None
    assert usage.output_tokens == truth.completion.completion_tokens  # type: ignore[union-attr]


def test_response_formats(client: openai.OpenAI, local: SpeechModel, meeting: Path) -> None:
    truth = expected(local, meeting, language="de")
    text = client.audio.transcriptions.create(
        model="whisper", file=meeting, language="de", response_format="text"
    )
    assert text == truth.text
    verbose = client.audio.transcriptions.create(
        model="whisper",
        file=meeting,
        language="de",
        response_format="verbose_json",
        timestamp_granularities=["segment"],
    )
    assert verbose.duration == pytest.approx(35.0)
    assert verbose.language == "de"
    segments = verbose.segments or []
    assert [(s.start, s.end) for s in segments] == [(0.0, 30.0), (30.0, 35.0)]
    assert [s.text for s in segments] == [s.text for s in truth.segments]
    assert segments[1].tokens == truth.segments[1].token_ids
    srt = client.audio.transcriptions.create(
        model="whisper", file=meeting, language="de", response_format="srt"
    )
    assert srt.startswith(f"1\n00:00:00,000 --> 00:00:30,000\n{truth.segments[0].text}\n\n2\n")
    vtt = client.audio.transcriptions.create(
        model="whisper", file=meeting, language="de", response_format="vtt"
    )
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:30.000\n")
    assert "00:00:30.000 --> 00:00:35.000" in vtt


def status_and_error(response: httpx.Response) -> tuple[int, dict[str, object]]:
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}, body
    return response.status_code, body["error"]


def post(server: Server, files: dict[str, object] | None, **data: object) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {TOKEN}"},
        files=files,
        data={"model": "whisper", **data},
        timeout=30,
    )


@pytest.mark.parametrize(
    ("files", "data", "status", "fragment", "param"),
    [
        ({"file": ("notes.mp3", b"these are not sounds" * 40)}, {}, 400, "not audio", None),
        ({"file": ("empty.wav", b"")}, {}, 400, "is empty", None),
        ({"audio": ("a.flac", "MEETING")}, {}, 400, "the form has no 'file'", "file"),
        ({"file": ("a.flac", "MEETING")}, {"model": "llm"}, 400, "does not transcribe", "model"),
        ({"file": ("a.flac", "MEETING")}, {"model": "nobody"}, 404, "not served here", "model"),
        ({"file": ("a.flac", "MEETING")}, {"language": "ja"}, 400, "language 'ja'", None),
        ({"file": ("a.flac", "MEETING")}, {"temperature": "1.5"}, 400, "temperature", None),
        (
            {"file": ("a.flac", "MEETING")},
            {"stream": "true", "response_format": "srt"},
            400,
            "cannot be streamed",
            "response_format",
        ),
        (
            {"file": ("a.flac", "MEETING")},
            {"timestamp_granularities[]": "word"},
            400,
            "granularity 'word'",
            "timestamp_granularities",
        ),
        ({"file": ("a.flac", "MEETING")}, {"response_format": "xml"}, 400, "response_format", None),
    ],
    ids=[
        "not audio",
        "empty file",
        "no file",
        "a text model",
        "an unknown model",
        "a language the model lacks",
        "temperature above 1",
        "streamed srt",
        "word timestamps",
        "unknown format",
    ],
)
def test_client_mistakes_are_openai_shaped_4xx(
    server: Server,
    meeting: Path,
    files: dict[str, tuple[str, object]] | None,
    data: dict[str, object],
    status: int,
    fragment: str,
    param: str | None,
) -> None:
    if files is not None:
        files = {
            key: (name, meeting.read_bytes() if content == "MEETING" else content)
            for key, (name, content) in files.items()
        }
    got, error = status_and_error(post(server, files, **data))
    assert got == status, error
    assert fragment in str(error["message"]), error
    if param is not None:
        assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_an_upload_over_the_body_limit_is_a_413(server: Server) -> None:
    samples = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 20).astype(np.float32)
    wav = io.BytesIO()
    soundfile.write(wav, samples, 16000, format="WAV", subtype="FLOAT")  # 1.3 MB
    got, error = status_and_error(post(server, {"file": ("long.wav", wav.getvalue())}))
    assert got == 413, error
    assert "over the server's limit of 1 MiB" in str(error["message"]), error


def test_the_sdk_raises_its_own_errors(client: openai.OpenAI, meeting: Path) -> None:
    with pytest.raises(openai.BadRequestError, match="not audio"):
        client.audio.transcriptions.create(model="whisper", file=("x.wav", b"RIFF" + b"0" * 500))
    with pytest.raises(openai.BadRequestError, match="does not generate text"):
        client.chat.completions.create(
            model="whisper", messages=[{"role": "user", "content": "hi"}]
        )


def test_a_json_body_and_the_tensor_routes_are_refused(server: Server) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = httpx.post(
        server.url + "/v1/audio/transcriptions", headers=headers, json={"model": "whisper"}
    )
    assert status_and_error(response)[0] == 415
    infer = httpx.post(
        server.url + "/v2/models/whisper/infer",
        headers=headers,
        json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
    )
    assert infer.status_code == 400
    assert "speech-to-text model" in infer.json()["error"]
    assert "/v1/audio/transcriptions" in infer.json()["hint"]


def test_models_lists_the_transcription_endpoint(client: openai.OpenAI) -> None:
    whisper = client.models.retrieve("whisper")
    assert whisper.model_extra is not None
    assert whisper.model_extra["endpoints"] == ["/v1/audio/transcriptions"]


def test_unauthenticated_requests_are_refused(server: Server, meeting: Path) -> None:
    response = httpx.post(
        server.url + "/v1/audio/transcriptions",
        files={"file": ("a.flac", meeting.read_bytes())},
        data={"model": "whisper"},
    )
    assert status_and_error(response)[0] == 401
