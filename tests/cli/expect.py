"""Assertions and helpers shared by the CLI and GPUXfile tests: what a user sees on a failure,
and a CLI bound to one GPUX_HOME that a whole test module shares (so each build happens once)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import Result, run_cli


@dataclass
class BoundCLI:
    """``gpux`` as a subprocess against one store; module-scoped fixtures hand these out."""

    home: Path

    def __call__(self, *args: str, **kwargs: Any) -> Result:
        return run_cli(*args, home=self.home, **kwargs)

    def ok(self, *args: str, **kwargs: Any) -> Result:
        """Run and insist on exit 0, showing everything the command printed if it failed."""
        result = self(*args, **kwargs)
        assert result.code == 0, f"gpux {' '.join(args)} exited {result.code}:\n{result.output}"
        return result

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, **kwargs).stdout)

    def names(self) -> list[str]:
        return self.ok("images", "-q").stdout.split()


def assert_failure(result: Result, code: int, *fragments: str) -> None:
    """A deliberate error: its exit code, every fragment in the message, a hint, no traceback,
    and nothing on stdout (which scripts parse as JSON)."""
    shown = f"exit {result.code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.code == code, f"expected exit {code}; got {shown}"
    assert "error:" in result.stderr, shown
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} missing from the message; {shown}"
    assert "hint:" in result.stderr, f"no hint line; {shown}"
    assert "Traceback" not in result.output, shown
    assert "internal error" not in result.output, shown
    assert result.stdout.strip() == "", f"an error printed to stdout; {shown}"


def hint_of(result: Result) -> str:
    """The text after 'hint:' (the line that tells the user how to fix it)."""
    lines = [line for line in result.stderr.splitlines() if line.strip().startswith("hint:")]
    assert lines, result.stderr
    return lines[-1].split("hint:", 1)[1].strip()
