"""Draw build progress with Rich: a spinner per running step, a line with timing per step done."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gpux import env
from gpux.builder.progress import Reporter, Step


class RichReporter(Reporter):
    def __init__(self, quiet: bool = False) -> None:
        super().__init__()
        from gpux.cli.console import stderr

        self.console = stderr()
        self.quiet = quiet
        self._status: Any = None
        self._live = self.console.is_terminal and not env.no_progress() and not quiet

    def on_start(self, step: Step) -> None:
        if self._live:
            self._status = self.console.status(f"{step.title}...")
            self._status.start()

    def on_finish(self, step: Step) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        if self.quiet:
            return
        mark = "[dim]-[/dim]" if step.skipped else "[green]✓[/green]"
        timing = "" if step.skipped else f"{step.seconds:6.2f}s"
        self.console.print(f" {mark} {step.title:<26} {timing:>8}  [dim]{step.detail}[/dim]")

    def on_warning_once(self, message: str, key: str) -> None:
        from gpux import notes

        if notes.first_time(key):
            self.on_warning(f"{message} {notes.ONCE}")

    def on_warning(self, message: str) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        self.console.print(f"[yellow]warning:[/yellow] {message}")

    def transfer(self, done: int, total: int | None) -> None:
        if self._status is not None:
            text = f"{done / 1e6:.1f} MB" + (f" / {total / 1e6:.1f} MB" if total else "")
            self._status.update(f"downloading {text}")


class TransferBar:
    """A byte-counting progress bar (``transfer_bar``); safe to call from several threads."""

    def __init__(self, bar: Any, task: Any) -> None:
        self._bar = bar
        self._task = task

    def set_total(self, total: int) -> None:
        self._bar.update(self._task, total=total)

    def advance(self, size: int) -> None:
        self._bar.advance(self._task, size)


@contextmanager
def transfer_bar(
    what: str, total: int | None = None, minimum: int = 0
) -> Iterator[TransferBar | None]:
    """A transfer bar (bytes, speed, time left) on a terminal; None when there is no terminal,
    progress is turned off (GPUX_NO_PROGRESS), or a known ``total`` is under ``minimum``."""
    from gpux.cli.console import stderr

    console = stderr()
    small = minimum and total is not None and total < minimum
    if not console.is_terminal or env.no_progress() or small or (minimum and total is None):
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with bar:
        yield TransferBar(bar, bar.add_task(what, total=total))
