"""Every ``GPUX_*`` environment variable, read in one place.

Functions rather than constants so that tests (and long-lived processes) see changes.
"""

from __future__ import annotations

import os
from pathlib import Path


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def home() -> Path:
    """GPUX_HOME: the image store and caches. Default: the per-user data directory."""
    configured = os.environ.get("GPUX_HOME")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("gpux", appauthor=False))


def debug() -> bool:
    """GPUX_DEBUG=1: show tracebacks for every error (same as ``--debug``)."""
    return _flag("GPUX_DEBUG")


def no_progress() -> bool:
    """GPUX_NO_PROGRESS=1: never draw progress bars (logs and CI)."""
    return _flag("GPUX_NO_PROGRESS")


VARIABLES = {
    "GPUX_HOME": home.__doc__,
    "GPUX_DEBUG": debug.__doc__,
    "GPUX_NO_PROGRESS": no_progress.__doc__,
}
