"""examples/ocr-beam-search: a handler that decodes what no declarative step decodes (CTC
prefix beam search), checked three ways: the greedy reading equals the authors' own (RapidOCR's
TextRecognizer on the same crops); beam search finds the exact best text of small random
probability tables (every path enumerated); and on the page's title it reads the space that
greedy decoding drops, as the page shows it."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from tests.cli.expect import BoundCLI
from tools import zoo

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ocr-beam-search"
# (left, top, right, bottom) of three lines of scikit-image's page.png, and what they say.
LINES = {
    "title": ((7, 13, 292, 33), "Region-based segmentation"),
    "first": ((4, 47, 378, 66), "Let us first determine markers of the coins and the"),
    "second": ((3, 64, 379, 85), "background.These markers are pixels that we can label"),
}


def handler_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("beam_search_example", EXAMPLE / "beam_search.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exhaustive_best(probabilities: np.ndarray) -> tuple[tuple[int, ...], float]:
    """The most probable labelling, by summing every path (blank = 0)."""
    totals: dict[tuple[int, ...], float] = {}
    steps, classes = probabilities.shape
    for path in itertools.product(range(classes), repeat=steps):
        collapsed = [c for i, c in enumerate(path) if i == 0 or c != path[i - 1]]
        label = tuple(c for c in collapsed if c != 0)
        totals[label] = totals.get(label, 0.0) + float(
            np.prod([probabilities[t, c] for t, c in enumerate(path)])
        )
    return max(totals.items(), key=lambda kv: kv[1])


@pytest.mark.parametrize("seed", range(20))
def test_beam_search_finds_the_exact_best_text(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    module = handler_module()
    monkeypatch.setattr(module, "PRUNE", 0.0)
    monkeypatch.setattr(module, "BEAM", 64)  # wide enough to be exact at this size
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (5, 4))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    label, probability = exhaustive_best(probabilities)
    found = module._read(probabilities, ["", "a", "b", "c"])
    assert found["beam"] == "".join("_abc"[c] for c in label)
    assert found["beam_probability"] == pytest.approx(probability, rel=1e-9)


def test_beam_search_beats_the_best_single_path() -> None:
    """Two steps, blank 0.6 each: greedy reads "" (0.36); "a" has three paths (0.64)."""
    found = handler_module()._read(np.array([[0.6, 0.4], [0.6, 0.4]]), ["", "a"])
    assert found == {"beam": "a", "beam_probability": pytest.approx(0.64)}


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    page = Image.open(zoo.fetch("page.png")).convert("RGB")
    folder = tmp_path_factory.mktemp("lines")
    paths = {}
    for name, (box, _) in LINES.items():
        paths[name] = folder / f"{name}.png"
        page.crop(box).save(paths[name])
    return paths


def rapidocr_reads(paths: list[Path]) -> list[str]:
    folder = str(zoo.package("rapidocr_onnxruntime"))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(rec_model_path=str(zoo.fetch("ppocr-rec")))
    bgr = [
        np.ascontiguousarray(np.asarray(Image.open(p).convert("RGB"))[:, :, ::-1]) for p in paths
    ]
    results, _ = engine.text_rec(bgr)
    return [text for text, _ in results]


def test_the_example_reads_the_page_as_the_authors_and_finds_the_space(
    crops: dict[str, Path], tmp_path: Path, zoo_file: Callable[[str], Path]
) -> None:
    gpux = BoundCLI(tmp_path / "home")
    gpux.ok("build", str(EXAMPLE), "-q")
    code = gpux.json("inspect", "ocr-beam-search:4.0", "--json")["code"]
    assert code["files"] == ["beam_search.py"] and code["requirements"] == ["numpy>=1.24"]
    paths = [crops[name] for name in LINES]
    args = [arg for path in paths for arg in ("--input", str(path))]
    import json

    rows = [
        json.loads(line)
        for line in gpux.ok(
            "run", "ocr-beam-search:4.0", *args, "--backend", "cpu"
        ).stdout.splitlines()
    ]
    greedy = [row["greedy"]["text"] for row in rows]
    assert greedy == rapidocr_reads(paths)  # the authors' own decoding
    assert greedy[0] == "Region-basedsegmentation"  # greedy drops the space
    beams = [row["beam"] for row in rows]
    assert beams == [text for _, text in LINES.values()]  # what the page says
    assert all(0 < row["beam_probability"] <= 1 for row in rows)
