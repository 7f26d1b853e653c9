"""Requests -> input values.

Accepted forms (the CLI, the Python API and the server share them):

* a mapping ``{"input name": value}`` where a value is a JSON number, string, nested list or a
  numpy array;
* ``{"inputs": {...}}``, the same mapping wrapped;
* the Open Inference Protocol form ``{"inputs": [{"name", "shape", "datatype", "data"}]}``.

Values are converted to the model's dtypes and checked against its shapes by
``gpux.runtime.tensors.check_feed``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from gpux import json_text
from gpux.errors import InputError, NotFoundError, UsageError, value_kind
from gpux.runtime.tensors import TensorSignature, from_values

OIP_DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "string",
}
MAX_REQUEST_FILE_BYTES = 2 << 30
# File types a pipeline input of each kind reads (folders of inputs, sample sets).
MEDIA_SUFFIXES = {
    "image": {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"},
    "audio": {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"},
}
_INPUT_NAME = re.compile(r"^[A-Za-z_][\w.:/-]*$")


def from_request(request: Any, input_names: Collection[str] = ()) -> dict[str, Any]:
    """Input values from a decoded JSON request in any accepted form.

    ``input_names`` (the model's) settle the one ambiguous case: a model whose input is itself
    called ``inputs`` gets a plain mapping read as a mapping.
    """
    if not isinstance(request, dict):
        raise InputError(
            f"a request must be a JSON object of input names to values, got {value_kind(request)}",
            'example: {"input_ids": [[101, 2023, 102]]}',
        )
    envelope = set(request) <= {"inputs", "id", "parameters", "outputs"}
    wrapped = request.get("inputs")
    if envelope and set(request) & set(input_names):
        # {"inputs": [...]} for a model with an input named "inputs": a value unless it is the
        # protocol's tensor list or a mapping of input names (the wrapped form).
        envelope = _is_protocol(wrapped) or (
            isinstance(wrapped, dict) and set(wrapped) <= set(input_names)
        )
    body = request.get("inputs", request) if envelope else request
    if isinstance(body, list):
        return _from_inference_protocol(body)
    if not isinstance(body, dict):
        raise InputError(
            f"'inputs' must be an object or a list, got {value_kind(body)}",
            'example: {"inputs": {"x": [1.0, 2.0]}}',
        )
    return dict(body)


def _is_protocol(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, dict) and "name" in t for t in value)


def _from_inference_protocol(tensors: list[Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for position, tensor in enumerate(tensors):
        if not isinstance(tensor, dict) or "name" not in tensor or "data" not in tensor:
            raise InputError(
                f"inputs[{position}] must have 'name', 'shape', 'datatype' and 'data'",
                "see the Open Inference Protocol request format",
            )
        name = str(tensor["name"])
        datatype = str(tensor.get("datatype", "")).upper()
        if datatype and datatype not in OIP_DATATYPES:
            raise InputError(
                f"input '{name}': unknown datatype '{datatype}'",
                f"use one of: {', '.join(OIP_DATATYPES)}",
            )
        dtype = OIP_DATATYPES.get(datatype)
        if dtype is None or dtype == "string":
            array = np.asarray(tensor["data"], dtype=object if dtype == "string" else None)
        else:  # the server's range checks: no wrapping (300 as UINT8), no overflow (1e39 as FP32)
            array = from_values(name, tensor["data"], dtype)
        shape = tensor.get("shape")
        if shape is not None:
            try:
                array = array.reshape([int(d) for d in shape])
            except (ValueError, TypeError):
                raise InputError(
                    f"input '{name}': {array.size} values cannot take shape {shape}",
                    "make 'shape' match the number of elements in 'data'",
                ) from None
        values[name] = array
    return values


def read_json_file(path: Path) -> Any:
    if not path.is_file():
        raise NotFoundError(f"file '{path}' not found", "check the path after '@'")
    if path.stat().st_size > MAX_REQUEST_FILE_BYTES:
        raise InputError(f"'{path}' is larger than 2 GiB", "send large tensors as .npy files")
    try:
        return json_text.loads(path.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"'{path}' is not valid JSON: {exc}", "check the file's syntax") from None


def read_value_file(name: str, path: Path) -> Any:
    """A value from ``name=@file``: .npy (exact dtype and shape) or .json."""
    if not path.is_file():
        raise NotFoundError(f"input '{name}': file '{path}' not found", "check the path after '@'")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(
                f"input '{name}': '{path}' is not a readable .npy file ({exc})",
                "write it with numpy.save",
            ) from None
    if suffix == ".json":
        return read_json_file(path)
    raise InputError(
        f"input '{name}': cannot read '{path.name}' (unknown file type '{suffix}')",
        "use a .npy or .json file",
    )


def parse_cli_inputs(items: list[str], signatures: list[TensorSignature]) -> dict[str, Any]:
    """``--input`` values: ``name=VALUE``, ``name=@file.npy|.json``, ``@request.json``.

    A bare ``VALUE`` is allowed when the model has exactly one input.
    """
    values: dict[str, Any] = {}
    by_name = {s.name: s for s in signatures}
    for item in items:
        if item.startswith("@"):
            path = Path(item[1:]).expanduser()
            if path.suffix.lower() == ".npy":
                # One tensor, not a request: only meaningful for the model's only input.
                if len(signatures) != 1:
                    raise UsageError(
                        f"--input '{clip(item)}': a .npy file holds one tensor; "
                        "say which input it is for",
                        f"write NAME=@{path}; the model's inputs are: {', '.join(by_name)}",
                    )
                name = signatures[0].name
                _merge(values, {name: read_value_file(name, path)})
                continue
            _merge(values, from_request(read_json_file(path), by_name))
            continue
        name, separator, text = item.partition("=")
        if not (separator and _INPUT_NAME.match(name)):
            if len(signatures) != 1:
                raise UsageError(
                    f"--input '{clip(item)}' does not name an input",
                    f"write NAME=VALUE; the model's inputs are: {', '.join(by_name)}",
                )
            name, text = signatures[0].name, item  # a bare value for the only input
        if text.startswith("@"):
            value = read_value_file(name, Path(text[1:]).expanduser())
        else:
            value = parse_value(name, text, by_name.get(name))
        _merge(values, {name: value})
    return values


def _merge(values: dict[str, Any], new: dict[str, Any]) -> None:
    for name, value in new.items():
        if name in values:
            raise UsageError(f"input '{name}' is given twice", "pass each input once")
        values[name] = value


def parse_value(name: str, text: str, signature: TensorSignature | None) -> Any:
    try:
        return json_text.loads(text)
    except ValueError:
        if signature is not None and signature.dtype == "string":
            return text
        raise InputError(
            f"input '{name}': '{clip(text)}' is not a JSON value",
            "give a number or a nested list like [[1, 2], [3, 4]], or @file.npy",
        ) from None


def loose_value(text: str) -> Any:
    """A handler input typed on a command line: its JSON value when it is one (``3``,
    ``[1, 2]``, ``{"a": 1}``), else the text as typed (``1,2,3``, ``hello``)."""
    try:
        return json_text.loads(text)
    except ValueError:
        return text


def clip(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters for a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
