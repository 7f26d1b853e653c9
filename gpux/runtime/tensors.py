"""Tensor signatures and input checking.

Inputs are checked here, against the signature recorded in the image, before ONNX Runtime sees
them: its own errors name internal node names, not the input the user got wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpux.errors import InputError, ModelError

Dim = int | str | None

# ONNX TensorProto element type -> GPUX dtype name (numpy names; "string" for text).
ONNX_ELEMENT_TYPES: dict[int, str] = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    16: "bfloat16",
}

_NUMPY: dict[str, Any] = {
    "float32": np.float32,
    "float16": np.float16,
    "float64": np.float64,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "bool": np.bool_,
    "string": np.object_,
}


def numpy_dtype_of_ort_type(type_text: str) -> np.dtype[Any]:
    """``tensor(float)`` (ONNX Runtime's spelling) -> numpy float32."""
    name = type_text.removeprefix("tensor(").removesuffix(")")
    return numpy_dtype({"float": "float32", "double": "float64"}.get(name, name))


def numpy_dtype(dtype: str) -> np.dtype[Any]:
    if dtype not in _NUMPY:
        raise InputError(
            f"dtype {dtype} has no numpy equivalent for inputs",
            "convert the model's input to float16 or float32",
        )
    resolved: np.dtype[Any] = np.dtype(_NUMPY[dtype])
    return resolved


@dataclass
class TensorSignature:
    """Name, dtype and shape (ints fixed, strings symbolic, None any) of one tensor."""

    name: str
    dtype: str
    shape: list[Dim] | None  # None: rank unknown
    example: Any = None
    description: str | None = None
    batch_axis: int | None = 0
    """Outputs: the axis holding a batch's items; None for an output the batch shares."""
    _numpy: np.dtype[Any] | None = field(default=None, repr=False, compare=False)

    @property
    def np_dtype(self) -> np.dtype[Any]:
        if self._numpy is None:
            self._numpy = numpy_dtype(self.dtype)
        return self._numpy

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": self.shape}
        if self.example is not None:
            data["example"] = self.example
        if self.description:
            data["description"] = self.description
        if self.batch_axis != 0:  # images built before batch_axis existed read as 0
            data["batch_axis"] = self.batch_axis
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorSignature:
        return cls(
            name=data["name"],
            dtype=data["dtype"],
            shape=data.get("shape"),
            example=data.get("example"),
            description=data.get("description"),
            batch_axis=data.get("batch_axis", 0),
        )

    def shape_text(self) -> str:
        if self.shape is None:
            return "[?]"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"


def _kind_ok(given: np.dtype[Any], wanted: np.dtype[Any]) -> bool:
    """Accept a value when converting it loses no meaning: same kind, or ints into floats."""
    if given == wanted:
        return True
    if wanted.kind == "O":
        return given.kind in "OUS"
    if given.kind == "b":
        return wanted.kind == "b"
    if wanted.kind == "f":
        return given.kind in "fiu"
    if wanted.kind in "iu":
        return given.kind in "iu"
    return False


def coerce(name: str, value: Any, signature: TensorSignature) -> np.ndarray[Any, Any]:
    """Turn a JSON value or array into an array of the signature's dtype, or explain why not."""
    wanted = signature.np_dtype
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError, OverflowError, RecursionError):
            raise InputError(
                f"input '{name}': the nested lists are ragged (rows of different lengths)",
                f"give a rectangular array of shape {signature.shape_text()}",
            ) from None
        if wanted == np.uint64 and array.dtype == np.float64:
            array = _uint64_integers(value, array)
        if array.dtype == object and wanted.kind != "O":
            huge = _first_unfit_integer(array, wanted)
            if huge is not None:
                raise InputError(
                    f"input '{name}' holds {_show_integer(huge)}, too large for any "
                    f"{signature.dtype} value (range {_range_text(wanted)})",
                    f"send values that fit {signature.dtype}",
                )
            raise InputError(
                f"input '{name}': the nested lists are ragged or mix types",
                f"give a rectangular array of {signature.dtype} values, shape "
                f"{signature.shape_text()}",
            )
    # An empty list reads as float64: with no values there is nothing to lose by converting.
    if array.size and not _kind_ok(array.dtype, wanted):
        raise InputError(
            f"input '{name}' expects {signature.dtype} but got {_describe(array.dtype)} values",
            f"send {signature.dtype} data (shape {signature.shape_text()})",
        )
    if array.dtype != wanted:
        array = _convert(name, array, wanted, signature)
    return array


def from_values(name: str, values: Any, dtype: str) -> np.ndarray[Any, Any]:
    """Numbers decoded from JSON (nested lists) -> an array of ``dtype`` (a GPUX dtype name).

    The same checks as :func:`coerce` (no wrapping, no silent overflow to infinity, no floats
    truncated to integers), for callers that know the dtype but not the model: the Open
    Inference Protocol, where each tensor names its datatype. JSON has no infinity, so a
    non-finite float here is a literal too large even for float64 (``1e400``).
    """
    array = coerce(name, values, TensorSignature(name, dtype, None))
    if array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
        raise InputError(
            f"input '{name}' holds a number too large for {dtype} (range {_range_text(array.dtype)})",
            f"send values that fit {dtype}",
        )
    return array


def _uint64_integers(value: Any, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """numpy reads ``[2**63, 0]`` as float64 (no signed type holds both), losing the low bits
    of a valid UINT64. Whole Python ints are read again as objects, so that they are converted
    (or refused) exactly; real floats keep the float64 array and its "expects" error."""
    exact = np.asarray(value, dtype=object)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in exact.flat):
        return array
    if all(0 <= v < 1 << 64 for v in exact.flat):
        return np.asarray(value, dtype=np.uint64)  # exact for Python ints in range
    return exact  # the caller names the value that does not fit


def _first_unfit_integer(array: np.ndarray[Any, Any], wanted: np.dtype[Any]) -> int | None:
    """The first Python int in an object array that ``wanted`` cannot hold (numpy keeps ints
    beyond 64 bits as objects, so they arrive here rather than in :func:`_convert`)."""
    low, high = _limits(wanted)
    for value in array.flat:
        if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
            return value
    return None


def _limits(dtype: np.dtype[Any]) -> tuple[float, float]:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return int(info.min), int(info.max)
    if dtype.kind == "f":
        largest = float(np.finfo(dtype).max)
        return -largest, largest
    return 0, 1  # bool


def _range_text(dtype: np.dtype[Any]) -> str:
    low, high = _limits(dtype)
    if dtype.kind == "f":
        return f"[{low:.4g}, {high:.4g}]"
    return f"[{int(low)}, {int(high)}]"


def _show_integer(value: int) -> str:
    """An integer for a message: whole up to 24 digits, else its first digits and length
    (``10**400`` has 401; Python refuses str() of an int past 4,300 digits)."""
    if value.bit_length() > 14_000:
        return f"an integer of {value.bit_length()} bits"
    text = str(value)
    digits = len(text.lstrip("-"))
    return text if digits <= 24 else f"{text[:8]}... ({digits} digits)"


def _convert(
    name: str, array: np.ndarray[Any, Any], wanted: np.dtype[Any], signature: TensorSignature
) -> np.ndarray[Any, Any]:
    """Cast, refusing values the target type cannot hold (numpy would wrap or overflow)."""
    if wanted.kind in "iu" and array.dtype.kind in "iu" and array.size:
        limits = np.iinfo(wanted)
        low, high = int(array.min()), int(array.max())
        if low < limits.min or high > limits.max:
            bad = low if low < limits.min else high
            raise InputError(
                f"input '{name}' holds {bad}, outside the range of {signature.dtype} "
                f"[{limits.min}, {limits.max}]",
                f"send values that fit {signature.dtype}",
            )
    with np.errstate(over="ignore", invalid="ignore"):
        converted = array.astype(wanted)
    if wanted.kind == "f" and array.dtype.kind in "fiu" and array.size:
        overflow = np.isinf(converted) & np.isfinite(array)
        if overflow.any():
            bad = array[overflow].reshape(-1)[0]
            raise InputError(
                f"input '{name}' holds {bad}, too large for {signature.dtype} "
                f"(range {_range_text(wanted)})",
                f"send values that fit {signature.dtype}",
            )
    return converted


def _describe(dtype: np.dtype[Any]) -> str:
    return {"U": "string", "S": "bytes", "O": "object", "b": "boolean"}.get(dtype.kind, str(dtype))


def check_feed(
    feed: Mapping[str, Any], signatures: list[TensorSignature], *, coerce_values: bool = True
) -> dict[str, np.ndarray[Any, Any]]:
    """Validate names, dtypes and shapes of a whole request; return arrays ready for the backend.

    Symbolic dimensions with the same name must agree across inputs (``batch`` of
    ``input_ids`` and ``attention_mask``).
    """
    by_name = {s.name: s for s in signatures}
    unknown = [n for n in feed if n not in by_name]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], list(by_name), n=1)
        suggestion = f"; did you mean '{close[0]}'?" if close else ""
        raise InputError(
            f"unknown input '{unknown[0]}'{suggestion}",
            f"the model's inputs are: {', '.join(by_name)}",
        )
    missing = [s.name for s in signatures if s.name not in feed]
    if missing:
        raise InputError(
            f"missing input '{missing[0]}' ({by_name[missing[0]].dtype} "
            f"{by_name[missing[0]].shape_text()})",
            f"the model needs every input: {', '.join(by_name)}",
        )
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    bound: dict[str, tuple[int, str]] = {}
    for signature in signatures:
        value = feed[signature.name]
        if coerce_values or not isinstance(value, np.ndarray):
            array = coerce(signature.name, value, signature)
        else:
            array = value
            if array.dtype != signature.np_dtype:
                raise InputError(
                    f"input '{signature.name}' expects {signature.dtype} but got {array.dtype}",
                    f"convert it with array.astype('{signature.dtype}')",
                )
        check_shape(signature, array.shape, bound)
        arrays[signature.name] = array
    return arrays


def check_shape(
    signature: TensorSignature, shape: tuple[int, ...], bound: dict[str, tuple[int, str]]
) -> None:
    expected = signature.shape
    if expected is None:
        return
    if len(shape) != len(expected):
        raise InputError(
            f"input '{signature.name}' expects {len(expected)} dimensions "
            f"{signature.shape_text()} but got {len(shape)}: {list(shape)}",
            f"reshape the value to {signature.shape_text()}",
        )
    for axis, (want, got) in enumerate(zip(expected, shape, strict=True)):
        if isinstance(want, int) and want != got:
            raise InputError(
                f"input '{signature.name}' dimension {axis} must be {want} but is {got} "
                f"(expected shape {signature.shape_text()}, got {list(shape)})",
                f"reshape the value to {signature.shape_text()}",
            )
        if isinstance(want, str):
            if want in bound and bound[want][0] != got:
                size, other = bound[want]
                raise InputError(
                    f"input '{signature.name}' dimension {axis} ('{want}') is {got} but "
                    f"'{want}' is {size} in input '{other}'",
                    f"every input must agree on '{want}'",
                )
            bound.setdefault(want, (got, signature.name))


def items_first(
    name: str, array: np.ndarray[Any, Any], batch_axis: int | None, count: int
) -> np.ndarray[Any, Any]:
    """``array`` with its batch axis moved to the front, checked to hold ``count`` items.

    An output shared by the whole batch (``batch_axis`` None) is repeated for each item."""
    if batch_axis is None:
        return np.broadcast_to(array, (count, *np.shape(array)))
    if array.ndim <= batch_axis or array.shape[batch_axis] != count:
        raise ModelError(
            f"output '{name}' has shape {list(array.shape)}: its axis {batch_axis} should hold "
            f"the {count} item{'s' if count != 1 else ''} of the batch",
            "declare the axis that holds the items under outputs: in the GPUXfile "
            "(- name: " + name + ", batch_axis: N), or batch_axis: none for an output the "
            "batch shares",
        )
    return array if batch_axis == 0 else np.moveaxis(array, batch_axis, 0)
