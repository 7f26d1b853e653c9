"""The ``speech:`` section: defaults of a speech-to-text model (``model.format: genai`` whose
folder is a Whisper, ``genai_config.json`` model type ``whisper``).

Every value is a default: ``gpux run --language`` and the ``language`` field of
``/v1/audio/transcriptions`` override it per call. The names are OpenAI's.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from gpux.config.common import Strict

_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


class Speech(Strict):
    """Defaults of every transcription (``gpux run``, the Python API, the server)."""

    language: str | None = Field(
        default=None,
        examples=["en", "de"],
        description="The spoken language, as an ISO 639-1 code (``en``, ``de`` ...). None: a multilingual model detects it from the first 30 s; an English-only model transcribes English.",
    )
    task: Literal["transcribe", "translate"] = Field(
        default="transcribe",
        description="``transcribe`` writes what was said in its language; ``translate`` writes it in English (multilingual models only).",
    )

    @field_validator("language", mode="before")
    @classmethod
    def _code(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            if not _LANGUAGE.match(value):
                raise ValueError(
                    f"language {value!r} is not an ISO 639-1 code: write 'en', 'de', 'fr' ..."
                )
        return value
