"""Parse YAML while remembering where every key and value sits, for ``file:line:column`` errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


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


def _position(mark: yaml.Mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


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
    """Parse one YAML document. Raises ``yaml.YAMLError`` or :class:`DuplicateKeyError`."""
    loader = yaml.SafeLoader(text)
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
