"""JSON from outside, parsed with bounded nesting.

``json.loads`` recurses once per level: a text of 100,000 ``[`` raises RecursionError, which
would surface as an internal error. Every JSON value a user or a client hands GPUX (request
bodies, ``gpux run`` stdin and ``@file`` inputs, JSON lines) goes through :func:`loads`, which
measures the nesting first and refuses it with a :class:`ValueError` like any other malformed
JSON, so each caller's "not valid JSON" message applies.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

# A tensor nests one level per dimension and sits three levels down
# ({"inputs": [{"data": ...}]}); ONNX models use a handful of dimensions and numpy at most 64,
# so 64 fits every legitimate value while a text nested 100k deep is refused before json.loads
# recurses into it.
MAX_DEPTH = 64
_STRUCTURE = b'"[]{}'
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in _STRUCTURE)
_CHUNK = 1 << 20


class TooDeepError(ValueError):
    """The text nests deeper than allowed; ``depth`` says how deep."""

    def __init__(self, depth: int, limit: int) -> None:
        super().__init__(f"it nests {depth} levels deep, more than the {limit} allowed")
        self.depth, self.limit = depth, limit


def loads(text: bytes | str, *, max_depth: int = MAX_DEPTH, **options: Any) -> Any:
    """``json.loads(text, **options)``; :class:`TooDeepError` (a ValueError) past
    ``max_depth``."""
    if isinstance(text, str):
        raw = text.encode("utf-8", "surrogatepass")
    else:  # bytes as they are (a request body can be 64 MiB: no copy); bytearray/memoryview
        raw = text if isinstance(text, bytes) else bytes(text)
    found = depth(raw)
    if found > max_depth:
        raise TooDeepError(found, max_depth)
    return json.loads(text, **options)


def depth(raw: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in a JSON text, brackets inside strings skipped.

    Vectorised, so a 64 MiB tensor body costs milliseconds rather than a Python loop per byte:
    escaped backslashes, then escaped quotes, are dropped (a left-to-right pass pairs backslashes
    as JSON does), ``bytes.translate`` keeps only quotes and brackets, and numpy counts quote
    parity (odd: inside a string) and bracket levels in chunks.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = raw.translate(None, _NOT_STRUCTURE)
    codes = np.frombuffer(marks, dtype=np.uint8)
    deepest, level, quotes = 0, 0, 0
    for start in range(0, len(codes), _CHUNK):
        chunk = codes[start : start + _CHUNK]
        seen = np.cumsum(chunk == ord('"'), dtype=np.int64) + quotes
        outside = (seen & 1) == 0
        opens = ((chunk == ord("[")) | (chunk == ord("{"))) & outside
        closes = ((chunk == ord("]")) | (chunk == ord("}"))) & outside
        levels = np.cumsum(opens.astype(np.int64) - closes) + level
        deepest = max(deepest, int(levels.max()))
        level, quotes = int(levels[-1]), int(seen[-1])
    return deepest
