"""Valid GPUXfile forms and what each key changes in the built image, seen through the CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure


def project(folder: Path, gpuxfile: str, filename: str = "GPUXfile") -> Path:
    generated_models.linear(folder / "linear.onnx")
    (folder / filename).write_text(gpuxfile)
    return folder


def test_full_form_with_pinned_sha256_labels_and_description(gpux: BoundCLI, workdir: Path) -> None:
    folder = workdir / "full-form"
    generated_models.linear(folder / "linear.onnx")
    digest = hashlib.sha256((folder / "linear.onnx").read_bytes()).hexdigest()
    (folder / "labels.txt").write_text("north\n\neast\nsouth\n")
    (folder / "GPUXfile").write_text(
        f"""\
# comments are fine
name: compass
version: 2.5            # a YAML number, used as the tag text
description: Three scores from four features.
model:
  source: ./linear.onnx
  sha256: {digest.upper()}
  format: onnx
inputs:
  - name: x
    dtype: float32
    shape: [batch, 4]
    description: four features
outputs:
  - name: y
    shape: [batch, 3]
runtime:
  backend: cpu
  threads: 1
  graph_optimization: basic
serving:
  port: 9000
labels: labels.txt
"""
    )
    report = gpux.json("build", str(folder), "--json")
    assert report["image"] == "compass:2.5"
    assert report["placement"]["requested"] == "cpu"
    info = gpux.json("inspect", "compass:2.5", "--json")
    assert info["description"] == "Three scores from four features."
    assert info["labels"] == 3  # the blank line is not a label
    assert info["inputs"][0]["description"] == "four features"
    assert info["runtime"]["threads"] == 1
    assert info["runtime"]["graph_optimization"] == "basic"
    assert info["source"]["sha256"] == digest
    titles = {layer["title"] for layer in info["layers"]}
    assert "labels.txt" in titles
    result = gpux.json("run", "compass:2.5", "--input", "x=[[1, 2, 3, 4]]")
    assert result["outputs"]["y"]["data"] == [[7.0, 6.0, 8.5]]


@pytest.mark.parametrize("filename", ["gpux.yaml", "gpux.yml"])
def test_alternative_file_names(gpux: BoundCLI, workdir: Path, filename: str) -> None:
    tag = filename.replace(".", "-")
    folder = project(workdir / tag, f"name: {tag}\nmodel: ./linear.onnx\n", filename)
    assert gpux.ok("build", str(folder), "-q").stdout == f"{tag}:latest\n"


def test_gpuxfile_path_and_tag_option(gpux: BoundCLI, workdir: Path) -> None:
    folder = project(workdir / "by-path", "name: ignored\nmodel: ./linear.onnx\n", "custom.yaml")
    built = gpux.ok("build", str(folder / "custom.yaml"), "-t", "team/by-path:v1", "-q")
    assert built.stdout == "team/by-path:v1\n"
    assert "team/by-path:v1" in gpux.names()
    assert "ignored:latest" not in gpux.names()


def test_default_name_comes_from_the_folder(gpux: BoundCLI, workdir: Path) -> None:
    folder = project(workdir / "My_Folder.v2", "model: ./linear.onnx\n")
    assert gpux.ok("build", str(folder), "-q").stdout == "my-folder-v2:latest\n"


def test_inline_labels(gpux: BoundCLI, workdir: Path) -> None:
    folder = project(workdir / "inline", "name: inline\nmodel: ./linear.onnx\nlabels: [a, b, c]\n")
    gpux.ok("build", str(folder), "-q")
    assert gpux.json("inspect", "inline", "--json")["labels"] == 3


def test_declared_shape_narrows_what_run_accepts(gpux: BoundCLI, workdir: Path) -> None:
    folder = project(
        workdir / "pairs",
        "name: pairs\nmodel: ./linear.onnx\ninputs:\n  - name: x\n    shape: [2, 4]\n",
    )
    report = gpux.json("build", str(folder), "--json")
    assert report["smoke"]["input_shapes"] == {"x": [2, 4]}  # the smoke run used the fixed size
    ok = gpux.json("run", "pairs", "--input", "x=[[1, 2, 3, 4], [0, 0, 0, 0]]")
    assert ok["outputs"]["y"]["shape"] == [2, 3]
    refused = gpux("run", "pairs", "--input", "x=[[1, 2, 3, 4]]")
    assert_failure(refused, 6, "input 'x' dimension 0 must be 2 but is 1")


def test_example_drives_the_smoke_run_and_binds_symbols(gpux: BoundCLI, workdir: Path) -> None:
    folder = workdir / "example"
    generated_models.two_inputs(folder / "pair.onnx")
    (folder / "GPUXfile").write_text(
        "name: example\nmodel: ./pair.onnx\ninputs:\n  - name: a\n    example: [[1, 2, 3, 4, 5]]\n"
    )
    report = gpux.json("build", str(folder), "--json")
    # 'b' was generated with the sizes that a's example gave to 'batch' and 'seq'.
    assert report["smoke"]["input_shapes"] == {"a": [1, 5], "b": [1, 5]}
    assert report["smoke"]["output_shapes"] == {"sum": [1, 5], "mean": []}
    result = gpux.json("run", "example", "--input", "a=[[1, 2]]", "--input", "b=[[3, 4]]")
    assert result["outputs"]["sum"]["data"] == [[4, 6]]


def test_minimal_one_line_gpuxfile_reads_signature_from_model(
    gpux: BoundCLI, workdir: Path
) -> None:
    folder = project(workdir / "one-line", "model: ./linear.onnx\n")
    gpux.ok("build", str(folder), "-q")
    info = gpux.json("inspect", "one-line", "--json")
    assert info["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
    assert info["outputs"] == [{"name": "y", "dtype": "float32", "shape": ["batch", 3]}]
    x = np.ones((5, 4), dtype=np.float32)
    result = gpux.json("run", "one-line", "--input", f"x={x.tolist()}")
    np.testing.assert_allclose(
        result["outputs"]["y"]["data"],
        x @ generated_models.LINEAR_W + generated_models.LINEAR_B,
        rtol=1e-6,
    )
