"""The bodies the OpenAI routes take, checked, and turned into GPUX's generation settings.

Fields OpenAI's clients send that change nothing here (``user``, ``metadata``, ``store`` ...) are
ignored; fields whose meaning GPUX cannot honour (``n`` above 1, penalties, ``logprobs``,
``tools``, ``echo``, ``suffix``) are refused with a 400 naming the field, never silently dropped.
Token ids (``/v1/completions`` prompts, ``/v1/embeddings`` inputs) are the model's own
vocabulary, as vLLM and TEI read them, not OpenAI's tiktoken ids.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpux.serve.guards import HTTPError


class OpenAIRefusal(HTTPError):
    """A 4xx in OpenAI's shape, naming the request field at fault (``param``)."""

    def __init__(
        self,
        status: int,
        message: str,
        hint: str | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(status, message, hint)
        self.param, self.code = param, code


class OpenAIBody(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


_BodyT = TypeVar("_BodyT", bound=OpenAIBody)


class StreamOptions(OpenAIBody):
    include_usage: bool = False


class JSONSchemaFormat(OpenAIBody):
    name: str = "output"
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIBody):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class TextPart(OpenAIBody):
    type: Literal["text"]
    text: str


class ChatMessage(OpenAIBody):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class Sampling(OpenAIBody):
    """What chat and text completions share."""

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1)
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | int | None = None
    response_format: ResponseFormat | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def refuse_unsupported(self) -> None:
        if self.n not in (None, 1):
            raise OpenAIRefusal(400, "n above 1 is not supported", "send n: 1", param="n")
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name):
                raise OpenAIRefusal(
                    400,
                    f"{name} is not supported",
                    "leave it out (repetition_penalty is a GPUXfile generation setting)",
                    param=name,
                )
        if self.logprobs:
            raise OpenAIRefusal(
                400, "logprobs are not supported", "leave logprobs out", param="logprobs"
            )

    def guidance(self) -> dict[str, Any] | None:
        """``response_format`` as the engine's guidance (constrained decoding)."""
        chosen = self.response_format
        if chosen is None or chosen.type == "text":
            return None
        if chosen.type == "json_object":
            return {"json_schema": {"type": "object"}}
        if chosen.json_schema is None:
            raise OpenAIRefusal(
                400,
                "response_format of type json_schema needs its json_schema",
                'send {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}',
                param="response_format.json_schema",
            )
        return {"json_schema": chosen.json_schema.schema_}


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Any] | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.tools:
            raise OpenAIRefusal(400, "tools are not supported", "leave tools out", param="tools")


class CompletionRequest(Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.echo:
            raise OpenAIRefusal(400, "echo is not supported", "leave echo out", param="echo")
        if self.suffix:
            raise OpenAIRefusal(400, "suffix is not supported", "leave suffix out", param="suffix")
        if self.best_of not in (None, 1):
            raise OpenAIRefusal(400, "best_of above 1 is not supported", param="best_of")

    def one_prompt(self) -> str | list[int]:
        """The prompt: a text or token ids (a list of one of either is the same)."""
        prompt = self.prompt
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            raise OpenAIRefusal(
                400,
                f"one prompt per request is supported (got {len(prompt)})",
                "send the prompts as separate requests (they run concurrently)",
                param="prompt",
            )
        if not prompt:
            raise OpenAIRefusal(400, "the prompt is empty", "send some text", param="prompt")
        return prompt  # type: ignore[return-value]


class EmbeddingRequest(OpenAIBody):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)

    def inputs(self) -> list[str | list[int]]:
        given = self.input
        if isinstance(given, str):
            return [given]
        if not given:
            raise OpenAIRefusal(
                400, "input is empty", "send a text or a list of texts", param="input"
            )
        if isinstance(given[0], int):
            return [list(given)]
        return list(given)


def parse(kind: type[_BodyT], body: Any) -> _BodyT:
    """``body`` (decoded JSON) as ``kind``, or a 400 naming the first field at fault."""
    if not isinstance(body, dict):
        raise OpenAIRefusal(400, "the body must be a JSON object", "see /docs")
    try:
        return kind.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        field = str(error["loc"][0]) if error["loc"] else None
        raise OpenAIRefusal(
            400, f"{where or 'body'}: {error['msg']}", "see /docs for this endpoint", param=field
        ) from exc
