"""The ``generation:`` section: defaults of a generative model (``model.format: genai``).

Every value is a default: ``gpux run`` flags and API arguments override it per call. The names
are the ones OpenAI's API and Hugging Face's ``generate`` use, so a setting reads the same in a
GPUXfile, on the command line and in a request.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from gpux.config.common import Strict

MAX_STOP_STRINGS = 16


class Guidance(Strict):
    """Constrained decoding: the output must match exactly one of these (onnxruntime-genai's
    guidance, through llguidance). Give one key."""

    json_schema: dict[str, Any] | None = Field(
        default=None,
        examples=[{"type": "object", "properties": {"answer": {"type": "string"}}}],
        description="A JSON Schema (written as YAML or JSON) the output must validate against; the output is compact JSON (llguidance's ``x-guidance`` key in the schema changes that).",
    )
    regex: str | None = Field(
        default=None,
        min_length=1,
        examples=["(yes|no)"],
        description="A regular expression the whole output must match.",
    )
    grammar: str | None = Field(
        default=None,
        min_length=1,
        description="A Lark grammar (llguidance's dialect, start rule ``start``) the output must match.",
    )

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"regex {value!r} does not compile: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Guidance:
        given = [name for name in ("json_schema", "regex", "grammar") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(
                "guidance takes exactly one of json_schema, regex or grammar"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def kind(self) -> str:
        """The name onnxruntime-genai's ``set_guidance`` knows: json_schema, regex or lark_grammar."""
        if self.json_schema is not None:
            return "json_schema"
        return "regex" if self.regex is not None else "lark_grammar"

    @property
    def data(self) -> str:
        if self.json_schema is not None:
            # Compact JSON unless the schema says otherwise: with free whitespace a small model
            # can spend every token on spaces and newlines between two keys.
            schema = {"x-guidance": {"whitespace_flexible": False}, **self.json_schema}
            return json.dumps(schema)
        return self.regex if self.regex is not None else str(self.grammar)


class Generation(Strict):
    """Defaults of every generation (``gpux run``, the Python API, the server)."""

    max_new_tokens: int = Field(
        default=256, ge=1, description="Tokens generated at most, after the prompt."
    )
    temperature: float = Field(
        default=0.0,
        ge=0.0,
        le=5.0,
        description="0 decodes greedily (the most likely token, reproducible); above 0 samples, flatter as it grows.",
    )
    top_p: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="When sampling: draw from the smallest set of tokens whose probabilities add up to this.",
    )
    top_k: int = Field(
        default=50, ge=1, description="When sampling: draw from this many most likely tokens."
    )
    repetition_penalty: float = Field(
        default=1.0,
        gt=0.0,
        description="Above 1 makes tokens already in the text less likely (1: off).",
    )
    stop: list[str] = Field(
        default=[],
        max_length=MAX_STOP_STRINGS,
        examples=[["\n\n", "User:"]],
        description="Texts that end the output where they appear (they are not part of it). The model's end-of-sequence tokens always stop it.",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        description="Seed of the sampler, for a reproducible sampled output (none: a new draw each time).",
    )
    guidance: Guidance | None = Field(
        default=None, description="Constrain the output to a JSON schema, a regex or a grammar."
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, stops: list[str]) -> list[str]:
        if any(stop == "" for stop in stops):
            raise ValueError("an empty stop string would stop before the first token; remove it")
        return stops

    def merged(self, **overrides: Any) -> Generation:
        """These defaults with the ``overrides`` that are not None, validated again."""
        given = {key: value for key, value in overrides.items() if value is not None}
        return Generation.model_validate({**self.model_dump(), **given})
