"""PP-OCRv4's text recogniser declared in a GPUXfile, with no code: OpenCV resizing to height 48,
the batch padded to its widest, and CTC decoding with the charset from the model. It reads the
text lines of a scanned page as rapidocr 1.4.4's own recogniser reads them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_project
from tools import zoo

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

GPUXFILE = """
name: rec
model: ./{model}
preprocess:
  - name: line
    image:
      color: BGR
      interpolation: opencv-linear
      resize: {{height: 48, min_width: 320}}
      normalize: "[-1,1]"
postprocess:
  - name: text
    steps: [ctc]
"""
# Text lines of page.png, (left, top, right, bottom), as rapidocr's detector finds them.
LINES = [
    (7, 12, 292, 33),
    (4, 47, 379, 66),
    (3, 63, 379, 86),
    (3, 81, 378, 104),
    (5, 114, 172, 140),
]


@pytest.fixture(scope="module")
def crops(zoo_file: Callable[[str], Path]) -> list[np.ndarray]:
    page = np.asarray(Image.open(zoo_file("page.png")).convert("RGB"))
    return [np.ascontiguousarray(page[t:b, left:r]) for left, t, r, b in LINES]


def rapidocr_reads(crops: list[np.ndarray], batch: int) -> list[tuple[str, float]]:
    folder = str(zoo.package("rapidocr_onnxruntime"))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(rec_model_path=str(zoo.fetch("ppocr-rec")))
    engine.text_rec.rec_batch_num = batch
    results, _ = engine.text_rec([np.ascontiguousarray(c[:, :, ::-1]) for c in crops])  # BGR
    return [(text, float(score)) for text, score in results]


@pytest.mark.parametrize("batch", [1, 5])
def test_recogniser_reads_as_rapidocr_does(
    crops: list[np.ndarray], batch: int, tmp_path: Path, gpux_home: Path
) -> None:
    import gpux

    rec = zoo.fetch("ppocr-rec")
    project = make_project(tmp_path / "rec", rec, GPUXFILE.format(model=rec.name))
    model = gpux.load(str(project))
    expected = rapidocr_reads(crops, batch)
    ours: list[Any] = []
    # rapidocr sorts the lines by width/height, then batches them: the same batches here.
    order = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / crops[i].shape[0])
    for start in range(0, len(crops), batch):
        chunk = order[start : start + batch]
        results = model.predict_batch([crops[i] for i in chunk])
        ours.extend(zip(chunk, results, strict=True))
    read = [result["text"] for _, result in sorted(ours, key=lambda pair: pair[0])]
    assert [r["text"] for r in read] == [text for text, _ in expected]
    assert any("background" in r["text"] for r in read)
    np.testing.assert_allclose(
        [r["confidence"] for r in read], [score for _, score in expected], atol=1e-4
    )
