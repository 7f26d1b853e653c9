"""``gpux.bench`` as a package: an honest ``__all__``, and a command line that stays light
(``gpux --help`` must not pay for numpy because ``bench`` is registered)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gpux.bench

REPO = Path(__file__).resolve().parents[2]


def test_every_name_in___all___resolves() -> None:
    for name in gpux.bench.__all__:
        assert getattr(gpux.bench, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from gpux.bench import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(gpux.bench.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gpux.bench.nope  # noqa: B018


def test_the_command_line_does_not_import_the_measuring_code() -> None:
    code = (
        "import json, sys; import gpux.cli.main; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'numpy', 'onnxruntime', 'matplotlib', 'rich'} or m.startswith('gpux.bench'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == ["gpux.bench", "gpux.bench.observer"]
