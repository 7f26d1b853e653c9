"""Property tests of the gRPC request decoder (gpux/serve/grpc_tensors.py), in process.

Tensors of every datatype sent by ``tritonclient.grpc`` (raw bytes) or as typed contents (the
field the protocol's ``grpc_service.proto`` gives each datatype) parse back bit for bit, and
whatever a client puts in a ``ModelInferRequest`` either parses or raises
:class:`InputError` (INVALID_ARGUMENT), never anything that would be an INTERNAL error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tritonclient.grpc as triton_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst
from tritonclient.grpc import service_pb2

from gpux.errors import InputError
from gpux.serve import grpc_tensors, protocol

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# From grpc_service.proto's InferTensorContents: the field that carries each datatype.
FIELD_OF = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
FIELDS = sorted(set(FIELD_OF.values()))


@st.composite
def tensor_sets(draw: st.DrawFn) -> list[tuple[str, str, np.ndarray]]:
    names = draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4, unique=True))
    tensors = []
    for name in names:
        datatype = draw(st.sampled_from(list(protocol.DATATYPES)))
        shape = draw(npst.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
        if datatype == "BYTES":
            size = int(np.prod(shape))
            values = draw(st.lists(st.binary(max_size=6), min_size=size, max_size=size))
            array = np.empty(size, dtype=object)
            array[:] = values
            array = array.reshape(shape)
        else:
            array = draw(npst.arrays(np.dtype(protocol.DATATYPES[datatype]), shape))
        tensors.append((name, datatype, array))
    return tensors


def assert_parsed_back(parsed: protocol.InferRequest, tensors: list[Any]) -> None:
    assert list(parsed.inputs) == [name for name, *_ in tensors]
    for name, datatype, array in tensors:
        got = parsed.inputs[name]
        assert got.shape == array.shape, name
        if datatype == "BYTES":
            assert got.dtype == object and got.tolist() == array.tolist(), name
        else:
            assert got.dtype == array.dtype and got.tobytes() == array.tobytes(), name


@FUZZ
@given(tensor_sets())
def test_raw_tensors_from_tritonclient_parse_back_equal(tensors: list[Any]) -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    for name, datatype, array in tensors:
        entry = triton_grpc.InferInput(name, list(array.shape), datatype)
        entry.set_data_from_numpy(array)
        request.inputs.append(entry._get_tensor())
        request.raw_input_contents.append(entry._get_content())
    assert_parsed_back(grpc_tensors.infer_request(request), tensors)


@FUZZ
@given(tensor_sets())
def test_typed_contents_parse_back_equal(tensors: list[Any]) -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    sent = []
    for name, datatype, array in tensors:
        if datatype == "FP16":  # no typed field: raw bytes only (refused below)
            continue
        entry = request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        getattr(entry.contents, FIELD_OF[datatype]).extend(array.ravel().tolist())
        sent.append((name, datatype, array))
    assert_parsed_back(grpc_tensors.infer_request(request), sent)


def test_fp16_has_no_typed_field_and_out_of_range_values_are_refused() -> None:
    half = service_pb2.ModelInferRequest()
    half.inputs.add(name="h", datatype="FP16", shape=[1]).contents.fp32_contents.append(1.0)
    narrow = service_pb2.ModelInferRequest()
    narrow.inputs.add(name="b", datatype="INT8", shape=[2]).contents.int_contents.extend([1, 300])
    for request, fragment in ((half, "FP16 has no typed contents field"), (narrow, "300")):
        try:
            grpc_tensors.infer_request(request)
        except InputError as exc:
            assert fragment in exc.message and exc.hint
        else:
            raise AssertionError(f"{fragment!r} was accepted")


@st.composite
def any_requests(draw: st.DrawFn) -> Any:
    """Requests a careless or hostile client could send: any datatype name, any shape, values
    in any field, raw contents of any length, any number of them."""
    request = service_pb2.ModelInferRequest(id=draw(st.text(max_size=4)))
    for _ in range(draw(st.integers(0, 3))):
        entry = request.inputs.add(
            name=draw(st.sampled_from(["", "x", "y"])),
            datatype=draw(st.sampled_from([*protocol.DATATYPES, "fp32", "FLOAT", ""])),
            shape=draw(st.lists(st.integers(-2, 2**40) | st.integers(0, 4), max_size=4)),
        )
        for field in draw(st.lists(st.sampled_from(FIELDS), max_size=2)):
            count = draw(st.integers(0, 6))
            if field == "bytes_contents":
                values: list[Any] = draw(
                    st.lists(st.binary(max_size=4), min_size=count, max_size=count)
                )
            elif field == "bool_contents":
                values = [True] * count
            elif field.startswith(("fp",)):
                values = draw(st.lists(st.floats(width=32), min_size=count, max_size=count))
            elif field.startswith("uint"):
                values = draw(st.lists(st.integers(0, 2**32 - 1), min_size=count, max_size=count))
            else:
                values = draw(
                    st.lists(st.integers(-(2**31), 2**31 - 1), min_size=count, max_size=count)
                )
            getattr(entry.contents, field).extend(values)
    for blob in draw(st.lists(st.binary(max_size=40), max_size=4)):
        request.raw_input_contents.append(blob)
    for name in draw(st.lists(st.sampled_from(["x", "z"]), max_size=2)):
        output = request.outputs.add(name=name)
        top = draw(st.integers(-2, 5) | st.none())
        if top is not None:
            output.parameters["classification"].int64_param = top
    return request


@FUZZ
@given(any_requests())
def test_any_request_parses_or_is_refused(request: Any) -> None:
    try:
        parsed = grpc_tensors.infer_request(request)
    except InputError as exc:
        assert exc.message and exc.hint
        return
    for entry in request.inputs:
        assert list(parsed.inputs[entry.name].shape) == list(entry.shape)


def test_only_python_work_or_huge_copies_leave_the_loop() -> None:
    """A request of raw tensor bytes is decoded on the loop (numpy over its bytes, one copy)
    unless it is very large; typed contents (a Python list to convert) count at their size;
    so do strings in an answer, where numbers count at 1/64 of theirs, as over HTTP."""
    from gpux.serve.bodies import OFF_LOOP_BYTES
    from gpux.serve.grpc_service import _decode_work, _encode_work

    huge_bytes = OFF_LOOP_BYTES * protocol.BINARY_WORK_DIVISOR  # 16 MB

    raw = service_pb2.ModelInferRequest(model_name="m")
    raw.inputs.add(name="x", datatype="FP32", shape=[1, 150528])
    raw.raw_input_contents.append(np.zeros(150528, np.float32).tobytes())  # ResNet-50's 602 KB
    assert _decode_work(raw, list(raw.raw_input_contents)) < OFF_LOOP_BYTES
    huge = service_pb2.ModelInferRequest(model_name="m")
    huge.inputs.add(name="x", datatype="UINT8", shape=[huge_bytes])
    huge.raw_input_contents.append(bytes(huge_bytes))
    assert _decode_work(huge, list(huge.raw_input_contents)) >= OFF_LOOP_BYTES
    typed = service_pb2.ModelInferRequest(model_name="m")
    tensor = typed.inputs.add(name="x", datatype="FP32", shape=[1, 150528])
    tensor.contents.fp32_contents.extend([0.5] * 150528)
    assert _decode_work(typed, list(typed.raw_input_contents)) >= OFF_LOOP_BYTES

    assert _encode_work({"y": np.zeros((1, 128, 768), np.float32)}) < OFF_LOOP_BYTES
    assert _encode_work({"y": np.zeros(huge_bytes, np.uint8)}) >= OFF_LOOP_BYTES
    words = service_pb2.ModelInferRequest(model_name="m")
    words.inputs.add(name="s", datatype="BYTES", shape=[65536])
    words.raw_input_contents.append(b"\x01\x00\x00\x00a" * 65536)  # 320 KB of strings
    assert _decode_work(words, list(words.raw_input_contents)) >= OFF_LOOP_BYTES
    assert _encode_work({"y": np.array(["text"] * 65536, dtype=object)}) >= OFF_LOOP_BYTES
