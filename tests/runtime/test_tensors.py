"""Input checking against a signature, before ONNX Runtime sees the values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gpux.errors import InputError
from gpux.runtime.tensors import TensorSignature, check_feed

TEXT = [
    TensorSignature("input_ids", "int64", ["batch", "sequence"]),
    TensorSignature("attention_mask", "int64", ["batch", "sequence"]),
]
IMAGE = [TensorSignature("pixels", "float32", ["batch", 3, 4, 4])]


def raises_input_error(
    feed: dict[str, Any], signatures: list[TensorSignature], **kw: Any
) -> InputError:
    with pytest.raises(InputError) as info:
        check_feed(feed, signatures, **kw)
    assert info.value.exit_code == 6
    assert info.value.hint
    return info.value


def test_valid_feed_is_returned_as_arrays_of_the_signature_dtype() -> None:
    feed = {"input_ids": [[101, 2023, 102]], "attention_mask": np.ones((1, 3), dtype=np.int32)}
    arrays = check_feed(feed, TEXT)
    assert list(arrays) == ["input_ids", "attention_mask"]
    for array in arrays.values():
        assert isinstance(array, np.ndarray)
        assert array.dtype == np.int64
        assert array.shape == (1, 3)
    assert arrays["input_ids"].tolist() == [[101, 2023, 102]]


def test_unknown_input_suggests_the_closest_name() -> None:
    error = raises_input_error({"input_id": [[1]], "attention_mask": [[1]]}, TEXT)
    assert error.message == "unknown input 'input_id'; did you mean 'input_ids'?"
    assert error.hint == "the model's inputs are: input_ids, attention_mask"


def test_unknown_input_without_a_close_match() -> None:
    error = raises_input_error({"zzz": 1, "input_ids": [[1]], "attention_mask": [[1]]}, TEXT)
    assert error.message == "unknown input 'zzz'"


def test_missing_input_names_it_with_dtype_and_shape() -> None:
    error = raises_input_error({"input_ids": [[1, 2]]}, TEXT)
    assert error.message == "missing input 'attention_mask' (int64 [batch, sequence])"
    assert "input_ids, attention_mask" in (error.hint or "")


@pytest.mark.parametrize(
    ("value", "described"),
    [
        ([[1.5, 2.0]], "float64"),
        (np.array([[1.5, 2.0]], dtype=np.float32), "float32"),
        ([["a", "b"]], "string"),
        ([[True, False]], "boolean"),
    ],
)
def test_wrong_dtype_names_input_and_both_dtypes(value: Any, described: str) -> None:
    error = raises_input_error({"input_ids": value, "attention_mask": [[1, 1]]}, TEXT)
    assert error.message == f"input 'input_ids' expects int64 but got {described} values"
    assert "int64" in (error.hint or "")


def test_wrong_dtype_without_coercion_names_the_conversion() -> None:
    feed = {"input_ids": np.zeros((1, 2), np.int32), "attention_mask": np.zeros((1, 2), np.int64)}
    error = raises_input_error(feed, TEXT, coerce_values=False)
    assert error.message == "input 'input_ids' expects int64 but got int32"
    assert error.hint == "convert it with array.astype('int64')"


@pytest.mark.parametrize("value", [[[[1, 2, 3, 4]] * 4] * 3, np.ones((3, 4, 4), np.uint8)])
def test_integers_given_to_a_float_input_are_converted(value: Any) -> None:
    arrays = check_feed({"pixels": [value]}, IMAGE)
    assert arrays["pixels"].dtype == np.float32
    assert arrays["pixels"].shape == (1, 3, 4, 4)
    np.testing.assert_array_equal(arrays["pixels"][0], np.asarray(value, dtype=np.float32))


def test_float_array_of_the_right_dtype_is_passed_through() -> None:
    pixels = np.zeros((2, 3, 4, 4), np.float32)
    assert check_feed({"pixels": pixels}, IMAGE)["pixels"] is pixels


def test_wrong_rank_names_input_and_shapes() -> None:
    error = raises_input_error({"pixels": np.zeros((3, 4, 4), np.float32)}, IMAGE)
    assert error.message == (
        "input 'pixels' expects 4 dimensions [batch, 3, 4, 4] but got 3: [3, 4, 4]"
    )
    assert error.hint == "reshape the value to [batch, 3, 4, 4]"


def test_wrong_fixed_dimension_names_input_axis_and_sizes() -> None:
    error = raises_input_error({"pixels": np.zeros((2, 1, 4, 4), np.float32)}, IMAGE)
    assert error.message == (
        "input 'pixels' dimension 1 must be 3 but is 1 "
        "(expected shape [batch, 3, 4, 4], got [2, 1, 4, 4])"
    )


def test_symbolic_dimension_must_agree_across_inputs() -> None:
    feed = {"input_ids": np.zeros((2, 5), np.int64), "attention_mask": np.zeros((3, 5), np.int64)}
    error = raises_input_error(feed, TEXT)
    assert error.message == (
        "input 'attention_mask' dimension 0 ('batch') is 3 but 'batch' is 2 in input 'input_ids'"
    )
    assert error.hint == "every input must agree on 'batch'"
    feed["attention_mask"] = np.zeros((2, 6), np.int64)
    assert "('sequence') is 6" in raises_input_error(feed, TEXT).message


def test_unknown_rank_and_unnamed_dimensions_accept_anything() -> None:
    signatures = [
        TensorSignature("anything", "float32", None),
        TensorSignature("free", "float32", [None, 2]),
    ]
    arrays = check_feed({"anything": np.zeros((1, 2, 3, 4)), "free": np.zeros((7, 2))}, signatures)
    assert arrays["anything"].shape == (1, 2, 3, 4)
    assert arrays["free"].dtype == np.float32


@pytest.mark.parametrize("value", [[[1, 2], [3]], [[1, 2], 3], [[1.0], ["a", 2]]])
def test_ragged_lists_are_an_input_error_naming_the_input(value: Any) -> None:
    error = raises_input_error({"input_ids": value, "attention_mask": [[1, 1]]}, TEXT)
    assert error.message.startswith("input 'input_ids'")
    assert "ragged" in error.message or "expects int64" in error.message


def test_string_input_accepts_text() -> None:
    signature = [TensorSignature("text", "string", ["batch"])]
    arrays = check_feed({"text": ["hello", "world"]}, signature)
    assert arrays["text"].dtype == object
    assert arrays["text"].tolist() == ["hello", "world"]
    error = raises_input_error({"text": [1.0, 2.0]}, signature)
    assert error.message == "input 'text' expects string but got float64 values"


@pytest.mark.zoo
def test_every_error_names_the_input_on_a_real_model_signature(zoo_file: Any) -> None:
    """The signature GPUX reads from the real MiniLM model drives the same checks."""
    from gpux.builder.analyze import load_checked, model_signature

    path: Path = zoo_file("minilm")
    inputs, _ = model_signature(load_checked(path, str(path), full_check=False))
    assert [(s.name, s.dtype) for s in inputs] == [
        ("input_ids", "int64"),
        ("attention_mask", "int64"),
        ("token_type_ids", "int64"),
    ]
    good = {s.name: np.zeros((2, 8), np.int64) for s in inputs}
    assert {k: v.shape for k, v in check_feed(good, inputs).items()} == {
        s.name: (2, 8) for s in inputs
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "token_type_ids": np.zeros((2, 8), np.float32)}, "token_type_ids"),
        ({**good, "attention_mask": np.zeros((2, 9), np.int64)}, "attention_mask"),
        ({**good, "input_ids": np.zeros((16,), np.int64)}, "input_ids"),
    ]
    for bad, name in cases:
        assert f"'{name}'" in raises_input_error(bad, inputs).message


# -- property: shapes that match a signature are accepted; one wrong fixed dim is refused ---

SYMBOLS = ["batch", "sequence", "channels"]
DIMS = st.one_of(st.integers(1, 4), st.sampled_from(SYMBOLS), st.none())


@st.composite
def signature_and_feed(draw: st.DrawFn) -> tuple[list[TensorSignature], dict[str, Any]]:
    count = draw(st.integers(1, 3))
    sizes = {symbol: draw(st.integers(0, 3)) for symbol in SYMBOLS}
    signatures = []
    feed: dict[str, Any] = {}
    for index in range(count):
        shape = draw(st.lists(DIMS, max_size=4))
        dtype = draw(st.sampled_from(["float32", "int64", "float16", "int32"]))
        signatures.append(TensorSignature(f"in{index}", dtype, shape))
        concrete = [
            d if isinstance(d, int) else sizes[d] if isinstance(d, str) else draw(st.integers(0, 3))
            for d in shape
        ]
        given_dtype = draw(st.sampled_from([dtype, "int8"]))  # ints are accepted everywhere
        feed[f"in{index}"] = np.zeros(concrete, dtype=given_dtype)
    return signatures, feed


@settings(deadline=None)  # slow CI machines must not fail on timing
@given(signature_and_feed())
def test_matching_shapes_are_accepted(case: tuple[list[TensorSignature], dict[str, Any]]) -> None:
    signatures, feed = case
    arrays = check_feed(feed, signatures)
    for signature in signatures:
        assert arrays[signature.name].shape == feed[signature.name].shape
        assert arrays[signature.name].dtype == np.dtype(signature.dtype)


@settings(deadline=None)  # slow CI machines must not fail on timing
@given(signature_and_feed(), st.data())
def test_changing_one_fixed_dimension_is_refused(
    case: tuple[list[TensorSignature], dict[str, Any]], data: st.DataObject
) -> None:
    signatures, feed = case
    fixed = [
        (signature, axis)
        for signature in signatures
        for axis, dim in enumerate(signature.shape or [])
        if isinstance(dim, int)
    ]
    assume(fixed)
    signature, axis = data.draw(st.sampled_from(fixed))
    shape = list(feed[signature.name].shape)
    shape[axis] += data.draw(st.sampled_from([-1, 1, 5]))
    feed[signature.name] = np.zeros(shape, dtype=feed[signature.name].dtype)
    with pytest.raises(InputError) as info:
        check_feed(feed, signatures)
    assert info.value.message == (
        f"input '{signature.name}' dimension {axis} must be {signature.shape[axis]} "  # type: ignore[index]
        f"but is {shape[axis]} (expected shape {signature.shape_text()}, got {shape})"
    )
