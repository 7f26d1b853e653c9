"""The real ``gpux build`` as a subprocess, for tests that kill or race builds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Large enough that writing the model blob takes a while (so a build can be killed mid-write).
BIG_MEGABYTES = 64


def start_build(project: Path, home: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``gpux build PROJECT --no-optimize`` as a real subprocess on the store at ``home``."""
    env = {**os.environ, "GPUX_HOME": str(home), "GPUX_NO_PROGRESS": "1"}
    env.pop("GPUX_DEBUG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "gpux.cli.main", "build", str(project), "--no-optimize", *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
