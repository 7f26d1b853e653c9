"""Model chains, as a user meets them: examples/ocr (PP-OCRv4 det -> crops -> rec, as shipped)
built into one image that reads a scanned page as rapidocr-onnxruntime's own RapidOCR() reads it,
runs from `gpux run`, the Python API and `gpux serve`, and travels through a real registry as
one image; and chain GPUXfiles with mistakes, refused with the fix."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.cli.expect import BoundCLI, assert_failure
from tests.distribution.registry_server import Registry, running_registry
from tests.serve.conftest import start_server, stop_server
from tools import zoo

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OCR = "ocr:4.0"


@pytest.fixture(scope="module")
def gpux(tmp_path_factory: pytest.TempPathFactory) -> BoundCLI:
    cli = BoundCLI(tmp_path_factory.mktemp("chain-home"))
    cli.ok("build", str(EXAMPLES / "ocr"), "-q")
    return cli


@pytest.fixture(scope="module")
def page() -> Path:
    return zoo.fetch("page.png")


def rapidocr_lines(image: np.ndarray) -> list[tuple[np.ndarray, str, float]]:
    """What RapidOCR(), with its default settings, reads: (quad, text, score) per line."""
    folder = str(zoo.package("rapidocr_onnxruntime"))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    from rapidocr_onnxruntime import RapidOCR

    found, _ = RapidOCR()(np.ascontiguousarray(image[:, :, ::-1]))  # it reads BGR arrays
    return [(np.asarray(box, dtype=float), text, float(score)) for box, text, score in found or []]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    from shapely.geometry import Polygon

    first, second = Polygon(a), Polygon(b)
    return float(first.intersection(second).area / first.union(second).area)


def matched(ours: list[dict[str, Any]], theirs: list[tuple[np.ndarray, str, float]]) -> int:
    """RapidOCR's lines that we read too: same text, box IoU >= 0.9, in the same order."""
    count = 0
    for line, (box, text, _) in zip(ours, theirs, strict=False):
        if line["text"] == text and iou(np.asarray(line["box"], dtype=float), box) >= 0.9:
            count += 1
    return count


def test_ocr_chain_reads_the_page_as_rapidocr_does(gpux: BoundCLI, page: Path) -> None:
    shown = gpux.json("run", OCR, "--input", str(page), "--backend", "cpu")
    assert shown["backends"] == {"det": "cpu", "rec": "cpu"}
    lines = shown["result"]["lines"]
    theirs = rapidocr_lines(np.asarray(Image.open(page).convert("RGB")))
    assert len(theirs) >= 5
    assert matched(lines, theirs) >= 0.95 * len(theirs), (lines, theirs)
    assert len(lines) == len(theirs)
    for line in lines:
        assert set(line) == {"box", "score", "text", "confidence"}  # fields: [text, confidence]
        assert np.asarray(line["box"]).shape == (4, 2) and line["confidence"] >= 0.5


def test_a_rotated_page_and_the_python_api(gpux: BoundCLI, page: Path, monkeypatch: Any) -> None:
    import gpux as api

    monkeypatch.setenv("GPUX_HOME", str(gpux.home))
    image = np.asarray(Image.open(page).convert("RGB"))
    # Turned clockwise, the lines stand on end; cut out and turned back (rotate_tall), they read.
    turned = np.ascontiguousarray(np.rot90(image, -1))
    with api.load(OCR, backend="cpu") as chain:
        assert set(chain.placements) == {"det", "rec"}
        upright, again = chain.predict_batch([image, image])
        assert upright == again  # a batch of two pages reads each page alone
        theirs = rapidocr_lines(image)
        assert matched(upright["lines"], theirs) >= 0.95 * len(theirs)
        # One model of the chain runs on its own, and the chain refuses tensors.
        regions = chain.components["det"].predict(image)["lines"]
        assert len(regions) == len(upright["lines"])
        with pytest.raises(api.errors.UsageError, match="chain of models"):
            chain.run({"x": np.zeros((1, 3, 32, 32), np.float32)})
        # Standing lines are read less surely, by either: one of five reads "(" where RapidOCR
        # reads a full-width one (U+FF08) from crops that differ by at most 1 grey level.
        standing, theirs = chain.predict(turned)["lines"], rapidocr_lines(turned)
        assert len(standing) == len(theirs)
        assert matched(standing, theirs) >= len(theirs) - 1, (standing, theirs)


def test_the_chain_is_one_image_to_push_pull_and_inspect(
    gpux: BoundCLI, page: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    info = gpux.json("inspect", OCR, "--json")
    assert info["kind"] == "chain" and set(info["models"]) == {"det", "rec"}
    for model in info["models"].values():
        assert model["smoke"]["placement"]["backend"] == "cpu"
    expected = gpux.json("run", OCR, "--input", str(page), "--backend", "cpu")["result"]
    with running_registry(tmp_path_factory.mktemp("registry")) as registry:
        assert isinstance(registry, Registry)
        remote = f"{registry.host}/team/ocr:4.0"
        pushed = gpux.json("push", OCR, remote, "--insecure", "--json")
        assert pushed["digest"] == info["digest"]
        other = BoundCLI(tmp_path_factory.mktemp("other-home"))
        pulled = other.json("pull", remote, "--insecure", "--json")
        assert pulled["digest"] == info["digest"]
        got = other.json("run", remote, "--input", str(page), "--backend", "cpu")["result"]
    assert got == expected


def test_the_chain_served(gpux: BoundCLI, page: Path) -> None:
    server = start_server(gpux, OCR, "--backend", "cpu")
    try:
        data = page.read_bytes()
        answer = httpx.post(
            f"{server.url}/v1/models/ocr/predict",
            files={"image": ("page.png", data, "image/png")},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["backends"] == {"det": "cpu", "rec": "cpu"}
        local = gpux.json("run", OCR, "--input", str(page), "--backend", "cpu")["result"]
        assert body["result"] == local
        refused = httpx.post(
            f"{server.url}/v2/models/ocr/infer",
            json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0]}]},
            timeout=30,
        )
        assert refused.status_code == 400 and "chain of models" in refused.text
        assert "/predict" in refused.json()["hint"]
        raw = httpx.post(
            f"{server.url}/v1/models/ocr/predict?raw=1",
            files={"image": ("page.png", data, "image/png")},
            timeout=60,
        )
        assert raw.status_code == 400 and "raw" in raw.text
    finally:
        assert stop_server(server) == 0, server.log()


@pytest.fixture
def chain_copy(tmp_path: Path) -> Path:
    """examples/ocr with its models taken from the zoo's cache (no download)."""
    folder = tmp_path / "ocr"
    shutil.copytree(EXAMPLES / "ocr", folder)
    for key, name in (("det", "ppocr-det"), ("rec", "ppocr-rec")):
        model = zoo.fetch(name)
        shutil.copy(model, folder / key / "model.onnx")
        text = (folder / key / "GPUXfile").read_text()
        start = text.index("model:")
        end = text.index("\n\n", start)
        (folder / key / "GPUXfile").write_text(text[:start] + "model: ./model.onnx" + text[end:])
    return folder


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (("each: rec", "each: cls"), ["chain.each is 'cls'", "det, rec"]),
        (("regions: lines", "regions: words"), ["no such result", "its results: lines"]),
        (("det: ./det", "det: ../det"), ["outside the project folder"]),
        (("each: rec", "each: det"), ["chain.detect and chain.each", "different"]),
        (("batch_size: 6", "batch_size: 0"), ["GPUXfile:", "batch_size"]),
        (("output: lines", "outptu: lines"), ["unknown key 'outptu'", "did you mean 'output'"]),
    ],
)
def test_chain_mistakes_are_named(
    chain_copy: Path, tmp_path: Path, change: tuple[str, str], fragments: list[str]
) -> None:
    gpuxfile = chain_copy / "GPUXfile"
    text = gpuxfile.read_text()
    assert change[0] in text
    gpuxfile.write_text(text.replace(change[0], change[1]))
    cli = BoundCLI(tmp_path / "home")
    assert_failure(cli("build", str(chain_copy), "-q"), 3, *fragments)
