"""Parse YAML while remembering where every key and value sits, for ``file:line:column`` errors.

Bounded: a GPUXfile is a few dozen settings, so a document nested deeper than
:data:`MAX_DEPTH` levels or holding more than :data:`MAX_VALUES` values is refused while it is
read, before anything walks it. Aliases count as the values they repeat: nine nested aliases of
ten items each ("billion laughs") fit in 600 bytes and expand to a billion values, which the
position index, pydantic and ``model_dump`` would each walk. Anchors and aliases stay allowed
(they repeat settings, e.g. one ``steps`` list for several outputs) within those bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]

MAX_DEPTH = 64
"""Deepest nesting of lists and mappings, aliases expanded (a GPUXfile needs under 10)."""
MAX_VALUES = 100_000
"""Most values (scalars, lists, mappings) in a document, aliases expanded: a 1 MiB list of
numbers holds 500,000, which took 12 s and 500 MB to index and validate."""


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class PositionedDocument:
    data: Any
    values: dict[Path, Position]  # where each value starts
    keys: dict[Path, Position]  # where each mapping key starts
    scalars: dict[Path, str] = field(default_factory=dict)  # scalar text exactly as written

    def position_of(self, path: Path, *, key: bool = False) -> Position | None:
        """The closest known position: the path itself, else its nearest ancestor."""
        table = self.keys if key else self.values
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if prefix in table:
                return table[prefix]
            if prefix in self.values:
                return self.values[prefix]
        return None


class DuplicateKeyError(ValueError):
    def __init__(self, key: str, position: Position) -> None:
        super().__init__(key)
        self.key = key
        self.position = position


class LimitError(ValueError):
    """The document passes :data:`MAX_DEPTH` or :data:`MAX_VALUES`, or an alias repeats a value
    that contains it; ``problem`` says which, ``position`` where."""

    def __init__(self, problem: str, hint: str, position: Position) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint
        self.position = position


def _position(mark: yaml.Mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


def _event_position(event: yaml.Event) -> Position:
    # PyYAML's parser sets a start mark on every event; the stubs allow None.
    mark = event.start_mark
    return Position(1, 1) if mark is None else Position(mark.line + 1, mark.column + 1)


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer counts values and depth as they arrive, aliases as the size
    and depth of what they repeat (measured when their anchor closed), and stops at a bound.
    The composer recurses once per level, so the depth bound also keeps it off Python's
    recursion limit (10,000 nested '[' used to end in RecursionError)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._values = 0
        self._depth = 0
        self._deepest = 0  # deepest level reached inside the anchored value being composed
        self._anchored: dict[str, tuple[int, int]] = {}  # anchor -> (values, levels) it holds
        self._open: set[str] = set()  # anchors whose value is being composed

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        where = _event_position(event)
        if isinstance(event, yaml.AliasEvent):
            name = str(event.anchor)
            if name in self._open:
                raise LimitError(
                    f"alias *{name} is used inside the value it names",
                    "an alias repeats a value that is complete: move it after that value",
                    where,
                )
            values, levels = self._anchored.get(name, (1, 1))  # undefined: yaml says so
            self._count(values, where, name)
            self._reach(self._depth + levels, where)
            return super().compose_node(parent, index)
        self._depth += 1
        self._count(1, where, None)
        self._reach(self._depth, where)
        anchor = getattr(event, "anchor", None)
        before, outer_deepest = self._values - 1, self._deepest
        if anchor is not None:
            self._open.add(anchor)
            self._deepest = self._depth
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if anchor is not None:
            self._open.discard(anchor)
            levels = self._deepest - self._depth
            self._anchored[anchor] = (self._values - before, levels)
            self._deepest = max(outer_deepest, self._deepest)
        return node

    def _count(self, values: int, where: Position, alias: str | None) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            expanded = f" once alias *{alias} is expanded" if alias else ""
            raise LimitError(
                f"the document holds more than {MAX_VALUES:,} values{expanded}",
                "a GPUXfile is a few dozen settings: write repeated settings out instead of "
                "nesting aliases in aliases, and keep long label lists in a labels file",
                where,
            )

    def _reach(self, depth: int, where: Position) -> None:
        self._deepest = max(self._deepest, depth)
        if depth > MAX_DEPTH:
            raise LimitError(
                f"values are nested more than {MAX_DEPTH} levels deep",
                "a GPUXfile needs a few levels; check the brackets and the indentation",
                where,
            )


def _index(node: yaml.Node, path: Path, doc: PositionedDocument) -> None:
    doc.values[path] = _position(node.start_mark)
    if isinstance(node, yaml.ScalarNode):
        doc.scalars[path] = str(node.value)
    elif isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*path, key)
            if child in doc.keys:
                raise DuplicateKeyError(key, _position(key_node.start_mark))
            doc.keys[child] = _position(key_node.start_mark)
            _index(value_node, child, doc)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), doc)


def parse_yaml(text: str) -> PositionedDocument:
    """Parse one YAML document. Raises ``yaml.YAMLError``, :class:`DuplicateKeyError` or
    :class:`LimitError`."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        doc = PositionedDocument(data=None, values={}, keys={})
        if node is None:
            return doc
        _index(node, (), doc)
        doc.data = loader.construct_document(node)
        return doc
    finally:
        loader.dispose()
