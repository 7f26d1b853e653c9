"""Regressions for problems found while documenting the CLI (each test names the problem)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure


def _identity(path: Path, dtype: int, name: str = "x") -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], ["y"])],
        "identity",
        [helper.make_tensor_value_info(name, dtype, ["n"])],
        [helper.make_tensor_value_info("y", dtype, ["n"])],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=generated_models.OPSET), str(path))
    return path


def test_version_keeps_the_text_as_written(gpux: BoundCLI, workdir: Path) -> None:
    project = workdir / "versioned"
    generated_models.linear(project / "linear.onnx")
    (project / "GPUXfile").write_text("name: versioned\nversion: 1.10\nmodel: ./linear.onnx\n")
    assert gpux.json("build", str(project), "--json")["image"] == "versioned:1.10"


def test_integers_outside_the_input_type_are_refused_not_wrapped(
    gpux: BoundCLI, workdir: Path
) -> None:
    model = _identity(workdir / "u8" / "u8.onnx", TensorProto.UINT8)
    result = gpux("run", str(model), "--input", "[300, -1, 7]")
    assert_failure(result, 6, "input 'x' holds", "outside the range of uint8 [0, 255]")
    ok = gpux.json("run", str(model), "--input", "[255, 0, 7]")
    assert ok["outputs"]["y"]["data"] == [255, 0, 7]


def test_floats_too_large_for_float32_are_refused(gpux: BoundCLI, workdir: Path) -> None:
    model = _identity(workdir / "f32" / "f32.onnx", TensorProto.FLOAT)
    result = gpux("run", str(model), "--input", "[1e39]")
    assert_failure(result, 6, "too large for float32")
    assert "RuntimeWarning" not in result.stderr


def test_a_plain_mapping_may_name_an_input_called_inputs(gpux: BoundCLI, workdir: Path) -> None:
    model = _identity(workdir / "named" / "named.onnx", TensorProto.FLOAT, name="inputs")
    result = gpux.json("run", str(model), stdin=json.dumps({"inputs": [1.5, 2.5]}))
    assert result["outputs"]["y"]["data"] == [1.5, 2.5]


def test_models_with_external_weights_are_refused_at_build(gpux: BoundCLI, workdir: Path) -> None:
    project = workdir / "external"
    model = onnx.load(str(generated_models.linear(workdir / "tmp" / "linear.onnx")))
    project.mkdir(parents=True)
    onnx.save(
        model,
        str(project / "ext.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.onnx.data",
        size_threshold=0,
    )
    (project / "GPUXfile").write_text("model: ./ext.onnx\n")
    assert_failure(
        gpux("build", str(project)), 5, "keeps its weights in a separate file", "ext.onnx.data"
    )


def test_a_missing_onnx_file_is_reported_as_a_model_file(gpux: BoundCLI) -> None:
    assert_failure(
        gpux("run", "nothere.onnx", "--input", "1"), 4, "model file 'nothere.onnx' not found"
    )


def test_init_option_errors_are_usage_errors_and_create_nothing(
    gpux: BoundCLI, workdir: Path
) -> None:
    target = workdir / "never-created"
    assert_failure(gpux("init", str(target), "--name", "BadName"), 2, "--name 'BadName'")
    assert not target.exists()


def test_init_quotes_model_paths_yaml_would_misread(gpux: BoundCLI, workdir: Path) -> None:
    target = workdir / "odd-path"
    gpux.ok("init", str(target), "--model", "./my: model.onnx")
    generated_models.linear(target / "my: model.onnx")
    assert gpux.json("build", str(target), "--json")["image"] == "odd-path:1.0"


def test_an_unknown_output_type_fails_before_the_model_runs(gpux: BoundCLI, workdir: Path) -> None:
    model = generated_models.linear(workdir / "early" / "linear.onnx")
    target = workdir / "early" / "new-folder" / "out.txt"
    result = gpux("run", str(model), "--input", "[[1, 2, 3, 4]]", "--output", str(target))
    assert_failure(result, 2, "unknown file type '.txt'")
    assert not target.parent.exists()


def test_numeric_labels_are_read_as_text(gpux: BoundCLI, workdir: Path) -> None:
    project = workdir / "labelled"
    generated_models.linear(project / "linear.onnx")
    (project / "GPUXfile").write_text("model: ./linear.onnx\nlabels: [0, 90, 180]\n")
    info = gpux.json("build", str(project), "--json")
    assert info["image"] == "labelled:latest"
    image = gpux.json("inspect", "labelled", "--json")
    assert image["labels"] == 3
    assert any(layer["title"] == "labels.txt" for layer in image["layers"])


def test_a_folder_named_like_the_image_is_suggested(gpux: BoundCLI, workdir: Path) -> None:
    project = workdir / "folder-only"
    generated_models.linear(project / "linear.onnx")
    (project / "GPUXfile").write_text("model: ./linear.onnx\n")
    result = gpux("run", "folder-only", "--input", "[[1, 2, 3, 4]]", cwd=workdir)
    assert_failure(result, 4, "image 'folder-only' not found", "./folder-only")


def test_dtype_aliases_suggest_the_gpux_name(gpux: BoundCLI, workdir: Path) -> None:
    project = workdir / "alias"
    generated_models.linear(project / "linear.onnx")
    (project / "GPUXfile").write_text(
        "model: ./linear.onnx\ninputs:\n  - name: x\n    dtype: float\n"
    )
    assert_failure(gpux("build", str(project)), 3, "did you mean 'float32'?")


def test_npy_round_trip_matches_numpy(gpux: BoundCLI, workdir: Path) -> None:
    model = generated_models.linear(workdir / "npy" / "linear.onnx")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.save(workdir / "npy" / "x.npy", x)
    out = workdir / "npy" / "y.npy"
    gpux.ok("run", str(model), "--input", f"@{workdir / 'npy' / 'x.npy'}", "--output", str(out))
    expected = x @ generated_models.LINEAR_W + generated_models.LINEAR_B
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-6)


def test_the_name_asked_for_is_the_name_reported(gpux: BoundCLI, workdir: Path) -> None:
    project = workdir / "twice"
    generated_models.linear(project / "linear.onnx")
    (project / "GPUXfile").write_text("model: ./linear.onnx\n")
    gpux.ok("build", str(project), "-t", "zeta:1")
    gpux.ok("tag", "zeta:1", "alpha:1")
    result = gpux.json("run", "zeta:1", "--input", "[[1, 2, 3, 4]]")
    assert result["model"] == "zeta:1"
    assert gpux.json("inspect", "zeta:1", "--json")["name"] == "zeta:1"


def test_a_wrapped_request_works_for_an_input_named_inputs(gpux: BoundCLI, workdir: Path) -> None:
    model = _identity(workdir / "wrapped" / "wrapped.onnx", TensorProto.FLOAT, name="inputs")
    request = json.dumps({"inputs": {"inputs": [1.5]}})
    assert gpux.json("run", str(model), stdin=request)["outputs"]["y"]["data"] == [1.5]


def test_integers_beyond_64_bits_are_a_range_error(gpux: BoundCLI, workdir: Path) -> None:
    model = _identity(workdir / "huge" / "u8.onnx", TensorProto.UINT8)
    result = gpux("run", str(model), "--input", "[100000000000000000000]")
    assert_failure(result, 6, "too large for any uint8 value")


def test_inspect_of_a_missing_onnx_file_names_the_model_file(gpux: BoundCLI) -> None:
    assert_failure(gpux("inspect", "nothere.onnx"), 4, "model file 'nothere.onnx' not found")


def test_numeric_tensor_names_are_read_as_text(gpux: BoundCLI, workdir: Path) -> None:
    """Exporters name tensors '0' or '461'; YAML reads `from: 461` as an int."""
    project = workdir / "numeric-names"
    project.mkdir()
    graph = helper.make_graph(
        [helper.make_node("Identity", ["0"], ["461"])],
        "numeric",
        [helper.make_tensor_value_info("0", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("461", TensorProto.FLOAT, ["n", 3])],
    )
    model = helper.make_model(graph, opset_imports=generated_models.OPSET)
    onnx.save(model, str(project / "numeric.onnx"))
    (project / "GPUXfile").write_text(
        "model: ./numeric.onnx\n"
        "inputs:\n  - name: 0\n"
        "outputs:\n  - name: 461\n"
        "postprocess:\n  - name: best\n    from: 461\n    steps: [argmax]\n"
    )
    gpux.ok("build", str(project))
    result = gpux.json("run", "numeric-names", "--input", "0=[[0.1, 0.7, 0.2]]")
    assert result["result"]["best"]["index"] == 1
