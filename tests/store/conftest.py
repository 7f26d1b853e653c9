"""Fixtures for the store tests: a Store on the isolated GPUX_HOME, projects, a big model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gpux.store import Store
from tests import generated_models
from tests.store.builds import BIG_MEGABYTES


@pytest.fixture
def store(gpux_home: Path) -> Store:
    return Store(gpux_home)


@pytest.fixture(scope="session")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = x + C with a large constant (BIG_MEGABYTES), generated once per session."""
    folder = tmp_path_factory.mktemp("big-model")
    return generated_models.big(folder / "big.onnx", megabytes=BIG_MEGABYTES)


@pytest.fixture
def linear_project(add_project: Callable[..., Path], symbolic_model: Path) -> Path:
    return add_project("alpha", symbolic_model)


@pytest.fixture
def two_inputs_project(add_project: Callable[..., Path], tmp_path: Path) -> Path:
    model = generated_models.two_inputs(tmp_path / "models" / "two.onnx")
    return add_project("beta", model)
