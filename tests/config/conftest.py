"""Fixtures for GPUXfile scenarios: a store and a work folder per test module, so that each build of a
real model happens once per module while tests stay independent of other modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.expect import BoundCLI


@pytest.fixture(scope="module")
def gpux(tmp_path_factory: pytest.TempPathFactory) -> BoundCLI:
    """The CLI against an empty GPUX_HOME shared by the tests of one module."""
    return BoundCLI(tmp_path_factory.mktemp("gpux-home"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the projects and files of one module."""
    return tmp_path_factory.mktemp("work")
