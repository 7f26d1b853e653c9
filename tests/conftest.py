"""Shared fixtures: an isolated GPUX_HOME, the real CLI as a subprocess, real and generated models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import generated_models
from tools import zoo

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        return json.loads(self.stdout)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


CLI = Callable[..., Result]


@pytest.fixture
def gpux_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty store for this test (also used by in-process API calls)."""
    home = tmp_path / "gpux-home"
    monkeypatch.setenv("GPUX_HOME", str(home))
    return home


def run_cli(
    *args: str,
    home: Path,
    cwd: Path | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> Result:
    """Run the real ``gpux`` entry point in a subprocess."""
    inherited = {k: v for k, v in os.environ.items() if k != "GPUX_DEBUG"}
    full_env = {
        **inherited,
        "GPUX_HOME": str(home),
        "GPUX_NO_PROGRESS": "1",
        "COLUMNS": "200",
        **(env or {}),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "gpux.cli.main", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture
def cli(gpux_home: Path) -> CLI:
    """``cli("build", ".", cwd=project)`` -> Result(code, stdout, stderr)."""

    def call(*args: str, **kwargs: object) -> Result:
        return run_cli(*args, home=gpux_home, **kwargs)  # type: ignore[arg-type]

    return call


@pytest.fixture(scope="session")
def zoo_file() -> Callable[[str], Path]:
    """Path of a real model or sample from shared/ZOO.md (fetched once, sha256-checked, cached)."""
    return zoo.fetch


def make_project(folder: Path, model: Path, gpuxfile: str | None = None) -> Path:
    """A project folder with ``model`` copied in and a GPUXfile (default: the minimal form)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / model.name
    if not target.exists():
        try:
            os.link(model, target)
        except OSError:
            target.write_bytes(model.read_bytes())
    (folder / "GPUXfile").write_text(gpuxfile or f"model: ./{model.name}\n")
    return folder


@pytest.fixture
def add_project(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``add_project("name", model_path, gpuxfile_text=None)`` -> project folder."""

    def make(name: str, model: Path, gpuxfile: str | None = None) -> Path:
        return make_project(tmp_path / "projects" / name, model, gpuxfile)

    yield make


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama as an onnxruntime-genai folder (0.7 MB, made in well under a second
    by tools/make_tiny_llm.py; the same bytes every time). Treat it as read-only."""
    from tools.make_tiny_llm import make_tiny_llm

    return make_tiny_llm(tmp_path_factory.mktemp("generative") / "tiny-llm")


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Whisper (1 encoder, 2 decoder layers) as an onnxruntime-genai folder (0.6 MB,
    made in under a second by tools/make_tiny_whisper.py; the same bytes every time). Read-only."""
    from tools.make_tiny_whisper import make_tiny_whisper

    return make_tiny_whisper(tmp_path_factory.mktemp("generative") / "tiny-whisper")


@pytest.fixture
def symbolic_model(tmp_path: Path) -> Path:
    """A generated model: y = x @ W + b with x [batch, 4] float32 -> y [batch, 3]."""
    return generated_models.linear(tmp_path / "models" / "linear.onnx")
