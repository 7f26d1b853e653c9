"""The tuning choices on disk: which candidate lowering won, per adapter and problem.

One small JSON file under GPUX's home (``$GPUX_HOME/cache/wgpu-tuning.json``)::

    {"format": "gpux-wgpu-tuning", "version": 1, "choices": {"<adapter>/<problem>": 3, ...}}

``<adapter>`` hashes what identifies the adapter and its compiler (vendor, device, driver,
backend, wgpu's version), ``<problem>`` every candidate's shaders and grids, so a change to
either names a new entry instead of reusing a stale one. The file is outside input (another
version of GPUX, another user, a disk that filled up): anything that does not read as this
format is ignored, and the next save replaces it. Saves merge with what the file holds then
(another process may have added choices), keep the newest MAX_CHOICES, and write a temporary
file that replaces the old one, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from gpux import env

FORMAT = "gpux-wgpu-tuning"
VERSION = 1
MAX_CHOICES = 2048
# A file of MAX_CHOICES entries is ~200 KB; one much larger is not ours.
MAX_FILE_BYTES = 1 << 20
# A winner is an index into a lowering's candidates (kernels offer at most a handful).
MAX_INDEX = 64


def default_path() -> Path:
    return env.home() / "cache" / "wgpu-tuning.json"


def read_choices(path: Path) -> dict[str, int]:
    """The choices in ``path``; empty when it is missing, unreadable, too large or not this
    format. Entries of the wrong type are dropped one by one."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return {}
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
        return {}
    if (
        not isinstance(document, dict)
        or document.get("format") != FORMAT
        or document.get("version") != VERSION
        or not isinstance(document.get("choices"), dict)
    ):
        return {}
    return {
        key: value
        for key, value in document["choices"].items()
        if isinstance(key, str)
        and type(value) is int  # bool is an int too
        and 0 <= value < MAX_INDEX
    }


def save_choices(path: Path, new: Mapping[str, int]) -> bool:
    """Add ``new`` to ``path``'s choices (newest last, MAX_CHOICES kept); False when the file
    could not be written (a read-only home): the choices then hold for this process only."""
    merged = read_choices(path)
    for key, value in new.items():
        merged.pop(key, None)  # re-inserted last: the newest survive the bound
        merged[key] = value
    kept = dict(list(merged.items())[-MAX_CHOICES:])
    document = {"format": FORMAT, "version": VERSION, "choices": kept}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".wgpu-tuning-", suffix=".tmp", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(document, file, separators=(",", ":"))
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return False
    return True
