"""The static memory plan: which device buffer holds each tensor, decided once at load.

Every value lives from the step that writes it to the last step that reads it. Values whose
lifetimes do not overlap share a buffer (greedy by size, largest first: the big activations
claim buffers early and small ones fill the gaps). A node that moves no data (``alias_input``)
gives its output its input's buffer, so the two live as one. Inputs, outputs and constants are
*pinned*: each has a buffer of its own, because the host writes or reads it outside the plan's
steps. Lifetimes are closed intervals, so a node never writes a buffer it also reads (WebGPU
refuses one buffer bound as both read-only and writable storage in one dispatch).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# Every binding is a whole number of 4-byte words (WGSL's scalars); a buffer is never empty.
ALIGNMENT = 4


def padded(size: int) -> int:
    return max(ALIGNMENT, -(-size // ALIGNMENT) * ALIGNMENT)


@dataclass(frozen=True)
class Step:
    """One node as the plan sees it: the device values it reads and writes, the scratch
    buffers (bytes) it needs for itself, and ``alias`` = (output, input) when its output is
    its input's buffer."""

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    scratch: tuple[int, ...] = ()
    alias: tuple[str, str] | None = None


@dataclass
class MemoryPlan:
    buffer_sizes: list[int]  # bytes, padded
    location: dict[str, int]  # value name -> buffer index
    scratch: dict[tuple[int, int], int] = field(default_factory=dict)  # (step, k) -> buffer
    pinned: set[int] = field(default_factory=set)  # buffers of inputs, outputs and constants

    @property
    def pooled_bytes(self) -> int:
        return sum(size for index, size in enumerate(self.buffer_sizes) if index not in self.pinned)

    @property
    def total_bytes(self) -> int:
        return sum(self.buffer_sizes)


class _Groups:
    """Union-find over value names: an alias and its source are one group."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, name: str) -> str:
        self.parent.setdefault(name, name)
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def union(self, first: str, second: str) -> None:
        self.parent[self.find(first)] = self.find(second)


def plan_memory(
    steps: Sequence[Step], sizes: Mapping[str, int], pinned: Iterable[str] = ()
) -> MemoryPlan:
    """Buffers for every value the steps touch. ``sizes``: bytes of each value (padded here);
    ``pinned``: values that get a buffer of their own (graph inputs, outputs, constants)."""
    groups = _Groups()
    for step in steps:
        for name in (*step.reads, *step.writes):
            groups.find(name)
        if step.alias is not None:
            groups.union(*step.alias)
    pinned_groups = {groups.find(name) for name in pinned if name in groups.parent}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    size: dict[str, int] = {}
    for index, step in enumerate(steps):
        for name in (*step.reads, *step.writes):
            root = groups.find(name)
            first.setdefault(root, index)
            last[root] = index
            size[root] = max(size.get(root, 0), padded(sizes[name]))
    # Items to place: (root or scratch key, first step, last step, bytes).
    items: list[tuple[str | tuple[int, int], int, int, int]] = [
        (root, first[root], last[root], size[root]) for root in first if root not in pinned_groups
    ]
    items += [
        ((index, k), index, index, padded(nbytes))
        for index, step in enumerate(steps)
        for k, nbytes in enumerate(step.scratch)
    ]
    buffer_sizes: list[int] = []
    location_of_root: dict[str, int] = {}
    scratch: dict[tuple[int, int], int] = {}
    for root in sorted(pinned_groups, key=lambda r: (first[r], r)):
        location_of_root[root] = len(buffer_sizes)
        buffer_sizes.append(size[root])
    pinned_buffers = set(range(len(buffer_sizes)))
    busy: dict[int, list[tuple[int, int]]] = {}
    # Largest first; ties by first use so that the plan is the same on every load.
    for key, start, end, nbytes in sorted(
        items, key=lambda item: (-item[3], item[1], str(item[0]))
    ):
        chosen = None
        for buffer, intervals in busy.items():
            if all(end < s or start > e for s, e in intervals):
                chosen = buffer
                break
        if chosen is None:
            chosen = len(buffer_sizes)
            buffer_sizes.append(nbytes)
            busy[chosen] = []
        busy[chosen].append((start, end))
        buffer_sizes[chosen] = max(buffer_sizes[chosen], nbytes)
        if isinstance(key, tuple):
            scratch[key] = chosen
        else:
            location_of_root[key] = chosen
    location = {name: location_of_root[groups.find(name)] for name in groups.parent}
    return MemoryPlan(buffer_sizes, location, scratch, pinned_buffers)
