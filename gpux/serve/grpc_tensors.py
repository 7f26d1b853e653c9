"""Open Inference Protocol over gRPC: ``ModelInferRequest`` -> tensors, outputs ->
``ModelInferResponse``.

A request carries each input's values either typed (``contents.fp32_contents`` and so on, one
field per datatype) or as bytes (``raw_input_contents``, one entry per input, in the order of
``inputs``; what Triton's clients send). The checks are those of the HTTP side
(gpux/serve/protocol.py): the same datatype, shape and byte-count checks with the same
messages, and the result is the same :class:`protocol.InferRequest`. Answers carry every output
in ``raw_output_contents``, as Triton does (BYTES elements length-prefixed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gpux.errors import InputError
from gpux.runtime.tensors import from_values
from gpux.serve import protocol

Array = np.ndarray[Any, Any]

# Where typed values of each datatype travel, and the numpy type of that field's values. FP16
# has no field: it travels as raw bytes only.
CONTENTS: dict[str, tuple[str, Any]] = {
    "BOOL": ("bool_contents", np.bool_),
    "INT8": ("int_contents", np.int32),
    "INT16": ("int_contents", np.int32),
    "INT32": ("int_contents", np.int32),
    "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint32),
    "UINT16": ("uint_contents", np.uint32),
    "UINT32": ("uint_contents", np.uint32),
    "UINT64": ("uint64_contents", np.uint64),
    "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
    "BYTES": ("bytes_contents", object),
}


def infer_request(message: Any, raw: Sequence[bytes] | None = None) -> protocol.InferRequest:
    """A ``ModelInferRequest`` -> arrays by input name, the outputs asked for and their
    classification counts; :class:`InputError` for anything the HTTP side would refuse.
    ``raw``: its ``raw_input_contents`` when the caller has read them already (protobuf's
    upb copies a part's bytes on every read)."""
    raw = message.raw_input_contents if raw is None else raw
    if raw and len(raw) != len(message.inputs):
        raise InputError(
            f"the request has {len(raw)} raw_input_contents for {len(message.inputs)} inputs",
            "send one raw_input_contents entry per input, in the order of 'inputs' (or typed "
            "contents for every input)",
        )
    inputs: dict[str, Array] = {}
    for position, tensor in enumerate(message.inputs):
        name = tensor.name
        if not name:
            raise InputError(f"inputs[{position}] has no 'name'", "give every input a name")
        datatype_name = protocol.checked_datatype(name, tensor.datatype)
        shape, count = protocol.tensor_shape(name, list(tensor.shape))
        if raw:
            if tensor.contents.ListFields():
                raise InputError(
                    f"input '{name}' has typed contents, but the request sends raw_input_contents",
                    "send every input in raw_input_contents, or every input as typed contents",
                )
            array = protocol.from_bytes(name, raw[position], datatype_name, shape)
        else:
            array = _typed(name, tensor.contents, datatype_name, shape, count)
        if name in inputs:
            raise InputError(f"input '{name}' is given twice", "send each input once")
        inputs[name] = array
    parameters = {key: _value(value) for key, value in message.parameters.items()}
    request = protocol.InferRequest(
        inputs=inputs, request_id=message.id or None, parameters=parameters
    )
    if message.outputs:
        request.outputs = []
        for output in message.outputs:
            request.outputs.append(output.name)
            if "classification" in output.parameters:
                top = _value(output.parameters["classification"])
                request.classification[output.name] = protocol.classification_count(
                    output.name, top
                )
    return request


def _typed(name: str, contents: Any, datatype_name: str, shape: list[int], count: int) -> Array:
    """An input's values from its typed contents field, checked like JSON ``data``."""
    if datatype_name not in CONTENTS:
        raise InputError(
            f"input '{name}': {datatype_name} has no typed contents field",
            f"send {name} in raw_input_contents",
        )
    field, wire = CONTENTS[datatype_name]
    given = [descriptor.name for descriptor, _ in contents.ListFields()]
    if given and given != [field]:
        raise InputError(
            f"input '{name}': {datatype_name} values go in contents.{field}, got "
            f"{', '.join(f'contents.{g}' for g in given)}",
            f"send the values in contents.{field}, or the tensor in raw_input_contents",
        )
    values = getattr(contents, field)
    if len(values) != count:
        raise InputError(
            f"input '{name}': contents.{field} has {len(values)} values but shape "
            f"{shape} needs {count}",
            "make 'shape' match the number of values",
        )
    if wire is object:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
    else:
        array = np.fromiter(values, dtype=wire, count=count)
        wanted = protocol.DATATYPES[datatype_name]
        if array.dtype != np.dtype(wanted):  # INT8 sent as int32 and so on: range-checked
            array = from_values(name, array, wanted)
    return array.reshape(shape)


def _value(parameter: Any) -> Any:
    """An ``InferParameter``'s value (whichever of its fields is set), None when none is."""
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)


def infer_response(
    model: str, version: str, request: protocol.InferRequest, outputs: dict[str, Array]
) -> Any:
    """The ``ModelInferResponse`` for ``outputs`` (already chosen), each as raw bytes."""
    from tritonclient.grpc import service_pb2

    response = service_pb2.ModelInferResponse(
        model_name=model, model_version=version, id=request.request_id or ""
    )
    for name, value in outputs.items():
        array = np.asarray(value)
        text = array.dtype.kind in "OUS"
        response.outputs.add(
            name=name,
            datatype=protocol.datatype("string" if text else str(array.dtype)),
            shape=array.shape,
        )
        blob = protocol.pack_bytes(array) if text else np.ascontiguousarray(array).tobytes()
        response.raw_output_contents.append(blob)
    return response
