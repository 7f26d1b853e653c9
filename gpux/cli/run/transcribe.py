"""``gpux run`` on a speech image (a Whisper): the text is written to stdout as it is decoded;
``--json`` prints one JSON object instead (text, language, duration, segments of 30 s, token
counts, time to first token, tokens/s). ``--language`` and ``--task`` override the GPUXfile's
``speech:``; ``--max-new-tokens`` (per 30 s window), ``--temperature`` and ``--seed`` its
``generation:``. Several inputs are transcribed one after the other (with ``--json``, one line
of JSON each).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from gpux.cli.console import print_json
from gpux.errors import UsageError
from gpux.runtime.speech import SpeechModel, Transcript


def run_speech(
    model: SpeechModel,
    inputs: list[str],
    as_json: bool,
    settings: dict[str, Any],
) -> None:
    if not inputs:
        raise UsageError(
            "a speech model takes audio files",
            "give one with --input meeting.flac (wav, flac, ogg or mp3)",
        )
    for value in inputs:
        # `--input audio=@x.flac` or `@x.flac` as for pipelines; a bare path as for prompts.
        path = value.split("=", 1)[1] if value.startswith("audio=") else value
        transcript = model.transcribe(path.removeprefix("@"), stream=True, **settings)
        assert isinstance(transcript, Transcript)
        try:
            for piece in transcript:
                if not as_json:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
        finally:
            transcript.close()
        if as_json:
            result = transcript.transcription.to_json()
            if len(inputs) == 1:
                print_json(result)
            else:
                sys.stdout.write(json.dumps(result) + "\n")
        else:
            sys.stdout.write("\n")
        sys.stdout.flush()
