"""A process that uses GPUX contacts no host its user did not name: ONNX Runtime 1.32's usage
telemetry (1DS, sent from a native thread some seconds after the import) stays off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distribution.proxy_server import running_proxy

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_importing_gpux_turns_onnxruntime_telemetry_off(
    symbolic_model: Path, gpux_home: Path
) -> None:
    # Every request goes to a loopback proxy that refuses it and records it.
    with running_proxy({}) as proxy:
        env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
        env.update({k: proxy.url for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY")})
        load = f"model = gpux.load({str(symbolic_model)!r})"
        code = f"import time, gpux; {load}; model.run({{'x': [[1.0] * 4]}}); time.sleep(12)"
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    assert proxy.tunnels == [] and proxy.requests == []
