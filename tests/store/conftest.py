"""Fixtures for the store tests: a Store on the isolated GPUX_HOME, built images, a big model."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gpux.store import Store
from tests import generated_models

REPO = Path(__file__).resolve().parents[2]

# Large enough that writing the model blob takes a while (so a build can be killed mid-write).
BIG_MEGABYTES = 64


@pytest.fixture
def store(gpux_home: Path) -> Store:
    return Store(gpux_home)


@pytest.fixture(scope="session")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = x + C with a 64 MiB constant, generated once per session."""
    folder = tmp_path_factory.mktemp("big-model")
    return generated_models.big(folder / "big.onnx", megabytes=BIG_MEGABYTES)


@pytest.fixture
def linear_project(add_project: Callable[..., Path], symbolic_model: Path) -> Path:
    return add_project("alpha", symbolic_model)


@pytest.fixture
def two_inputs_project(add_project: Callable[..., Path], tmp_path: Path) -> Path:
    model = generated_models.two_inputs(tmp_path / "models" / "two.onnx")
    return add_project("beta", model)


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
