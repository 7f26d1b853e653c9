"""One session per batch size, for backends where a new batch size is slow.

On ONNX Runtime's CUDA EP, a call whose batch size differs from the previous call's costs
0.1-0.85 s on ResNet-50 (shared/GPU.md; benchmarks/batch_shapes.py measures it), even for
sizes it has run before: the session re-plans for the shape it sees. A session whose batch is
fixed by a free-dimension override only ever sees one shape. The server runs a few preferred
sizes (gpux/serve/batching.py pads batches up to them), so it loads one session per size and
sends each call to the session of its size; other sizes go to the general session.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from gpux.runtime.backend import Backend, Placement

Array = np.ndarray[Any, Any]


def powers_of_two(limit: int) -> tuple[int, ...]:
    """1, 2, 4 ... up to ``limit`` (none below 1)."""
    return tuple(1 << k for k in range(max(limit, 0).bit_length()))


def batch_sizes(given: Sequence[int] | None, max_batch_size: int) -> tuple[int, ...]:
    """The batch sizes a model runs, from the GPUXfile's serving settings: those it lists that
    fit ``max_batch_size`` (``[]``: none), else powers of two up to ``max_batch_size`` and
    ``max_batch_size`` itself (24: 1, 2, 4, 8, 16, 24)."""
    if given is not None:
        return tuple(sorted({n for n in given if 0 < n <= max_batch_size}))
    return tuple(sorted({*powers_of_two(max_batch_size), max_batch_size}))


class SizedSessions(Backend):
    """A general backend plus one per batch size; ``run`` picks by the feed's batch size."""

    name = "sized-sessions"

    def __init__(self, general: Backend, sized: Mapping[int, Backend], batch_input: str) -> None:
        self.general = general
        self.sized = dict(sized)
        self.batch_input = batch_input  # the input whose first axis is the batch

    @classmethod
    def load(cls, *args: Any, **kwargs: Any) -> Backend:  # pragma: no cover - built by wrap()
        raise NotImplementedError("SizedSessions are made by sized_sessions.wrap")

    def run(self, feed: Mapping[str, Array]) -> dict[str, Array]:
        value = feed.get(self.batch_input)
        backend = self.sized.get(int(value.shape[0])) if value is not None and value.ndim else None
        return (backend or self.general).run(feed)

    @property
    def placement(self) -> Placement:
        placement = self.general.placement
        details = {**placement.details, "batch_sessions": sorted(self.sized)}
        copied = {n: b for n, b in self.sized.items() if isinstance(b, GraphCopies)}
        if copied:  # GPUX_GRAPH_COPIES: the sizes that have several sessions, and how many
            details["graph_copies"] = {
                "copies": max(len(b.copies) for b in copied.values()),
                "batch_sizes": sorted(copied),
            }
        graphs = details.get("cuda_graphs")
        if graphs is not None:
            # The general session (dynamic batch) never replays a graph; the sessions of the
            # batch sizes a server runs each may. Report what each does, not the general's.
            replayed = [
                size
                for size, backend in sorted(self.sized.items())
                if backend.placement.details.get("cuda_graphs", {}).get("enabled")
            ]
            details["cuda_graphs"] = {
                "enabled": bool(replayed),
                "batch_sizes": replayed,
                **({"other_sizes": graphs["why"]} if "why" in graphs else {}),
            }
        return replace(placement, details=details)  # the general session's own stays as it is

    def close(self) -> None:
        for backend in [*self.sized.values(), self.general]:
            backend.close()


class GraphCopies(Backend):
    """Several sessions of one batch size, each replaying its own CUDA graph: a call runs on a
    free one. A graph reads and writes its session's fixed buffers on the session's one
    stream, so calls of one size take turns on one session however many threads call it;
    copies let them run side by side, each holding the model's weights again."""

    name = "graph-copies"

    def __init__(self, copies: Sequence[Backend]) -> None:
        self.copies = list(copies)
        self._free: queue.SimpleQueue[Backend] = queue.SimpleQueue()
        for backend in self.copies:
            self._free.put(backend)

    @classmethod
    def load(cls, *args: Any, **kwargs: Any) -> Backend:  # pragma: no cover - built by wrap()
        raise NotImplementedError("GraphCopies are made by sized_sessions.wrap")

    def run(self, feed: Mapping[str, Array]) -> dict[str, Array]:
        backend = self._free.get()
        try:
            return backend.run(feed)
        finally:
            self._free.put(backend)

    @property
    def placement(self) -> Placement:
        placement = self.copies[0].placement
        return replace(placement, details={**placement.details, "copies": len(self.copies)})

    def close(self) -> None:
        for backend in self.copies:
            backend.close()


def changes_are_slow(backend: Backend, feed: Mapping[str, Array], batch_input: str) -> bool:
    """Whether a batch-size change costs this session much more than a call of the same size:
    ResNet-50 on the CUDA EP pays ~94 ms per change against 2.7 ms (its Conv kernels rebuild
    their cuDNN state), BERT-base nothing (docs/benchmarks.md). Measured on the loaded session:
    sizes 1 and 2 once each, then three changes against three repeats."""
    import time

    one = {name: value[:1] for name, value in feed.items()}
    two = {name: np.concatenate([value[:1], value[:1]]) for name, value in feed.items()}

    def timed(run: Mapping[str, Array]) -> float:
        started = time.perf_counter()
        backend.run(run)
        return time.perf_counter() - started

    backend.run(one)
    backend.run(two)
    # Every timed call changes the size (two, then one, two, one): the minimum of three changes
    # is what any change costs. (Starting with ``two`` again timed a repeat, whose speed hid the
    # changes' cost: on an H100 no sized sessions were made and ResNet-50 served 23 inf/s.)
    changed = min(timed(one if i % 2 == 0 else two) for i in range(3))
    steady = min(timed(one) for _ in range(3))
    return changed > 3 * steady + 0.005


def wrap(
    general: Backend,
    sizes: tuple[int, ...],
    batch_symbol: str,
    batch_input: str,
    load: Callable[[dict[str, int]], Backend],
    copies: int = 1,
) -> SizedSessions:
    """``general`` plus a session for each of ``sizes``, each loaded by ``load`` with the batch
    symbol fixed to its size; ``copies`` sessions of each size whose session replays a CUDA
    graph (``GraphCopies``). A session that fails to load closes the ones made before it."""
    sized: dict[int, Backend] = {}
    made: list[Backend] = []
    try:
        for size in sizes:
            same = [load({batch_symbol: size})]
            made.append(same[0])
            while getattr(same[0], "graph", None) is not None and len(same) < copies:
                same.append(load({batch_symbol: size}))
                made.append(same[-1])
            sized[size] = GraphCopies(same) if len(same) > 1 else same[0]
    except BaseException:
        for backend in made:
            backend.close()
        raise
    return SizedSessions(general, sized, batch_input)
