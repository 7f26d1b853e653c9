"""The fast JSON codec (gpux/serve/json_codec.py) means what the standard library meant: same
values in, same refusals, valid JSON out."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpux.errors import InputError
from gpux.serve import json_codec, protocol

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_values_round_trip_as_the_standard_library_reads_them(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert json_codec.loads(text) == json.loads(text)
    assert json.loads(json_codec.dumps(value)) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            b"[123456789012345678901234567890, -18446744073709551617]",
            [123456789012345678901234567890, -(2**64) - 1],
        ),
        (b'["\\u00e9t\\u00e9", "\xe2\x82\xac", "\\ud83d\\ude00"]', ["été", "€", "😀"]),
        (b'["\\ud800"]', ["\ud800"]),  # a lone surrogate escape: json.loads accepts it
        (b"\xef\xbb\xbf[1]", [1]),  # a UTF-8 byte order mark, likewise
        (b"[1e400, 1e-400, -0.0]", [math.inf, 0.0, -0.0]),
        (b'{"a": 1, "a": 2}', {"a": 2}),  # the last duplicate wins
    ],
)
def test_what_the_standard_library_accepts_is_accepted(text: bytes, expected: Any) -> None:
    assert json_codec.loads(text) == expected == json.loads(text)
    as_text = text.decode("utf-8", "surrogatepass")
    if not as_text.startswith("\ufeff"):  # json.loads refuses a str with a BOM; so does loads
        assert json_codec.loads(as_text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (b'{"inputs": [NaN]}', "NaN is not JSON"),
        (b"[Infinity]", "Infinity is not JSON"),
        (b"[-Infinity]", "-Infinity is not JSON"),
        (b"[1,]", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'"\xff"', "not valid JSON"),
        (b"[1] x", "not valid JSON"),
        (b"[" * 65 + b"]" * 65, "65 levels deep"),
    ],
)
def test_refusals_keep_their_messages(text: bytes, fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        protocol.decode_json(text)
    assert fragment in caught.value.message


def test_big_integers_reach_the_range_check_exactly() -> None:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [2**64]}]}
    with pytest.raises(InputError, match="too large for any int64 value"):
        protocol.parse_request(json.dumps(body).encode(), None)


def test_non_finite_floats_are_refused_when_encoding() -> None:
    for value in (math.nan, [1.0, math.inf], {"score": -math.inf}):
        with pytest.raises(ValueError, match="not JSON compliant"):
            json_codec.dumps(value)


def test_encoding_writes_valid_json_for_awkward_values() -> None:
    value = {"s": "NaN and Infinity in text", "n": 2**70, "u": "été 😀", "lone": "\ud800"}
    assert json.loads(json_codec.dumps(value)) == value
    assert json_codec.dumps({"u": "é"}) == '{"u":"é"}'.encode()  # UTF-8, not \u escapes
    with pytest.raises(TypeError):  # what json.dumps refuses is still refused
        json_codec.dumps({"x": object()})


def test_tensor_answers_carry_non_finite_values_as_strings() -> None:
    request = protocol.InferRequest(inputs={})
    outputs = {"y": np.array([1.5, np.nan, np.inf, -np.inf], np.float32)}
    body, header_length = protocol.encode_response("m", "1", request, outputs)
    assert header_length is None
    assert json.loads(body)["outputs"][0]["data"] == [1.5, "nan", "inf", "-inf"]


NUMERIC = st.sampled_from(
    ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint64", "bool"]
)


@settings(max_examples=200, deadline=None)
@given(NUMERIC, st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=40))
def test_answers_read_back_as_the_same_tensor(kind: str, values: list[float]) -> None:
    """Tensors are written in their own dtype's shortest form (FP32 ``0.1``, not the double
    ``0.10000000149011612``): a client that reads them as the declared datatype gets every value
    back exactly, as from the binary extension."""
    with np.errstate(all="ignore"):
        array = np.asarray(values, dtype=np.float64).astype(kind)
    if array.dtype.kind == "f":
        array = np.where(np.isfinite(array), array, 0).astype(kind)  # fp16 overflows to inf
    request = protocol.InferRequest(inputs={}, binary_outputs=set(), all_binary=False)
    body, header_length = protocol.encode_response("m", "1", request, {"y": array})
    assert header_length is None
    (entry,) = json.loads(body)["outputs"]
    read = np.asarray(entry["data"], dtype=kind)
    np.testing.assert_array_equal(read, array.ravel())
    if kind == "float32":
        # Never longer than the double's digits that a Python list of the values would give.
        doubles = json_codec.dumps(
            {**json.loads(body), "outputs": [{**entry, "data": array.tolist()}]}
        )
        assert len(body) <= len(doubles)


def test_a_tensor_orjson_cannot_write_goes_the_general_way() -> None:
    import ml_dtypes

    request = protocol.InferRequest(inputs={}, binary_outputs=set(), all_binary=False)
    halves = np.array([[1.5, -2.0]], dtype=ml_dtypes.bfloat16)
    body, _ = protocol.encode_response("m", "1", request, {"y": halves, "big": np.arange(3)})
    outputs = {o["name"]: o["data"] for o in json.loads(body)["outputs"]}
    assert outputs == {"y": [1.5, -2.0], "big": [0, 1, 2]}
    huge = {"count": 2**70, "data": np.zeros(2, np.float32)}
    assert json.loads(json_codec.dumps_arrays(huge)) == {"count": 2**70, "data": [0.0, 0.0]}
