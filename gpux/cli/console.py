"""Shared console helpers. Rich is imported only when a command draws something."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from functools import cache
from typing import Any


@cache
def stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


@cache
def stdout() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def print_json(value: Any) -> None:
    """Machine-readable output: plain JSON on stdout, never decorated.

    Objects are indented; lists without objects stay on one line, so shapes and small tensors
    read as ``[1, 3, 384]`` rather than a column of numbers.
    """
    sys.stdout.write(format_json(value) + "\n")
    sys.stdout.flush()


def format_json(value: Any, indent: int = 0) -> str:
    pad = "  " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [
            f"{pad}{json.dumps(str(k))}: {format_json(v, indent + 1)}" for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list | tuple) and any(
        isinstance(v, dict | list) and v and _has_dict(v) for v in value
    ):
        items = [pad + format_json(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(value, default=str, separators=(", ", ": "))


def _has_dict(value: Any) -> bool:
    if isinstance(value, dict):
        return True
    return isinstance(value, list | tuple) and any(_has_dict(v) for v in value)


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def since(timestamp: str | None) -> str:
    if not timestamp:
        return "-"
    try:
        then = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    seconds = (datetime.now(UTC) - then).total_seconds()
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = int(seconds // length)
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"


def code_note(name: str, files: list[str]) -> str:
    """What ``pull`` and ``load`` say of an image that holds handler code."""
    from rich.markup import escape

    shown = ", ".join(files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
    return (
        f"[yellow]note:[/yellow] {escape(name)} holds Python code ({escape(shown)}); gpux run "
        f"and serve run it only with --trust-code. Read it first: gpux inspect {escape(name)} "
        "--code"
    )


def transfer_summary(verb: str, report: Any) -> str:
    """One line for a push or pull: what moved and what the other side already had."""
    moved = (
        f"{report.transferred} blob(s), {human_size(report.transferred_bytes)}"
        if report.transferred
        else "nothing"
    )
    return f"{verb} {moved}; {report.skipped} already there"
