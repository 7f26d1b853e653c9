"""The ``gpux`` package: an honest ``__all__`` and a light ``import gpux``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gpux

REPO = Path(__file__).resolve().parents[2]


def test_every_name_in___all___resolves() -> None:
    assert gpux.__all__
    for name in gpux.__all__:
        assert getattr(gpux, name) is not None, name
    assert isinstance(gpux.__version__, str)
    assert issubclass(gpux.GPUXError, Exception)
    assert callable(gpux.load) and callable(gpux.build)
    from gpux.api import Model

    assert gpux.Model is Model


def test_star_import_gives_exactly___all__() -> None:
    namespace: dict[str, object] = {}
    exec("from gpux import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(gpux.__all__)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gpux.nope  # noqa: B018


def test_import_gpux_does_not_import_heavy_dependencies() -> None:
    code = (
        "import json, sys; import gpux; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'onnxruntime', 'onnx', 'numpy', 'gpux'})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out)
    assert "gpux" in loaded
    assert not [m for m in loaded if m.split(".")[0] in {"onnxruntime", "onnx"}], loaded
    # Touching the API imports it lazily, still without onnxruntime until a model is loaded.
    code = code.replace("import gpux;", "import gpux; gpux.load;")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out)
    assert "gpux.api" in loaded
    assert "onnxruntime" not in loaded
