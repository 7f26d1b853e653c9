"""A model whose output holds the batch on its second axis: PP-OCR's real text recogniser with
its output turned sequence-first (``[time, batch, classes]``, as CTC recognisers exported from
PyTorch often are). Splitting it along axis 0 used to cut it into time steps:
``internal error: ValueError: zip() argument 2 is longer than argument 1`` in ``run``, a 500 in
``serve``. Now the axis is declared (or read from the inputs' batch symbol) and every path
splits along it; the batch-first original is the reference."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from PIL import Image

from tests.cli.expect import BoundCLI, assert_failure
from tests.conftest import make_project
from tests.serve.conftest import Server, start_server, stop_server

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

PREPROCESS = """
preprocess:
  - name: line
    image: {resize: [48, 320], normalize: "[-1,1]", color: BGR}
postprocess:
  - name: best
    steps: [{argmax: {axis: -1}}]
"""
# Text lines of page.png, (left, top, right, bottom), as rapidocr's detector finds them.
LINES = [(7, 12, 292, 33), (4, 47, 379, 66), (3, 63, 379, 86)]


def sequence_first(source: Path, target: Path, symbols: tuple[str, str]) -> Path:
    """The recogniser with a Transpose after its output: [batch, time, C] -> [time, batch, C],
    its two symbolic dimensions named ``symbols`` (time, batch)."""
    model = onnx.load(str(source))
    old = model.graph.output[0]
    classes = old.type.tensor_type.shape.dim[2].dim_value
    model.graph.node.append(
        onnx.helper.make_node("Transpose", [old.name], ["sequence_first"], perm=[1, 0, 2])
    )
    model.graph.output.remove(old)
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(
            "sequence_first", onnx.TensorProto.FLOAT, [symbols[0], symbols[1], classes]
        )
    )
    onnx.save(model, str(target))
    return target


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory, zoo_file: Callable[[str], Path]) -> list[Path]:
    page = Image.open(zoo_file("page.png")).convert("RGB")
    folder = tmp_path_factory.mktemp("lines")
    paths = []
    for number, box in enumerate(LINES):
        path = folder / f"line{number}.png"
        page.crop(box).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, zoo_file: Callable[[str], Path]) -> BoundCLI:
    """Three images: the original (reference), the sequence-first model with its batch axis
    declared, and one whose batch symbol is the input's (found without a declaration)."""
    root = tmp_path_factory.mktemp("batch-axis")
    home = BoundCLI(root / "home")
    rec = zoo_file("ppocr-rec")
    make_project(root / "original", rec, f"name: original\nmodel: ./{rec.name}\n{PREPROCESS}")
    home.ok("build", str(root / "original"), "-q")
    (root / "declared").mkdir()
    sequence_first(rec, root / "declared" / "model.onnx", ("time", "lines"))
    (root / "declared" / "GPUXfile").write_text(
        "name: declared\nmodel: ./model.onnx\n"
        "outputs:\n  - {name: sequence_first, batch_axis: 1}\n" + PREPROCESS
    )
    home.ok("build", str(root / "declared"), "-q")
    (root / "inferred").mkdir()
    batch = onnx.load(str(rec)).graph.input[0].type.tensor_type.shape.dim[0].dim_param
    sequence_first(rec, root / "inferred" / "model.onnx", ("time", batch))
    (root / "inferred" / "GPUXfile").write_text(
        "name: inferred\nmodel: ./model.onnx\n" + PREPROCESS
    )
    home.ok("build", str(root / "inferred"), "-q")
    (root / "undeclared").mkdir()
    sequence_first(rec, root / "undeclared" / "model.onnx", ("time", "lines"))
    (root / "undeclared" / "GPUXfile").write_text(
        "name: undeclared\nmodel: ./model.onnx\n" + PREPROCESS
    )
    return home


def best(cli: BoundCLI, image: str, lines: list[Path]) -> list[Any]:
    args = [arg for path in lines for arg in ("--input", str(path))]
    if len(lines) == 1:
        return [cli.json("run", image, *args)["result"]["best"]]
    import json

    result = cli.ok("run", image, *args)
    return [json.loads(line)["best"] for line in result.stdout.splitlines()]


def test_run_splits_a_sequence_first_output_along_its_batch_axis(
    cli: BoundCLI, lines: list[Path]
) -> None:
    expected = best(cli, "original", lines)  # one batch of three lines
    assert len(expected) == 3 and all(len(b) == 40 for b in expected)  # 320 / 8 time steps
    assert len({tuple(b) for b in expected}) == 3  # three different lines
    for image in ("declared", "inferred"):
        assert best(cli, image, lines) == expected
        assert best(cli, image, lines[:1]) == expected[:1]
    shown = cli.json("inspect", "inferred", "--json")
    output = next(o for o in shown["outputs"] if o["name"] == "sequence_first")
    assert output["batch_axis"] == 1


def test_an_undeclared_batch_axis_is_a_model_error_that_names_the_fix(cli: BoundCLI) -> None:
    """The build's smoke run feeds the pipeline a real item and finds it, before any run."""
    result = cli("build", str(cli.home.parent / "undeclared"))
    assert_failure(
        result,
        5,
        "output 'sequence_first' has shape [40, 1, 6625]",
        "its axis 0 should hold the 1 item",
        "batch_axis",
    )
    assert not any(name.startswith("undeclared") for name in cli.names())


def test_raw_tensors_of_each_item_follow_the_batch_axis(
    cli: BoundCLI, lines: list[Path], tmp_path: Path
) -> None:
    for image in ("original", "declared"):
        target = tmp_path / f"{image}.npz"
        cli.ok("run", image, "--input", str(lines[0]), "--input", str(lines[1]), "-o", str(target))
        with np.load(target) as saved:
            first = saved["0.softmax_11.tmp_0" if image == "original" else "0.sequence_first"]
            assert first.shape == (40, 6625)
            if image == "original":
                reference = first
    np.testing.assert_allclose(first, reference, atol=1e-6)


def test_bench_runs_it_with_batches(cli: BoundCLI, lines: list[Path]) -> None:
    report = cli.json(
        "bench", "declared", "-i", str(lines[0]), "-b", "1,2", "-n", "3", "--warmup", "0", "--json"
    )
    assert report  # the command ran and reported; its figures are not asserted


@pytest.fixture(scope="module")
def server(cli: BoundCLI) -> Iterator[Server]:
    served = start_server(
        cli, "declared", "--backend", "cpu", "--max-batch-size", "4", "--max-batch-delay-ms", "50"
    )
    yield served
    assert stop_server(served) == 0, served.log()


def test_serve_single_and_batched_requests_split_along_the_batch_axis(
    cli: BoundCLI, server: Server, lines: list[Path]
) -> None:
    expected = best(cli, "original", lines)
    url = server.url + "/v1/models/declared/predict"

    async def together() -> list[Any]:  # concurrent requests, joined by the batcher
        async with httpx.AsyncClient(timeout=60) as client:
            answers = await asyncio.gather(
                *(client.post(url, files={"line": path.read_bytes()}) for path in lines)
            )
        for answer in answers:
            assert answer.status_code == 200, answer.text
        return [answer.json()["result"]["best"] for answer in answers]

    assert asyncio.run(together()) == expected
    one = httpx.post(url, files={"line": lines[1].read_bytes()}, timeout=60)
    assert one.status_code == 200, one.text
    assert one.json()["result"]["best"] == expected[1]
    for shown, complete in (("1", False), ("full", True)):
        raw = httpx.post(url + f"?raw={shown}", files={"line": lines[1].read_bytes()}, timeout=60)
        tensor = raw.json()["result"]["outputs"]["sequence_first"]
        assert tensor["shape"] == [40, 6625] and ("data" in tensor) == complete
        if complete:
            assert np.asarray(tensor["data"]).argmax(axis=-1).tolist() == expected[1]
    metrics = httpx.get(server.url + "/metrics", timeout=60).text
    single = _sample(metrics, 'gpux_batch_size_bucket{le="1.0",model="declared"}')
    calls = _sample(metrics, 'gpux_batch_size_count{model="declared"}')
    assert calls > single, metrics  # at least one model call ran several items at once


def _sample(metrics: str, name: str) -> float:
    line = next(line for line in metrics.splitlines() if line.startswith(name + " "))
    return float(line.rsplit(" ", 1)[1])


def test_batched_infer_requests_get_their_own_rows_of_the_batch_axis(server: Server) -> None:
    """/v2 infer: the batcher joins requests along the inputs' first axis and gives each its
    rows of the output's axis 1 (it gave every request the whole output before)."""
    url = server.url + "/v2/models/declared/infer"
    rng = np.random.default_rng(1)
    images = [rng.random((1, 3, 48, 320), dtype=np.float32) for _ in range(3)]

    def body(image: np.ndarray) -> dict[str, Any]:
        return {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(image.shape),
                    "datatype": "FP32",
                    "data": image.ravel().tolist(),
                }
            ]
        }

    async def together() -> list[np.ndarray]:
        async with httpx.AsyncClient(timeout=60) as client:
            answers = await asyncio.gather(*(client.post(url, json=body(i)) for i in images))
        arrays = []
        for answer in answers:
            assert answer.status_code == 200, answer.text
            (output,) = answer.json()["outputs"]
            arrays.append(np.asarray(output["data"], np.float32).reshape(output["shape"]))
        return arrays

    joined = asyncio.run(together())
    for image, got in zip(images, joined, strict=True):
        alone = httpx.post(url, json=body(image), timeout=60).json()["outputs"][0]
        assert got.shape == (40, 1, 6625) and alone["shape"] == [40, 1, 6625]
        np.testing.assert_allclose(got.ravel(), alone["data"], atol=1e-4)
