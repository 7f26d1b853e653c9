"""What a benchmark measures: batch sizes, backends, callers, warm-up and the timed phase.

The parsers turn the command line's text (``1,8,32``, ``cpu,webgpu``, ``1s``) into settings and
raise :class:`~gpux.errors.UsageError` (exit 2) naming the bad part, so the Python API and the
CLI accept the same spellings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpux.errors import UsageError

DEFAULT_DURATION_S = 2.0
DEFAULT_WARMUP_S = 1.0


@dataclass
class BenchSettings:
    """One benchmark: every backend x every batch size, measured the same way."""

    batch_sizes: list[int] | None = None
    """Items per model call; None: the model's own (1, or the size of a fixed batch)."""
    backends: list[str | None] = field(default_factory=lambda: [None])
    """GPUX backend names; None: the image's ``runtime.backend``."""
    concurrency: int = 1
    """Callers on threads sharing one loaded model."""
    runs: int | None = None
    """Timed calls in all (shared by the callers); with ``duration_s`` too, whichever ends first."""
    duration_s: float | None = None
    """Length of the timed phase; the default when neither this nor ``runs`` is given."""
    warmup_runs: int | None = None
    """Untimed calls before the timed phase; None: ``warmup_s`` seconds of them (at least one)."""
    warmup_s: float = DEFAULT_WARMUP_S

    def __post_init__(self) -> None:
        if self.runs is None and self.duration_s is None:
            self.duration_s = DEFAULT_DURATION_S
        if self.runs is not None and self.runs < 1:
            raise UsageError(f"--runs must be at least 1, got {self.runs}", "e.g. --runs 100")
        if self.duration_s is not None and not self.duration_s > 0:
            raise UsageError(
                f"--duration must be more than 0 seconds, got {self.duration_s}",
                "e.g. --duration 5",
            )
        if self.concurrency < 1:
            raise UsageError(
                f"--concurrency must be at least 1, got {self.concurrency}", "e.g. --concurrency 4"
            )
        if self.batch_sizes is not None and (not self.batch_sizes or min(self.batch_sizes) < 1):
            raise UsageError("batch sizes must be positive integers", "e.g. --batch-size 1,8,32")
        if not self.backends:
            self.backends = [None]

    def to_json(self) -> dict[str, object]:
        return {
            "batch_sizes": self.batch_sizes,
            "backends": self.backends,
            "concurrency": self.concurrency,
            "runs": self.runs,
            "duration_s": self.duration_s,
            "warmup_runs": self.warmup_runs,
            "warmup_s": None if self.warmup_runs is not None else self.warmup_s,
        }


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]`` (order kept, repeats dropped)."""
    sizes: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise UsageError(
                f"--batch-size '{text}': '{part}' is not a positive integer",
                "give batch sizes separated by commas, e.g. --batch-size 1,8,32",
            )
        if int(part) not in sizes:
            sizes.append(int(part))
    return sizes


def parse_backends(text: str) -> list[str | None]:
    """``"cpu,webgpu"`` -> ``["cpu", "webgpu"]``, each a GPUX backend name."""
    from gpux.config.schema import Backend

    names = [b.value for b in Backend]
    backends: list[str | None] = []
    for part in (p.strip() for p in text.split(",")):
        if part not in names:
            import difflib

            close = difflib.get_close_matches(part, names, n=1)
            raise UsageError(
                f"unknown backend '{part}'" + (f"; did you mean '{close[0]}'?" if close else ""),
                f"give backends separated by commas, from: {', '.join(names)}",
            )
        if part not in backends:
            backends.append(part)
    return backends


def parse_warmup(text: str) -> tuple[int | None, float]:
    """``"20"`` -> 20 runs; ``"1s"``/``"0.5s"`` -> that many seconds. Returns (runs, seconds)."""
    value = text.strip().lower()
    try:
        if value.endswith("s"):
            seconds = float(value[:-1])
            if seconds < 0:
                raise ValueError
            return None, seconds
        runs = int(value)
        if runs < 0:
            raise ValueError
        return runs, 0.0
    except ValueError:
        raise UsageError(
            f"--warmup '{text}' is neither a number of runs nor seconds",
            "e.g. --warmup 20 (runs) or --warmup 1s (seconds); --warmup 0 skips it",
        ) from None
