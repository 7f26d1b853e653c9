"""The shell commands a Markdown document prints, in document order, as a reader would type them.

The rules the docs follow (README.md and docs/cli.md; docs/cli.md "Errors and exit codes" states
the marker for readers):

- a fenced block marked ``bash``, ``sh`` or ``shell`` holds commands only: every line that is not
  blank and not a comment is a command;
- a ``console`` block and an unmarked block are terminal transcripts: a line starting with
  ``$ `` is a command, the lines after it, up to the next ``$ ``, are what it printed. Unmarked
  blocks without a ``$ `` line (help texts, synopses, file trees) hold no command;
- other languages (yaml, json, python) are not shell and hold no command;
- a line ending in ``\\`` continues on the next one (a ``> `` prompt there is dropped);
- ``#`` at the start of a word, outside quotes, starts a comment;
- a comment that ends in ``exit N`` marks a command that fails on purpose with exit code N; a
  command without the marker must exit 0;
- several commands on one line joined by ``;`` run one after the other, each checked; the
  marker belongs to the last (whose status the shell reports).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SHELL_BLOCKS = {"bash", "sh", "shell"}
TRANSCRIPT_BLOCKS = {"console", ""}
FENCE = re.compile(r"^(\s*)(```+)\s*([\w+-]*)\s*$")
EXIT_MARKER = re.compile(r"\bexit (\d+)\s*$")


@dataclass(frozen=True)
class Command:
    doc: str  # the document's path relative to the repository, "docs/cli.md"
    line: int  # 1-based line of the command in the document
    text: str  # the command as the shell gets it: no prompt, no comment, continuations joined
    comment: str  # the comment after it, "" without one
    expected_exit: int  # 0, or the N of an "exit N" marker
    shown: str  # what the document shows it printing (transcripts only)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def split_comment(line: str) -> tuple[str, str]:
    """``'gpux run x   # note'`` -> (``'gpux run x'``, ``'note'``), quotes and escapes respected."""
    quote = ""
    escaped = False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index + 1 :].strip()
    return line.rstrip(), ""


def split_sequence(text: str) -> list[str]:
    """The commands of ``a; b; c`` (a ``;`` inside quotes stays), blanks dropped."""
    parts: list[str] = []
    quote = ""
    escaped = False
    start = 0
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ";":
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def _blocks(lines: list[str]) -> list[tuple[str, int, list[str]]]:
    """Fenced blocks as (language, line number of their first line, lines without the fence's
    indentation)."""
    blocks: list[tuple[str, int, list[str]]] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, ticks, language = opening.group(1), opening.group(2), opening.group(3).lower()
        body: list[str] = []
        index += 1
        first = index + 1
        while index < len(lines):
            closing = FENCE.match(lines[index])
            if closing and closing.group(2) == ticks and not closing.group(3):
                break
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        blocks.append((language, first, body))
        index += 1
    return blocks


def _block_commands(language: str, first: int, body: list[str]) -> list[tuple[int, str, list[str]]]:
    """(line, raw command with its comment, lines it printed) for one block."""
    transcript = language in TRANSCRIPT_BLOCKS
    found: list[tuple[int, str, list[str]]] = []
    index = 0
    while index < len(body):
        line = body[index]
        number = first + index
        index += 1
        if transcript:
            if not line.startswith("$ "):
                if found:
                    found[-1][2].append(line)
                continue
            line = line[2:]
        elif not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\") and index < len(body):
            following = body[index]
            index += 1
            following = following[2:] if following.startswith("> ") else following
            line = line[:-1] + " " + following.strip()
        found.append((number, line, []))
    return found


def commands(path: Path, root: Path) -> list[Command]:
    """Every command of the Markdown file ``path``, in order (``root``: the repository)."""
    doc = path.relative_to(root).as_posix()
    result: list[Command] = []
    for language, first, body in _blocks(path.read_text(encoding="utf-8").splitlines()):
        if language not in SHELL_BLOCKS | TRANSCRIPT_BLOCKS:
            continue
        for number, raw, printed in _block_commands(language, first, body):
            text, comment = split_comment(raw)
            marker = EXIT_MARKER.search(comment)
            sequence = split_sequence(text)
            for position, part in enumerate(sequence):
                last = position == len(sequence) - 1
                result.append(
                    Command(
                        doc=doc,
                        line=number,
                        text=part,
                        comment=comment if last else "",
                        expected_exit=int(marker.group(1)) if marker and last else 0,
                        shown="\n".join(printed).strip() if last else "",
                    )
                )
    return result
