"""What a benchmark says while it runs. The CLI draws it; the Python API ignores it.

Kept apart from the measuring code so that the CLI can subclass it without importing numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpux.bench.report import BenchResult, Skipped
    from gpux.bench.timing import Phase


class Observer:
    """No-op hooks, called in this order: ``loading``, then per batch size ``phase`` /
    ``phase_done`` (warm-up, then timed) and ``result``; ``skipped`` for a backend that failed."""

    def loading(self, backend: str | None) -> None:
        """A backend is about to load the model (None: the image's own backend)."""

    def phase(
        self, label: str, phase: Phase, runs: int | None, seconds: float | None, warmup: bool
    ) -> None:
        """A warm-up or timed phase starts; ``phase.done()`` counts its calls as they finish."""

    def phase_done(self) -> None:
        """The phase started last has ended."""

    def skipped(self, skip: Skipped) -> None:
        """A backend could not run the model."""

    def result(self, result: BenchResult) -> None:
        """One backend x batch size is measured."""
