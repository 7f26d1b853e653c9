"""Property tests of the infer body parser and the binary-extension header (issue #12).

Whatever a client sends, ``protocol.parse_request``, ``decode_json`` and ``parse_header_length``
either return a valid parse or raise :class:`InputError` (the server's 400); any other exception
would be a 500. Valid requests, encoded by tritonclient (the reference client), parse back to
the tensors that were sent, in JSON and in the binary tensor data extension.
"""

from __future__ import annotations

import contextlib
import json
import string
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from gpux.errors import InputError
from gpux.serve import protocol

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values a hostile or careless client puts where the protocol expects something else.
AWKWARD_NUMBERS = st.sampled_from(
    [
        0,
        -1,
        1,
        255,
        256,
        300,
        2**31,
        2**32,
        2**63,
        2**64,
        -(2**63) - 1,
        10**400,
        1e39,
        -1e39,
        1e308,
        1.5,
        -0.0,
        True,
        False,
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | AWKWARD_NUMBERS
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)
SHAPES = st.lists(st.integers(0, 3) | AWKWARD_NUMBERS, max_size=4) | JSON_VALUES
DATATYPES = st.sampled_from(list(protocol.DATATYPES)) | st.sampled_from(["fp32", "FP8", ""])
PARAMETERS = (
    st.fixed_dictionaries(
        {},
        optional={
            "binary_data_size": st.integers(0, 64) | AWKWARD_NUMBERS | JSON_VALUES,
            "binary_data": JSON_VALUES,
            "binary_data_output": JSON_VALUES,
            "classification": st.integers(-1, 5) | JSON_VALUES,
        },
    )
    | JSON_VALUES
)
DATA = (
    st.lists(AWKWARD_NUMBERS | st.floats(allow_nan=False, allow_infinity=False), max_size=6)
    | st.lists(st.lists(st.integers(-300, 300), min_size=2, max_size=2), max_size=3)
    | st.lists(st.text(max_size=4), max_size=4)
    | JSON_VALUES
)
TENSORS = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["x", "y"]) | JSON_VALUES,
        "datatype": DATATYPES | JSON_VALUES,
        "shape": SHAPES,
        "data": DATA,
        "parameters": PARAMETERS,
    },
)
OUTPUTS = st.lists(
    st.fixed_dictionaries({}, optional={"name": JSON_VALUES, "parameters": PARAMETERS})
    | JSON_VALUES,
    max_size=3,
)
REQUESTS = st.fixed_dictionaries(
    {"inputs": st.lists(TENSORS, max_size=3)},
    optional={"id": JSON_VALUES, "parameters": PARAMETERS, "outputs": OUTPUTS | JSON_VALUES},
) | st.dictionaries(st.sampled_from(["inputs", "outputs", "id", "parameters"]), JSON_VALUES)


def parses_or_refuses(body: bytes, header_length: int | None) -> protocol.InferRequest | None:
    """The parse, or None when refused with an InputError; anything else fails the test."""
    try:
        parsed = protocol.parse_request(body, header_length)
    except InputError as error:
        assert error.message and error.hint, error
        return None
    for name, array in parsed.inputs.items():
        assert isinstance(name, str)
        assert isinstance(array, np.ndarray)
        assert array.dtype.kind == "O" or array.dtype.name in protocol.DATATYPE_OF
    return parsed


@FUZZ
@given(st.binary(max_size=256))
def test_any_bytes_decode_or_are_refused(body: bytes) -> None:
    with contextlib.suppress(InputError):
        protocol.decode_json(body)


@FUZZ
@given(JSON_VALUES, st.booleans())
def test_json_decodes_to_the_value_sent_and_depth_is_counted_like_json(
    value: Any, ascii_only: bool
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert protocol.json_depth(text.encode("utf-8", "surrogatepass")) == depth(value)
    assert protocol.decode_json(text) == value


@FUZZ
@given(
    st.integers(0, 200), st.sampled_from("[{"), st.text(string.printable + '\\"[]{}', max_size=8)
)
def test_nesting_beyond_the_limit_is_refused(levels: int, bracket: str, text: str) -> None:
    closing = {"[": "]", "{": "}"}[bracket]
    opening = '{"k":' if bracket == "{" else "["
    body = opening * levels + json.dumps(text) + closing * levels
    if levels <= protocol.MAX_JSON_DEPTH:
        assert protocol.decode_json(body) is not None
    else:
        with pytest.raises(InputError, match="levels deep"):
            protocol.decode_json(body)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@FUZZ
@given(
    st.none()
    | st.text(max_size=24)
    | st.from_regex(r"[ \t]?[0-9]{1,24}[ \t]?", fullmatch=True)
    | st.sampled_from(["²", "١٢", "\uff11\uff12", "12\n", "0x10", "-5", "+5", "1_000", "1e3", " "])
)
def test_a_header_length_is_ascii_digits_or_refused(text: str | None) -> None:
    try:
        length = protocol.parse_header_length(text)
    except InputError as error:
        assert "must be a byte count" in error.message
        return
    if text is None:
        assert length is None
    else:
        digits = text.strip(" \t")
        assert length == int(digits) and set(digits) <= set(string.digits), text


@FUZZ
@given(REQUESTS, st.binary(max_size=32), st.integers(-2, 2) | st.none())
def test_any_request_parses_or_is_refused(
    request: Any, binary: bytes, length_error: int | None
) -> None:
    header = json.dumps(request).encode()
    if length_error is None:
        parsed = parses_or_refuses(header, None)
    else:
        parsed = parses_or_refuses(header + binary, len(header) + length_error)
    if parsed is not None and isinstance(request.get("inputs"), list):
        for tensor in request["inputs"]:
            assert list(parsed.inputs[str(tensor["name"])].shape) == tensor["shape"]


SPOILERS = JSON_VALUES | AWKWARD_NUMBERS | st.lists(AWKWARD_NUMBERS, min_size=1, max_size=3)
FIELDS = ["name", "datatype", "shape", "data", "parameters", "binary_data_size", "a dimension"]


@st.composite
def nearly_valid_requests(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """A request a real client could send, with at most one field per tensor (and at request
    level) replaced by an awkward value: random JSON alone rarely gets past the first check,
    so the deeper ones (parameters, shapes, values, binary sizes) would go untested."""
    tensors, blobs = [], []
    for name in draw(st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=3)):
        datatype = draw(st.sampled_from(list(protocol.DATATYPES)))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        size = int(np.prod(shape))
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if draw(st.booleans()):
            blob = draw(st.binary(min_size=size, max_size=size * 8 + 8))
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            entry["data"] = draw(st.lists(st.text(max_size=4), min_size=size, max_size=size))
        else:
            entry["data"] = draw(st.lists(AWKWARD_NUMBERS, min_size=size, max_size=size))
        spoiled = draw(st.sampled_from([None, *FIELDS]))
        if spoiled == "binary_data_size":
            entry["parameters"] = {"binary_data_size": draw(SPOILERS)}
        elif spoiled == "a dimension" and shape:
            shape[draw(st.integers(0, len(shape) - 1))] = draw(AWKWARD_NUMBERS)
        elif spoiled is not None:
            entry[spoiled] = draw(SPOILERS)
        tensors.append(entry)
    request: dict[str, Any] = {"inputs": tensors}
    for key in draw(st.sets(st.sampled_from(["id", "parameters", "outputs"]))):
        request[key] = draw(SPOILERS | OUTPUTS) if key == "outputs" else draw(PARAMETERS)
    return request, b"".join(blobs)


@FUZZ
@given(nearly_valid_requests())
def test_a_nearly_valid_request_parses_or_is_refused(request: tuple[dict[str, Any], bytes]) -> None:
    header, blobs = request
    text = json.dumps(header).encode()
    parsed = parses_or_refuses(text + blobs, len(text) if blobs else None)
    if parsed is not None:
        for tensor in header["inputs"]:
            assert list(parsed.inputs[str(tensor["name"])].shape) == tensor["shape"]


@FUZZ
@given(st.binary(max_size=512), st.integers(-1, 600) | st.none())
def test_any_bytes_with_any_header_length_parse_or_are_refused(
    body: bytes, header_length: int | None
) -> None:
    parses_or_refuses(body, header_length)


# Round trip: tensors of every datatype, encoded by tritonclient, parse back equal.


@st.composite
def tensor_sets(draw: st.DrawFn) -> list[tuple[str, str, np.ndarray, bool]]:
    count = draw(st.integers(1, 4))
    names = draw(
        st.lists(st.text(min_size=1, max_size=8), min_size=count, max_size=count, unique=True)
    )
    tensors = []
    for name in names:
        datatype = draw(st.sampled_from(list(protocol.DATATYPES)))
        shape = draw(npst.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
        binary = draw(st.booleans())
        if datatype == "BYTES":
            # JSON carries BYTES as text; the binary extension carries any bytes.
            texts = st.binary(max_size=6) if binary else st.text(max_size=6).map(str.encode)
            size = int(np.prod(shape))
            values = draw(st.lists(texts, min_size=size, max_size=size))
            array = np.array(values, dtype=object).reshape(shape)
        else:
            dtype = np.dtype(protocol.DATATYPES[datatype])
            # JSON has no NaN or infinity; binary data carries them as they are.
            numbers = (
                npst.from_dtype(dtype, allow_nan=binary, allow_infinity=binary)
                if dtype.kind == "f"
                else None
            )
            array = draw(npst.arrays(dtype, shape, elements=numbers))
        tensors.append((name, datatype, array, binary))
    return tensors


@FUZZ
@given(tensor_sets())
def test_tensors_sent_by_tritonclient_parse_back_equal(
    tensors: list[tuple[str, str, np.ndarray, bool]],
) -> None:
    inputs = []
    for name, datatype, array, binary in tensors:
        entry = triton.InferInput(name, list(array.shape), datatype)
        entry.set_data_from_numpy(array, binary_data=binary)
        inputs.append(entry)
    body, header_length = triton.InferenceServerClient.generate_request_body(inputs)
    parsed = protocol.parse_request(body, header_length)
    assert list(parsed.inputs) == [name for name, *_ in tensors]
    for name, datatype, array, _ in tensors:
        got = parsed.inputs[name]
        assert got.shape == array.shape, name
        if datatype == "BYTES":
            assert got.dtype == object and got.tolist() == array.tolist(), name
        else:
            assert got.dtype == array.dtype, name
            assert got.tobytes() == array.tobytes(), name  # bit for bit: NaN, -0.0 and all
