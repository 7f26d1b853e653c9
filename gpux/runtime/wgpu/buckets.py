"""Batch buckets: a few executors serve every batch size a call brings.

An executor is built for one set of input sizes (the graph prepared by ONNX Runtime's optimizer
at those sizes, every node lowered, its own buffers), which costs about as much as the model's
load. A model whose batch is symbolic would pay that again for every new batch size. Instead
its executors are built for a few sizes, the buckets (the server's preferred batch sizes, or
powers of two up to ``serving.max_batch_size``). A call of ``n`` rows is padded up to the
smallest bucket that holds it, runs on that bucket's executor, and its outputs are cut back to
``n`` rows (copied, so no padded row is reachable from what the caller gets).

Padding repeats the last row, as the server's batcher does: a row of zeros may be an input the
model never sees in use (an all-zero attention mask). A call larger than the largest bucket
runs in chunks of the largest bucket, the last chunk in its own bucket, and the chunks' outputs
are joined: rows are independent of each other, which padding assumes already.

Only a real batch dimension is padded: one symbol on axis 0 of every input and of every
output, left open by the GPUXfile. Any other model keeps one executor per exact input size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpux.runtime.host_memory import join_rows

Array = np.ndarray[Any, Any]


def _axis0_symbol(value: Any) -> str | None:
    dims = value.type.tensor_type.shape.dim
    if not dims or dims[0].HasField("dim_value") or not dims[0].dim_param:
        return None
    return str(dims[0].dim_param)


def batch_symbol(model: Any, dimensions: Mapping[str, int]) -> str | None:
    """The symbol on axis 0 of every input and every output of ``model`` (an ONNX
    ModelProto), when there is one and ``dimensions`` (the GPUXfile's fixed sizes) leaves it
    open; else None."""
    initializers = {t.name for t in model.graph.initializer}
    values = [v for v in model.graph.input if v.name not in initializers]
    values += list(model.graph.output)
    symbols = {_axis0_symbol(value) for value in values}
    if not values or len(symbols) != 1:
        return None
    symbol = symbols.pop()
    return None if symbol is None or symbol in dimensions else symbol


@dataclass(frozen=True)
class Buckets:
    """The batch sizes executors are built for (ascending, at least one)."""

    sizes: tuple[int, ...]

    @classmethod
    def of(cls, sizes: Sequence[int]) -> Buckets | None:
        """Buckets for ``sizes`` (the positive ones); None when none is left."""
        kept = tuple(sorted({int(n) for n in sizes if int(n) > 0}))
        return cls(kept) if kept else None

    @property
    def largest(self) -> int:
        return self.sizes[-1]

    def bucket(self, rows: int) -> int:
        """The smallest bucket that holds ``rows`` (at most ``largest``)."""
        return next(size for size in self.sizes if size >= rows)

    def chunks(self, rows: int) -> list[tuple[int, int]]:
        """``(start, stop)`` of each run a call of ``rows`` rows takes: one when it fits the
        largest bucket, else chunks of the largest bucket and a last one for what is left."""
        return [(start, min(start + self.largest, rows)) for start in range(0, rows, self.largest)]


def rows_of(feed: Mapping[str, Array], names: Sequence[str]) -> int | None:
    """The batch of ``feed``: the length of axis 0 that every input in ``names`` shares, when
    it is at least 1; None otherwise (the call then runs at its exact sizes)."""
    lengths = {int(feed[name].shape[0]) if feed[name].ndim else -1 for name in names}
    if len(lengths) != 1:
        return None
    rows = lengths.pop()
    return rows if rows >= 1 else None


def pad(feed: Mapping[str, Array], rows: int, size: int) -> dict[str, Array]:
    """``feed`` (``rows`` rows) grown to ``size`` rows by repeating its last row."""
    if size == rows:
        return dict(feed)
    return {name: join_rows([value], size - rows) for name, value in feed.items()}


def join(parts: Sequence[tuple[Mapping[str, Array], int]]) -> dict[str, Array]:
    """Each part's outputs cut to its real rows (``(outputs, rows)``), joined along axis 0.
    The result never shares memory with a padded output."""
    joined: dict[str, Array] = {}
    for name in parts[0][0]:
        if len(parts) == 1:
            value, rows = parts[0][0][name], parts[0][1]
            joined[name] = value if len(value) == rows else value[:rows].copy()
        else:
            joined[name] = np.concatenate([outputs[name][:rows] for outputs, rows in parts])
    return joined
