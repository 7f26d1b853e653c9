"""Variant scenarios share the CLI tests' fixtures: a store and a work folder per module."""

from tests.cli.conftest import gpux, workdir

__all__ = ["gpux", "workdir"]
