"""Build progress: the builder reports steps; the CLI draws them, the Python API ignores them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Step:
    title: str
    seconds: float = 0.0
    detail: str = ""
    skipped: bool = False


@dataclass
class Reporter:
    """Collects step timings. Subclasses draw them (see ``gpux.cli.progress``)."""

    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Step]:
        step = Step(title)
        self.steps.append(step)
        self.on_start(step)
        started = time.perf_counter()
        try:
            yield step
        finally:
            step.seconds = time.perf_counter() - started
        self.on_finish(step)

    def skip(self, title: str, detail: str) -> None:
        step = Step(title, detail=detail, skipped=True)
        self.steps.append(step)
        self.on_finish(step)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.on_warning(message)

    def warn_once(self, message: str, key: str) -> None:
        """A warning about the machine (``key``: what makes it the same note): always in
        ``warnings``, shown by :meth:`on_warning_once`, which a terminal shows once."""
        self.warnings.append(message)
        self.on_warning_once(message, key)

    def transfer(self, done: int, total: int | None) -> None:
        """Bytes moved so far by the current step (downloads, blob writes)."""

    def on_start(self, step: Step) -> None:
        """A step began."""

    def on_finish(self, step: Step) -> None:
        """A step ended (or was skipped)."""

    def on_warning(self, message: str) -> None:
        """Something the user should know that does not stop the build."""

    def on_warning_once(self, message: str, key: str) -> None:
        """A warning about the machine; by default, like any warning."""
        self.on_warning(message)
