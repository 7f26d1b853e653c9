"""How much CPU the rest of the machine used while a benchmark step ran (Linux /proc).

On a shared machine a server's figures mean little without this: the 2-core VM of
docs/benchmarks.md runs other people's test suites at the same time. ``OthersMeter`` counts
every CPU tick of the machine and subtracts the ticks of this process and its descendants
(the servers it started, their workers), so what remains is everyone else.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def busy_ticks() -> int:
    """Ticks the machine's CPUs spent on anything but idling or waiting for I/O."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal


def _processes() -> dict[int, list[str]]:
    """Every live process's /proc/<pid>/stat fields after its name (field 3 on)."""
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (
                    Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                )
            except OSError:  # gone meanwhile
                continue
    return found


def tree_pids(root: int, processes: dict[int, list[str]] | None = None) -> list[int]:
    """``root`` and every live descendant."""
    processes = _processes() if processes is None else processes
    parents = {pid: int(fields[1]) for pid, fields in processes.items()}
    found = []
    for pid in parents:
        ancestor = pid
        while ancestor not in (root, 0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor == root:
            found.append(pid)
    return sorted(found)


def tree_ticks(root: int) -> int:
    """User + system ticks of ``root`` and every live descendant."""
    processes = _processes()
    return sum(
        int(processes[pid][11]) + int(processes[pid][12]) for pid in tree_pids(root, processes)
    )


class OthersMeter:
    """CPU used by everything outside this process tree between ``start`` and ``stop``, in
    cores (1.0 = one core busy all the time). Children that ended meanwhile (the load
    generator's processes, perf_analyzer) are ours too: their time is read from
    ``RUSAGE_CHILDREN`` once they have been waited for, as they no longer are in the tree."""

    def __init__(self) -> None:
        self.root = os.getpid()
        self.started = 0.0
        self.busy = self.ours = 0
        self.reaped = 0.0
        self.ours_s = 0.0  # CPU seconds of this tree between start and stop

    def start(self) -> None:
        self.started, self.busy, self.ours = time.monotonic(), busy_ticks(), tree_ticks(self.root)
        self.reaped = _reaped_seconds()

    def stop(self) -> float:
        wall = time.monotonic() - self.started
        self.ours_s = (tree_ticks(self.root) - self.ours) / TICKS + _reaped_seconds() - self.reaped
        others = (busy_ticks() - self.busy) / TICKS - self.ours_s
        return max(0.0, others / wall)


def _reaped_seconds() -> float:
    """CPU seconds of this process's children that have ended and been waited for."""
    import resource

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def wait_until_quiet(limit_cores: float, timeout: float, window: float = 1.0) -> float:
    """Wait (at most ``timeout`` s) for a window in which others use under ``limit_cores``;
    returns what they used in the last window."""
    deadline = time.monotonic() + timeout
    meter = OthersMeter()
    while True:
        meter.start()
        time.sleep(window)
        used = meter.stop()
        if used < limit_cores or time.monotonic() >= deadline:
            return used
