"""The OpenAPI 3.1 document of a running server (``/openapi.json``): every route it serves,
with per-model request examples built from each model's pipeline and signature."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from gpux import __version__
from gpux.runtime.tensors import TensorSignature
from gpux.serve import protocol
from gpux.serve.app import ServedModel

# A tensor example larger than this is left out: it would bloat the page and the spec.
MAX_EXAMPLE_ELEMENTS = 1024


def pipeline_inputs(served: ServedModel) -> list[dict[str, Any]]:
    """What a user sends to ``predict``: each input's name, kind and (for tensors) an example."""
    signatures = {t.name: t for t in served.model.inputs}
    pipeline = served.pipeline
    names = pipeline.input_names if pipeline else list(signatures)
    inputs = []
    for name in names:
        kind = pipeline.kind(name) if pipeline else "tensor"
        entry: dict[str, Any] = {"name": name, "kind": kind}
        if kind == "tensor" and name in signatures:
            signature = signatures[name]
            entry["dtype"], entry["shape"] = signature.dtype, signature.shape
            entry["example"] = _tensor_example(signature)
        elif kind == "text" and pipeline and _pairs(served, name):
            entry["pairs"] = True
        elif kind == "value" and pipeline:  # a handler's input: the GPUXfile's example, if any
            example = (pipeline.gpuxfile.get("handler") or {}).get("example") or {}
            entry["example"] = example.get(name)
        inputs.append(entry)
    return inputs


def _pairs(served: ServedModel, name: str) -> bool:
    assert served.pipeline is not None
    entry = next(e for e in served.pipeline.entries if e.name == name)
    return bool(entry.text and entry.text.pairs)


def _tensor_example(signature: TensorSignature) -> Any:
    """The GPUXfile's example, or zeros of the signature's shape (symbolic dimensions: 1)."""
    if signature.example is not None:
        return signature.example
    dims = [d if isinstance(d, int) and d > 0 else 1 for d in signature.shape or []]
    count = 1
    for dim in dims:
        count *= dim
    if count > MAX_EXAMPLE_ELEMENTS:
        return None
    kind = signature.np_dtype.kind if signature.dtype != "string" else "U"
    value: Any = {"f": 0.0, "b": False, "U": ""}.get(kind, 0)
    for dim in reversed(dims):
        value = [value] * dim
    return value


def _item_example(inputs: list[dict[str, Any]]) -> dict[str, Any]:
    placeholders = {
        "text": "GPUX runs ONNX models on any GPU.",
        "image": "<base64 of a PNG, JPEG or WebP file>",
        "audio": "<base64 of a WAV, FLAC or OGG recording>",
    }
    item: dict[str, Any] = {}
    for entry in inputs:
        if entry.get("pairs"):
            item[entry["name"]] = ["A man is eating food.", "A man is eating pasta."]
        elif entry["kind"] in ("tensor", "value"):
            item[entry["name"]] = entry.get("example")
        else:
            item[entry["name"]] = placeholders[entry["kind"]]
    return item


def model_description(served: ServedModel) -> str:
    gpuxfile = served.model.image.config.get("gpuxfile", {}) if served.model.image else {}
    return str(gpuxfile.get("description") or "")


def static_text(name: str) -> str:
    return resources.files("gpux.serve").joinpath("static", name).read_text(encoding="utf-8")


def _schemas() -> dict[str, Any]:
    """The protocol's bodies as JSON Schema; the datatypes come from the code that checks them."""
    schemas: dict[str, Any] = json.loads(static_text("schemas.json"))
    schemas["Datatype"]["enum"] = list(protocol.DATATYPES)
    return schemas


def openapi_document(models: list[ServedModel], *, token_required: bool = False) -> dict[str, Any]:
    """OpenAPI 3.1 for every endpoint ``create_app`` and ``web_routes`` serve to ``models``."""
    names = [m.name for m in models]
    model_parameter = _parameter(
        "model", "path", {"type": "string", "enum": names}, "A served model's name."
    )
    version_parameter = _parameter(
        "version",
        "path",
        {
            "type": "string",
            "enum": sorted({v for m in models for v in (m.version, m.triton_version)}),
        },
        "The served model's tag, or its protocol version (a whole number).",
    )
    per_model = [model_parameter]
    per_version = [model_parameter, version_parameter]
    inputs = {m.name: pipeline_inputs(m) for m in models}

    def operation(
        summary: str,
        tag: str,
        response: dict[str, Any],
        *,
        secured: bool,
        description: str = "",
        parameters: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None,
        errors: tuple[int, ...] = (),
    ) -> dict[str, Any]:
        # Every request may be refused before routing (gpux/serve/guards.py): a foreign Origin
        # (403) or Host (421), a body over the limit (413), a missing token (401).
        codes = {*errors, *_REFUSALS, *((401,) if secured and token_required else ())}
        op: dict[str, Any] = {"summary": summary, "tags": [tag]}
        if description:
            op["description"] = description
        if parameters:
            op["parameters"] = parameters
        if body:
            op["requestBody"] = body
        op["responses"] = {"200": response, **{str(c): _error_response(c) for c in sorted(codes)}}
        if token_required:
            op["security"] = [{"bearer": []}] if secured else []
        return op

    def get(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"get": operation(*args, **kwargs)}

    server_metadata = get(
        "Server metadata", "inference", _json_response("ServerMetadata"), secured=True
    )
    model_metadata = get(
        "Model metadata: its inputs and outputs",
        "inference",
        _json_response("ModelMetadata"),
        secured=True,
        errors=(404,),
    )
    model_config = get(
        "Model configuration (Triton's model configuration extension)",
        "inference",
        _json_response("ModelConfig"),
        secured=True,
        errors=(404,),
    )
    statistics = get(
        "Inference statistics (Triton's statistics extension)",
        "inference",
        _json_response("ModelStatistics"),
        secured=True,
        errors=(404,),
    )
    model_ready = get(
        "Is the model ready?", "health", _json_response("ModelReady"), secured=False, errors=(404,)
    )
    model_ready["get"]["responses"]["503"] = _not_ready("ModelReady")
    infer = {
        "post": operation(
            "Run the model on tensors (Open Inference Protocol v2)",
            "inference",
            _infer_response(),
            secured=True,
            description=_INFER_DESCRIPTION,
            body=_infer_body(models),
            errors=_BODY_ERRORS,
        )
    }
    predict_parameters = [
        _parameter(
            "raw",
            "query",
            {"type": "string", "enum": ["1", "true", "full"]},
            "Add the model's raw output tensors to each result, under `outputs`: summarised "
            "(dtype, shape, first values, statistics) for `1` or `true`, every value for `full`.",
        )
    ]

    def predict(served: list[ServedModel], path_parameters: list[dict[str, Any]]) -> dict[str, Any]:
        lines = [
            f"- **{m.name}:{m.version}** takes {_takes(inputs[m.name])}; returns {_returns(m)}."
            for m in served
        ]
        return {
            "post": operation(
                "Run the model's pipeline on text, images, audio or tensors",
                "predict",
                _json_response("PredictResponse"),
                secured=True,
                description=_PREDICT_DESCRIPTION + "\n\n" + "\n".join(lines),
                parameters=path_parameters + predict_parameters,
                body=_predict_body(served, inputs),
                errors=_BODY_ERRORS,
            )
        }

    def page(summary: str, media: str) -> dict[str, Any]:
        response = {"description": summary, "content": {media: {}}}
        return {
            "get": {
                "summary": summary,
                "tags": ["web"],
                "responses": {
                    "200": response,
                    **{str(c): _error_response(c) for c in sorted(_REFUSALS)},
                },
                **({"security": []} if token_required else {}),
            }
        }

    server_ready = get("Is the server ready?", "health", _json_response("Ready"), secured=False)
    server_ready["get"]["responses"]["503"] = _not_ready("Ready")
    paths: dict[str, Any] = {
        "/v2": server_metadata,
        "/v2/health/live": get(
            "Is the server live?", "health", _json_response("Live"), secured=False
        ),
        "/v2/health/ready": server_ready,
        "/v2/models/{model}": {"parameters": per_model, **model_metadata},
        "/v2/models/{model}/versions/{version}": {"parameters": per_version, **model_metadata},
        "/v2/models/{model}/ready": {"parameters": per_model, **model_ready},
        "/v2/models/{model}/versions/{version}/ready": {"parameters": per_version, **model_ready},
        "/v2/models/stats": statistics,
        "/v2/models/{model}/config": {"parameters": per_model, **model_config},
        "/v2/models/{model}/versions/{version}/config": {"parameters": per_version, **model_config},
        "/v2/models/{model}/stats": {"parameters": per_model, **statistics},
        "/v2/models/{model}/versions/{version}/stats": {"parameters": per_version, **statistics},
        "/v2/repository/index": {
            "post": operation(
                "Every served model and its state",
                "inference",
                _json_response("RepositoryIndex"),
                secured=True,
            )
        },
        "/v2/models/{model}/infer": {"parameters": per_model, **infer},
        "/v2/models/{model}/versions/{version}/infer": {"parameters": per_version, **infer},
        "/v1/models/{model}/predict": predict(models, per_model),
        "/metrics": get(
            "Prometheus metrics",
            "health",
            {
                "description": "Metrics in the Prometheus text format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            secured=False,
        ),
        "/": page("The playground: try each model in the browser", "text/html"),
        "/docs": page("These API docs", "text/html"),
        "/openapi.json": page("This OpenAPI document", "application/json"),
    }
    if len(models) == 1:
        paths["/predict"] = predict(models, [])
    from gpux.serve.openapi_openai import openai_paths

    openai, openai_schemas = openai_paths(models, operation)
    paths.update(openai)
    listed = ", ".join(f"{m.name}:{m.version} ({m.model.placement.backend})" for m in models)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "GPUX inference server",
            "version": __version__,
            "description": f"Serving {listed}.",
        },
        "tags": [
            {
                "name": "predict",
                "description": "The GPUXfile's pipeline: inputs in, decoded results out.",
            },
            {
                "name": "inference",
                "description": "Open Inference Protocol v2 (KServe, Triton clients).",
            },
            {
                "name": "health",
                "description": "Liveness, readiness and metrics: never need a token.",
            },
            {
                "name": "openai",
                "description": "The OpenAI API: chat and text completions of generative "
                "models, embeddings of embedding models (openai SDK, LangChain ...).",
            },
            {"name": "web", "description": "Pages for people: never need a token."},
        ],
        "paths": paths,
        "components": {"schemas": {**_schemas(), **openai_schemas}},
    }
    if token_required:
        document["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "The token `gpux serve` was started with.",
            }
        }
        document["security"] = [{"bearer": []}]
    return document


def _parameter(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _not_ready(schema: str) -> dict[str, Any]:
    return {
        "description": "Not ready: a model is still warming up (or its warm-up failed)",
        "content": {"application/json": {"schema": _ref(schema)}},
    }


def _json_response(schema: str) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": _ref(schema)}}}


# What any route may answer before its handler runs, and what routes with a body add.
_REFUSALS = (403, 413, 421)
_BODY_ERRORS = (400, 404, 408, 413, 415, 500, 503, 504)

_REASONS = {
    400: "Bad input: the message says which input and why",
    401: "Missing or wrong bearer token",
    403: "A page of another site (the `Origin` header) is not allowed to call this server "
    "(`gpux serve --cors-origin`)",
    404: "No such model (or version) is served here",
    408: "The request body did not arrive in time (`gpux serve --body-timeout`)",
    413: "The request body, or a multipart form, is over the server's limits "
    "(`gpux serve --max-body-mb`, `--max-form-parts`)",
    415: "The Content-Type is not one this endpoint accepts",
    421: "The `Host` header names a host this server does not answer to "
    "(`gpux serve --allowed-host`)",
    500: "The model failed to run",
    503: "Too many requests are waiting; retry after `Retry-After` seconds",
    504: "The model did not answer in time",
}


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": _REASONS[status],
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _takes(inputs: list[dict[str, Any]]) -> str:
    return ", ".join(f"`{i['name']}` ({i['kind']})" for i in inputs) or "nothing"


def _returns(served: ServedModel) -> str:
    if served.pipeline and served.pipeline.results:
        return ", ".join(f"`{r.name}`" for r in served.pipeline.results)
    return "the output tensors " + ", ".join(f"`{t.name}`" for t in served.model.outputs)


def _predict_body(
    served: list[ServedModel], inputs: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    json_examples: dict[str, Any] = {}
    form_examples: dict[str, Any] = {}
    for m in served:
        item = _item_example(inputs[m.name])
        key = re.sub(r"[^A-Za-z0-9._-]", "_", m.name)
        json_examples[key] = {"summary": f"{m.name}: one item", "value": item}
        json_examples[f"{key}-batch"] = {
            "summary": f"{m.name}: a batch of two",
            "value": [item, item],
        }
        if all(i["kind"] != "tensor" for i in inputs[m.name]):
            form_examples[key] = {
                "summary": f"{m.name}: form fields (files for images and audio)",
                "value": {k: v for k, v in item.items() if isinstance(v, str)},
            }
    item_schema = {
        "type": "object",
        "description": "Input name -> value: a string for text, base64 (or a data: URL) for an "
        "image or audio file, a nested list for a tensor.",
        "additionalProperties": True,
    }
    content: dict[str, Any] = {
        "application/json": {
            "schema": {
                "oneOf": [item_schema, {"type": "array", "items": item_schema, "minItems": 1}]
            },
            "examples": json_examples,
        }
    }
    if form_examples:
        content["multipart/form-data"] = {
            "schema": {
                "type": "object",
                "description": "One item: a text field per text input, a file per image or audio input.",
                "additionalProperties": {
                    "type": "string",
                    "contentMediaType": "application/octet-stream",
                },
            },
            "examples": form_examples,
        }
    return {"required": True, "content": content}


def _infer_body(models: list[ServedModel]) -> dict[str, Any]:
    examples = {}
    for m in models:
        tensors = []
        for t in m.model.inputs:
            example = _tensor_example(t)
            if example is None:
                break
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in t.shape or []]
            data = [example] if not isinstance(example, list) else json.loads(json.dumps(example))
            tensors.append(
                {
                    "name": t.name,
                    "shape": shape,
                    "datatype": protocol.datatype(t.dtype),
                    "data": data,
                }
            )
        else:
            key = re.sub(r"[^A-Za-z0-9._-]", "_", m.name)
            examples[key] = {"summary": f"{m.name}: zeros", "value": {"inputs": tensors}}
    json_content: dict[str, Any] = {"schema": _ref("InferenceRequest")}
    if examples:
        json_content["examples"] = examples
    return {
        "required": True,
        "content": {
            "application/json": json_content,
            "application/octet-stream": {
                "schema": _binary(
                    "The binary tensor data extension: an InferenceRequest JSON header of "
                    "`Inference-Header-Content-Length` bytes, then each binary input's raw bytes."
                ),
            },
        },
    }


def _binary(description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "contentMediaType": "application/octet-stream",
        "description": description,
    }


def _infer_response() -> dict[str, Any]:
    return {
        "description": "The outputs asked for (all when none are named).",
        "headers": {
            "Inference-Header-Content-Length": {
                "description": "Only with binary outputs: the length of the JSON header that starts the body.",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
        "content": {
            "application/json": {"schema": _ref("InferenceResponse")},
            "application/octet-stream": {
                "schema": _binary(
                    "An InferenceResponse JSON header, then each binary output's raw bytes."
                ),
            },
        },
    }


_INFER_DESCRIPTION = """\
JSON tensors, or the **binary tensor data extension** (what Triton's clients send by default):
the body starts with an InferenceRequest JSON header whose length is given in the
`Inference-Header-Content-Length` request header; the raw tensors follow, in the order of the
inputs that carry `parameters.binary_data_size` (little-endian; each BYTES element is prefixed
by its length in 4 bytes). Ask for binary outputs with `parameters.binary_data_output: true`
(all) or per output `parameters.binary_data: true`; the response is then framed the same way.
A body may be gzip-compressed (`Content-Encoding: gzip`). Datatypes must match the model's."""

_PREDICT_DESCRIPTION = """\
A JSON object is one item; a JSON list is a batch (answered with `results`, in order). A
`multipart/form-data` body is one item: a field per text input, a file per image or audio
input. The answer carries the model, the backend it ran on and the latency."""

# ------------------------------------------------------------------------------------ pages
