"""Notes about the machine that are worth reading once, not on every command.

``auto`` passing over a backend (a WebGPU plugin on a machine whose only adapter is a software
one, say) is true of the machine, not of one model: ``gpux build`` and ``gpux run`` print it the
first time, and record under ``$GPUX_HOME/notes/`` that it was shown for this host and this exact
text. A different reason (another adapter, another driver) is a new note. ``--json`` output keeps
``fallback_reason`` every time, and ``gpux doctor`` always explains the choice.
"""

from __future__ import annotations

import hashlib
import platform
from datetime import UTC, datetime

from gpux import env

ONCE = "(shown once for this machine; 'gpux doctor' and --json outputs keep it)"


def first_time(text: str) -> bool:
    """True, and recorded, the first time ``text`` is shown on this host; False afterwards.

    A store that cannot be written (read-only, full) shows the note every time."""
    key = hashlib.sha256(f"{platform.node()}\n{text}".encode()).hexdigest()[:32]
    path = env.home() / "notes" / key
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as record:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            record.write(f"{stamp} {platform.node()}\n{text}\n")
    except FileExistsError:
        return False
    except OSError:
        return True
    return True
