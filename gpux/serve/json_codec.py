"""JSON for request and answer bodies, fast: pydantic-core's Rust parser and serialiser (installed
with pydantic), with the standard library's exact behaviour wherever the two differ.

For a MiniLM answer of 6,144 floats (127 KB): ``json.dumps`` 3.30 ms, ``pydantic_core.to_json``
0.35 ms (orjson 0.20 ms from lists); parsing it back, ``json.loads`` 1.20 ms,
``pydantic_core.from_json`` 0.24 ms.

Inference answers go through :func:`dumps_arrays`: orjson writes numpy arrays itself, and writes
FP32 and FP16 values in their own shortest form (``0.1``) where a Python list of them holds
doubles (``0.10000000149011612``). For that MiniLM answer: 0.16 ms and 67 KB against 0.38 ms and
121 KB from ``tolist()`` and pydantic-core, and a client parses it 2.5x faster; every value reads
back as the same FP32 number (tests/serve/test_json_codec.py). The FastAPI endpoint that
benchmarks/serve.py compares with answers the same way.

Where they differ, the standard library decides, so that a body means what it meant before:

* parsing: whatever pydantic-core refuses is parsed again by ``json.loads``, which either
  accepts it (a lone surrogate escape such as ``"\\ud800"``, a UTF-8 byte order mark) or raises
  the error a client has always seen (``NaN`` and ``Infinity`` are refused with their own
  message, by :func:`gpux.serve.protocol.decode_json`). Integers of any size stay exact, as with
  ``json.loads`` (orjson refuses those past 64 bits);
* encoding: an answer holding a non-finite float (pydantic-core would write the invalid
  ``NaN``), or a value pydantic-core cannot write, is written by ``json.dumps`` with
  ``allow_nan=False``, which raises as Starlette's ``JSONResponse`` did. Tensors never get there:
  their non-finite values are the strings "nan", "inf" and "-inf" (gpux/serve/protocol.py).
  A string with a lone surrogate, which UTF-8 cannot hold, is written with ``\\u`` escapes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pydantic_core

from gpux import json_text

__all__ = ["dumps", "dumps_arrays", "loads"]


def loads(
    text: bytes | str,
    *,
    max_depth: int = json_text.MAX_DEPTH,
    parse_constant: Callable[[str], Any] | None = None,
) -> Any:
    """``json_text.loads(text, max_depth=..., parse_constant=...)``, parsed by pydantic-core
    when it can be (nesting is measured first either way)."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    # Nesting needs an opening bracket per level: with few brackets there is nothing to measure
    # (the scan's numpy calls cost ~40 us, as much as parsing a binary request's header).
    if raw.count(b"[") + raw.count(b"{") > max_depth:
        found = json_text.depth(raw)
        if found > max_depth:
            raise json_text.TooDeepError(found, max_depth)
    try:
        return pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError:
        pass  # the standard library's answer: a value, or its own error message
    return json.loads(text, parse_constant=parse_constant)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; ``ValueError`` for NaN or infinity, as ``JSONResponse`` raised."""
    try:
        encoded = pydantic_core.to_json(value)
    except (ValueError, TypeError):  # e.g. a numpy scalar, a lone surrogate
        pass
    else:
        # pydantic-core writes non-finite floats as the bare words NaN and Infinity: not JSON.
        # Those letters can also sit inside a string; then the slower path below writes it.
        if b"NaN" not in encoded and b"Infinity" not in encoded:
            return encoded
    # ASCII escapes: a lone surrogate in a string is still written (UTF-8 cannot hold it).
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()


def dumps_arrays(value: Any) -> bytes:
    """:func:`dumps` for a body whose tensors are numpy arrays, written by orjson.

    The caller keeps non-finite values out of the arrays (orjson would write them as ``null``)
    and Python floats out of the rest of the body. An array orjson cannot write (bfloat16, not
    C-contiguous) or an integer past 64 bits sends the whole body the general way instead."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return dumps(_as_lists(value))


def _as_lists(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {key: _as_lists(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_lists(item) for item in value]
    return value
