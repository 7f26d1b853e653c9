"""The OpenAI routes in the OpenAPI document: request bodies are the JSON Schema of the pydantic
models that check them (gpux/serve/openai_requests.py), with an example per served model that
can run the route; errors are in OpenAI's shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gpux.serve.openai_requests import ChatRequest, CompletionRequest, EmbeddingRequest

if TYPE_CHECKING:
    from gpux.serve.app import ServedModel

Operation = Callable[..., dict[str, Any]]
_ERRORS = (400, 404, 408, 413, 415, 500, 503, 504)


def openai_paths(
    models: list[ServedModel], operation: Operation
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) of ``/v1/models``, chat and text completions, embeddings,
    transcriptions."""
    from gpux.serve.openai_api import embedding_input

    schemas: dict[str, Any] = {"OpenAIError": _OPENAI_ERROR}
    bodies = {}
    for name, kind in (
        ("ChatCompletionRequest", ChatRequest),
        ("CompletionRequest", CompletionRequest),
        ("EmbeddingRequest", EmbeddingRequest),
    ):
        schema = kind.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
        bodies[name] = {"$ref": f"#/components/schemas/{name}"}
    generative = [m.name for m in models if m.generative is not None]
    embedding = [m.name for m in models if embedding_input(m)]

    def post(summary: str, body: str, examples: dict[str, Any], description: str) -> Any:
        content: dict[str, Any] = {"schema": bodies[body]}
        if examples:
            content["examples"] = examples
        op = operation(
            summary,
            "openai",
            _answer(summary, stream=body != "EmbeddingRequest"),
            secured=True,
            description=description,
            body={"required": True, "content": {"application/json": content}},
            errors=_ERRORS,
        )
        return {"post": _openai_errors(op)}

    chat_examples = {
        name: {
            "summary": f"{name}: a chat turn",
            "value": {
                "model": name,
                "messages": [{"role": "user", "content": "Hello!"}],
                "max_tokens": 16,
            },
        }
        for name in generative
    }
    completion_examples = {
        name: {
            "summary": f"{name}: continue a text, streamed",
            "value": {
                "model": name,
                "prompt": "Once upon a time",
                "max_tokens": 16,
                "stream": True,
            },
        }
        for name in generative
    }
    embedding_examples = {
        name: {
            "summary": f"{name}: two texts",
            "value": {"model": name, "input": ["GPUX runs ONNX models.", "On any GPU."]},
        }
        for name in embedding
    }
    runs = ", ".join(generative) or "no model served here"
    embeds = ", ".join(embedding) or "no model served here"
    list_models = operation(
        "The served models (OpenAI's list)",
        "openai",
        _answer("The models, each with the endpoints it answers on"),
        secured=True,
    )
    retrieve = operation(
        "One served model", "openai", _answer("The model"), secured=True, errors=(404,)
    )
    paths = {
        "/v1/models": {"get": _openai_errors(list_models)},
        "/v1/models/{model}": {
            "parameters": [
                {
                    "name": "model",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": [m.name for m in models]},
                    "description": "A served model's name.",
                }
            ],
            "get": _openai_errors(retrieve),
        },
        "/v1/chat/completions": post(
            "Chat completion (OpenAI API)",
            "ChatCompletionRequest",
            chat_examples,
            f"Generative models: {runs}. " + _GENERATION,
        ),
        "/v1/completions": post(
            "Text completion (OpenAI API)",
            "CompletionRequest",
            completion_examples,
            f"Generative models: {runs}. The prompt is a text or this model's token ids. "
            + _GENERATION,
        ),
        "/v1/embeddings": post(
            "Embeddings (OpenAI API)",
            "EmbeddingRequest",
            embedding_examples,
            f"Embedding models: {embeds}. `input` is a text, a list of texts, or token ids of "
            "the model's own tokenizer (one list, or a list of lists); `encoding_format` "
            "`base64` (what the openai SDK asks for) sends little-endian float32.",
        ),
    }
    paths["/v1/audio/transcriptions"] = _transcriptions(models, operation)
    return paths, schemas


def _transcriptions(models: list[ServedModel], operation: Operation) -> dict[str, Any]:
    """The multipart body of OpenAI's transcription route (gpux/serve/openai_audio.py)."""
    speech = [m.name for m in models if m.speech is not None]
    names: dict[str, Any] = {"type": "string", "description": "A served speech model."}
    if speech:
        names["enum"] = speech
    form = {
        "type": "object",
        "required": ["file", "model"],
        "properties": {
            "file": {
                "type": "string",
                "contentMediaType": "application/octet-stream",
                "description": "The audio: wav, flac, ogg or mp3, at any sample rate.",
            },
            "model": names,
            "language": {"type": "string", "description": "ISO 639-1 (en, de ...)."},
            "prompt": {"type": "string", "description": "Text that came before the audio."},
            "response_format": {
                "type": "string",
                "enum": ["json", "text", "verbose_json", "srt", "vtt"],
                "default": "json",
            },
            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
            "timestamp_granularities[]": {"type": "string", "enum": ["segment"]},
        },
    }
    response = {
        "description": "The text (json, verbose_json with 30 s segments), or plain text "
        "(text, srt, vtt)",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
    op = operation(
        "Transcription (OpenAI API)",
        "openai",
        response,
        secured=True,
        description=f"Speech models: {', '.join(speech) or 'no model served here'}. The "
        "audio is decoded and resampled by GPUX, cut into 30 s windows transcribed one after "
        "the other; a multilingual model detects the language when none is given. Queue, "
        "timeout to the first token (504) and token metrics as chat completions.",
        body={"required": True, "content": {"multipart/form-data": {"schema": form}}},
        errors=_ERRORS,
    )
    return {"post": _openai_errors(op)}


_GENERATION = (
    "`stream: true` answers as server-sent events (`data: {chunk}` ... `data: [DONE]`; "
    "`stream_options.include_usage` adds a last chunk with the usage). `max_tokens` above "
    "the server's cap (`gpux serve --max-tokens`, `serving.max_tokens`) is a 400; unset it is "
    "the GPUXfile's `generation.max_new_tokens`. `response_format` `json_schema` or "
    "`json_object` constrains the output (guidance). Concurrent requests share the model: "
    "those that arrive together run as one batch, each answer the same as alone, interleaved "
    "token by token with the others; a client that disconnects stops its generation. "
    "`serving.timeout` bounds the wait for the first token (504)."
)

_OPENAI_ERROR = {
    "type": "object",
    "description": "OpenAI's error shape, with GPUX's hint beside it.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string", "enum": ["invalid_request_error", "server_error"]},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
                "hint": {"type": "string"},
            },
            "required": ["message", "type", "param", "code"],
        }
    },
    "required": ["error"],
}


def _answer(description: str, stream: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if stream:
        content["text/event-stream"] = {
            "schema": {
                "type": "string",
                "description": "With `stream: true`: `data: {chunk}` lines, then `data: [DONE]`.",
            }
        }
    return {"description": description, "content": content}


def _openai_errors(op: dict[str, Any]) -> dict[str, Any]:
    for status, response in op["responses"].items():
        if status != "200":
            response["content"] = {
                "application/json": {"schema": {"$ref": "#/components/schemas/OpenAIError"}}
            }
    return op
