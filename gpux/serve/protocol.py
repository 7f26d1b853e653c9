"""Open Inference Protocol v2 (KServe / Triton) over HTTP: request and response bodies.

JSON tensors and the binary tensor data extension that Triton's clients use by default: the
body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw tensors,
in the order of the inputs that carry ``parameters.binary_data_size``. BYTES elements are each
prefixed with their length (4 bytes, little-endian). Responses use the same framing for every
output asked for in binary (``binary_data_output`` for all, or per output ``binary_data``).
"""

from __future__ import annotations

import functools
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpux import json_text
from gpux.errors import InputError, value_kind
from gpux.pipeline.inputs import OIP_DATATYPES
from gpux.runtime.tensors import TensorSignature, check_feed, from_values
from gpux.serve import json_codec

Array = np.ndarray[Any, Any]

DATATYPES = OIP_DATATYPES  # protocol name -> GPUX dtype name
DATATYPE_OF = {dtype: name for name, dtype in DATATYPES.items()}
HEADER_LENGTH = "inference-header-content-length"
MAX_JSON_DEPTH = json_text.MAX_DEPTH  # nesting allowed in a request body (gpux/json_text.py)
# ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses. 18 digits
# hold any body size and still fit an int64.
_BYTE_COUNT = re.compile(r"[0-9]{1,18}")
# numpy allows 64 dimensions; ONNX models use a handful, so 32 leaves room for any of them.
MAX_RANK = 32
# Elements a shape may describe (its zero sizes left out): numpy must be able to describe the
# array even when it is empty, and 2^40 is beyond any tensor a request body can carry.
MAX_ELEMENTS = 1 << 40


def decode_json(body: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A request body's JSON value; :class:`InputError` for invalid JSON, nesting deeper than
    ``max_depth``, or the non-standard constants NaN and Infinity."""
    try:
        return json_codec.loads(body, max_depth=max_depth, parse_constant=_no_constant)
    except json_text.TooDeepError as exc:
        raise InputError(
            f"the request body nests {exc.depth} levels deep, more than the {max_depth} allowed",
            "send tensors as nested lists of their dimensions, or as flat 'data' with a 'shape'",
        ) from exc
    except RecursionError as exc:  # cannot happen after the scan; kept as a second guard
        raise InputError(
            "the request body nests too deeply", "send fewer levels of nested lists"
        ) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(
            f"the request body is not valid JSON: {exc}",
            'send {"inputs": [{"name", "shape", "datatype", "data"}]}',
        ) from exc


json_depth = json_text.depth  # kept under its old name for callers and tests


def parse_header_length(text: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header: None when absent, else a byte count."""
    if text is None:
        return None
    if not _BYTE_COUNT.fullmatch(text.strip(" \t")):
        raise InputError(
            f"Inference-Header-Content-Length must be a byte count, got {text[:20]!r}",
            "send the length in bytes of the JSON header that starts the body, in ASCII digits",
        )
    return int(text)


def decode_cost(body: bytes, header_length: int | None) -> int:
    """Bytes of work that decoding ``body`` takes (for
    :func:`gpux.serve.bodies.off_loop`): the JSON, and the binary tensors only when they may be
    BYTES, whose elements are unpacked one by one; other binary tensors become arrays that view
    the body, at no cost. Any escape in the header could spell BYTES, so it counts as BYTES."""
    if header_length is None or not 0 < header_length <= len(body):
        return len(body)
    header = body[:header_length].lower()
    if b"bytes" in header or b"\\" in header:
        return len(body)
    return header_length


# Copying binary tensors into an answer runs at memory speed, ~100x writing them as JSON text.
BINARY_WORK_DIVISOR = 64


def encode_cost(request: InferRequest, outputs: Mapping[str, Any]) -> int:
    """Bytes of work that encoding ``outputs`` for ``request`` takes (for
    :func:`gpux.serve.bodies.off_loop`): JSON text for every output sent as JSON, a copy for
    every output sent in binary (counted at 1/:data:`BINARY_WORK_DIVISOR`)."""
    cost = 0
    for name, value in outputs.items():
        size = int(getattr(value, "nbytes", 0))
        numeric = getattr(getattr(value, "dtype", None), "kind", "O") not in "OUS"
        binary = request.all_binary or name in request.binary_outputs
        plain = binary and numeric and name not in request.classification
        cost += size // BINARY_WORK_DIVISOR if plain else size
    return cost


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (send finite numbers)")


def datatype(dtype: str) -> str:
    """The protocol's datatype for one of GPUX's dtype names (``float32`` -> ``FP32``)."""
    return DATATYPE_OF.get(dtype, "BYTES")


@dataclass
class InferRequest:
    inputs: dict[str, Array]
    request_id: str | None = None
    outputs: list[str] | None = None  # None: all
    binary_outputs: set[str] = field(default_factory=set)
    classification: dict[str, int] = field(default_factory=dict)  # output -> top k
    all_binary: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def parse_request(body: bytes, header_length: int | None) -> InferRequest:
    """An inference request body (JSON, or JSON + binary tensors) -> arrays by input name.

    Anything a client can send either parses or raises :class:`InputError` (a 400): shapes and
    sizes are checked with Python ints before numpy allocates, and values go through the same
    range checks as ``gpux run`` (:func:`gpux.runtime.tensors.from_values`).
    """
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise InputError(
                f"Inference-Header-Content-Length is {header_length} but the body has "
                f"{len(body)} bytes",
                "send the length of the JSON header that starts the body",
            )
        header, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        header, binary = body, memoryview(b"")
    request = decode_json(header)
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise InputError(
            "the request has no 'inputs' list",
            'send {"inputs": [{"name", "shape", "datatype", "data"}]}',
        )
    inputs: dict[str, Array] = {}
    offset = 0
    for position, tensor in enumerate(request["inputs"]):
        name, array, used = _input_tensor(position, tensor, binary[offset:])
        if name in inputs:
            raise InputError(f"input '{name}' is given twice", "send each input once")
        inputs[name] = array
        offset += used
    if offset != len(binary):
        raise InputError(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims",
            "give each binary input its parameters.binary_data_size",
        )
    parameters = _parameters(request, "the request")
    request_id = request.get("id")
    result = InferRequest(
        inputs=inputs,
        request_id=None if request_id is None else _text(request_id),
        parameters=parameters,
        all_binary=bool(parameters.get("binary_data_output")),
    )
    wanted = request.get("outputs")
    if wanted is not None and not isinstance(wanted, list):
        raise InputError(
            f"'outputs' must be a list, got {value_kind(wanted)}", '{"outputs": [{"name": "y"}]}'
        )
    if wanted is not None:
        result.outputs = []
        for entry in wanted:
            if not isinstance(entry, dict) or "name" not in entry:
                raise InputError("each of 'outputs' needs a 'name'", '{"outputs": [{"name": "y"}]}')
            name = _text(entry["name"])
            result.outputs.append(name)
            options = _parameters(entry, f"output '{name}'")
            if options.get("binary_data"):
                result.binary_outputs.add(name)
            top = options.get("classification")
            if top is not None:
                result.classification[name] = classification_count(name, top)
    return result


def classification_count(output: str, top: Any) -> int:
    """The classification extension's class count for ``output``: an integer >= 1."""
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise InputError(
            f"output '{output}': classification must be a count >= 1, got {top!r:.40}",
            '"parameters": {"classification": 3}',
        )
    return top


def checked_feed(request: InferRequest, signatures: list[TensorSignature]) -> dict[str, Array]:
    """The request's tensors checked against the model's inputs, ready for the backend."""
    check_datatypes(request.inputs, signatures)
    return check_feed(request.inputs, signatures)


def check_datatypes(inputs: Mapping[str, Array], signatures: list[TensorSignature]) -> None:
    """The protocol names each tensor's datatype: a mismatch is the client's mistake (as in
    Triton), not something to convert silently."""
    for signature in signatures:
        array = inputs.get(signature.name)
        if array is None:
            continue
        sent = dtype_name(array.dtype)
        if sent != signature.dtype:
            raise InputError(
                f"input '{signature.name}': datatype {datatype(sent)}, but the model "
                f"expects {datatype(signature.dtype)}",
                f"send {signature.name} as {datatype(signature.dtype)}",
            )


@functools.lru_cache(maxsize=64)
def dtype_name(dtype: np.dtype[Any]) -> str:
    """GPUX's dtype name of an array's dtype (``string`` for text and objects). Cached:
    ``str(dtype)`` takes 4.5 us in numpy 2, twice per request (docs/benchmarks.md)."""
    return "string" if dtype.kind in "OUS" else str(dtype)


def _text(value: Any) -> str:
    """A name or id as text; JSON numbers are accepted as Triton does, containers are not."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(
            f"names and ids must be strings, got {value_kind(value)}", 'e.g. "name": "x"'
        )
    return str(value)


def _parameters(holder: dict[str, Any], owner: str) -> dict[str, Any]:
    """The ``parameters`` of a request, input or output: a JSON object, or absent/null."""
    parameters = holder.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InputError(
            f"{owner}: 'parameters' must be an object, got {value_kind(parameters)}",
            'e.g. "parameters": {"binary_data_size": 16}',
        )
    return parameters


def tensor_shape(name: str, shape: Any) -> tuple[list[int], int]:
    """A tensor's shape and element count, checked with Python ints (numpy's int64 product of
    2^32 x 2^32 wraps to 0) before anything is allocated."""
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InputError(
            f"input '{name}': 'shape' must be a list of sizes (integers >= 0), got {_brief(shape)}",
            'e.g. "shape": [1, 3]',
        )
    if len(shape) > MAX_RANK:
        raise InputError(
            f"input '{name}': 'shape' has {len(shape)} dimensions, more than {MAX_RANK}",
            "send the tensor with the model's rank (see the model's metadata)",
        )
    # Zero sizes aside, the shape must stay within what numpy can describe at all; a tensor
    # with data must also fit the body (checked against its bytes below).
    extent = math.prod(d for d in shape if d)
    if extent > MAX_ELEMENTS:
        raise InputError(
            f"input '{name}': shape {_brief(shape)} describes {extent} elements, more than "
            f"{MAX_ELEMENTS}",
            "send the tensor's real shape",
        )
    return shape, math.prod(shape)


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _input_tensor(position: int, tensor: Any, binary: memoryview) -> tuple[str, Array, int]:
    if not isinstance(tensor, dict) or "name" not in tensor:
        raise InputError(f"inputs[{position}] has no 'name'", "give every input a name")
    name = _text(tensor["name"])
    datatype_name = checked_datatype(name, tensor.get("datatype"))
    shape, count = tensor_shape(name, tensor.get("shape"))
    dtype = DATATYPES[datatype_name]
    size = _parameters(tensor, f"input '{name}'").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(binary):
            raise InputError(
                f"input '{name}': binary_data_size {_brief(size)} is not a byte count within "
                f"the {len(binary)} bytes of binary data left",
                "check the binary_data_size of each input",
            )
        return name, from_bytes(name, binary[:size], datatype_name, shape), size
    if "data" not in tensor:
        raise InputError(f"input '{name}' has no 'data'", "send 'data' or binary_data_size")
    data = tensor["data"]
    array = _strings(name, data) if dtype == "string" else from_values(name, data, dtype)
    if array.size != count:
        raise InputError(
            f"input '{name}': 'data' has {array.size} values but shape {_brief(shape)} needs "
            f"{count}",
            "make 'shape' match the number of values in 'data'",
        )
    return name, array.reshape(shape), 0


def checked_datatype(name: str, datatype_name: Any) -> str:
    """An input's datatype, upper case, or :class:`InputError` naming the ones there are."""
    if not isinstance(datatype_name, str) or datatype_name.upper() not in DATATYPES:
        raise InputError(
            f"input '{name}': unknown datatype {_brief(datatype_name)}",
            f"use one of: {', '.join(DATATYPES)}",
        )
    return datatype_name.upper()


def from_bytes(name: str, raw: memoryview | bytes, datatype_name: str, shape: list[int]) -> Array:
    """A tensor sent as bytes (the binary extension over HTTP, ``raw_input_contents`` over
    gRPC): little-endian values, or length-prefixed elements for BYTES."""
    dtype, count = DATATYPES[datatype_name], math.prod(shape)
    if dtype == "string":
        return unpack_bytes(name, memoryview(raw), count).reshape(shape)
    expected = count * np.dtype(dtype).itemsize
    if len(raw) != expected:
        raise InputError(
            f"input '{name}': {len(raw)} bytes of binary data for shape {_brief(shape)} "
            f"{datatype_name} ({expected} bytes)",
            "send exactly the tensor's bytes",
        )
    # A view of the body, not a copy (602 KB per ResNet-50 image; ONNX Runtime reads unaligned
    # and read-only arrays, and a batch is concatenated into a new array anyway).
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _strings(name: str, data: Any) -> Array:
    """BYTES given as JSON: strings (nested lists of them), each sent as its UTF-8 bytes."""
    try:
        values = np.ravel(np.array(data, dtype=object))
    except (ValueError, TypeError, RecursionError):
        raise InputError(
            f"input '{name}': the nested lists are ragged (rows of different lengths)",
            "give a rectangular array of strings",
        ) from None
    encoded = []
    for value in values:
        if not isinstance(value, str):
            raise InputError(
                f"input '{name}': BYTES data must be strings, got {value_kind(value)}",
                'e.g. "data": ["first text", "second text"]',
            )
        try:
            encoded.append(value.encode())
        except UnicodeEncodeError as exc:
            raise InputError(
                f"input '{name}': a string is not valid Unicode ({exc.reason})",
                "send UTF-8 text (no lone surrogate escapes such as \\ud800)",
            ) from exc
    return np.array(encoded, dtype=object)


def unpack_bytes(name: str, raw: memoryview, count: int) -> Array:
    # Every element has a 4-byte length: refuse a count the bytes cannot hold before looping.
    if count * 4 > len(raw):
        raise InputError(
            f"input '{name}': {len(raw)} bytes cannot hold {count} length-prefixed BYTES elements",
            "send each element as a 4-byte little-endian length and its bytes",
        )
    values: list[bytes] = []
    offset = 0
    for _ in range(count):
        if offset + 4 > len(raw):
            raise InputError(f"input '{name}': BYTES data ends early", "length-prefix each element")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InputError(
                f"input '{name}': a BYTES element of {length} bytes runs past the data",
                "length-prefix each element with its size",
            )
        values.append(bytes(raw[offset : offset + length]))
        offset += length
    if offset != len(raw):
        raise InputError(f"input '{name}': BYTES data has extra bytes", "check the element count")
    return np.array(values, dtype=object)


def pack_bytes(array: Array) -> bytes:
    parts = []
    for value in np.ravel(array):
        data = value if isinstance(value, bytes) else str(value).encode()
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def classify(array: Array, top: int, labels: list[str] | None) -> Array:
    """The classification extension: per batch row, the ``top`` best classes as BYTES
    ``"score:index[:label]"``, best first (Triton's format)."""
    scores = np.asarray(array, dtype=np.float64)
    rows = scores.reshape(scores.shape[0], -1) if scores.ndim > 1 else scores.reshape(1, -1)
    k = min(top, rows.shape[1])
    best = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    entries = [
        [
            f"{rows[r, i]:f}:{i}" + (f":{labels[i]}" if labels and i < len(labels) else "")
            for i in best[r]
        ]
        for r in range(rows.shape[0])
    ]
    return np.array([[e.encode() for e in row] for row in entries], dtype=object)


def encode_response(
    model: str,
    version: str,
    request: InferRequest,
    outputs: Mapping[str, Array],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary data follows it."""
    entries = []
    blobs: list[bytes | memoryview] = []
    for name, value in outputs.items():
        array = np.asarray(value)
        kind = dtype_name(array.dtype)
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatype(kind),
            "shape": list(array.shape),
        }
        if request.all_binary or name in request.binary_outputs:
            # The array's own bytes: copied once, into the body below.
            blob = pack_bytes(array) if kind == "string" else _raw_bytes(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif kind == "string":
            entry["data"] = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in np.ravel(array)
            ]
        else:
            entry["data"] = _json_values(array)
        entries.append(entry)
    body: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": entries}
    if request.request_id is not None:
        body["id"] = request.request_id
    header = json_codec.dumps_arrays(body)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _raw_bytes(array: Array) -> memoryview:
    """The array's bytes in C order, without copying when it is contiguous."""
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def _json_values(array: Array) -> list[Any] | Array:
    """The tensor's values in C order: the array itself, which ``json_codec.dumps_arrays``
    writes, or a list where non-finite floats become the strings "nan", "inf" and "-inf"."""
    flat = np.ascontiguousarray(np.ravel(array))
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        return [v if np.isfinite(v) else str(v) for v in flat.tolist()]
    return flat
