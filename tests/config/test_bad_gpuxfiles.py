"""Broken GPUXfiles through ``gpux build``, as a user meets them: the exit code (3 GPUXfile,
4 not found, 5 model, 7 backend, 9 source), where the problem is (``GPUXfile:line:column``),
what it is (with a "did you mean" for typos), a 'hint:' line, no traceback, and no image."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime
import pytest

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure, hint_of

CONFIG, NOT_FOUND, MODEL, BACKEND, SOURCE = 3, 4, 5, 7, 9


@pytest.fixture(scope="module")
def models(workdir: Path) -> Path:
    folder = workdir / "models"
    generated_models.linear(folder / "linear.onnx")
    generated_models.invalid_graph(folder / "invalid.onnx")
    generated_models.corrupt(folder / "corrupt.onnx")
    return folder


@dataclass
class Case:
    id: str
    gpuxfile: str | bytes
    code: int
    fragments: list[str]
    hint: str | None = None  # a fragment of the hint line
    files: dict[str, str] = field(default_factory=dict)  # extra files in the project


LINEAR = "model: ./linear.onnx\n"
OTHER_SHA = hashlib.sha256(b"another model").hexdigest()

CASES = [
    # -- YAML (exit 3, with line:column) --
    Case(
        "yaml syntax",
        LINEAR + "runtime:\n  backend: cpu\n threads: 2\n",
        CONFIG,
        ["GPUXfile:4:2: invalid YAML"],
        hint="indentation",
    ),
    Case(
        "tab indentation",
        LINEAR + "runtime:\n\tbackend: cpu\n",
        CONFIG,
        ["GPUXfile:3:1: invalid YAML", "'\\t'"],
        hint="spaces, not tabs",
    ),
    Case(
        "unclosed quote",
        'name: "sentiment\n' + LINEAR,
        CONFIG,
        ["GPUXfile:3:1: invalid YAML", "end of stream"],
    ),
    Case(
        "duplicate key",
        LINEAR + "name: a\nname: b\n",
        CONFIG,
        ["GPUXfile:3:1: key 'name' appears twice"],
        hint="keep one",
    ),
    Case(
        "duplicate nested key",
        LINEAR + "runtime:\n  threads: 1\n  threads: 2\n",
        CONFIG,
        ["GPUXfile:4:3: key 'threads' appears twice"],
    ),
    Case(
        "gpus listed twice",
        LINEAR + "runtime:\n  gpus: [0, 0]\n",
        CONFIG,
        ["runtime.gpus", "list each device id once"],
    ),
    Case(
        "gpus not a selection",
        LINEAR + "runtime:\n  gpus: every\n",
        CONFIG,
        ["runtime.gpus"],
    ),
    Case("empty file", "", CONFIG, ["GPUXfile: the file is empty"], hint="model: ./model.onnx"),
    Case("only comments", "# model: ./linear.onnx\n", CONFIG, ["the file is empty"]),
    Case(
        "top level is a list",
        "- model: ./linear.onnx\n",
        CONFIG,
        ["GPUXfile:1:1: expected a mapping of keys", "got a list"],
    ),
    Case(
        "not UTF-8",
        b"model: ./linear.onnx\ndescription: caf\xe9\n",
        CONFIG,
        ["not UTF-8 text"],
        hint="UTF-8",
    ),
    # -- schema (exit 3, with line:column and the key path) --
    Case(
        "missing model",
        "name: sentiment\n",
        CONFIG,
        ["missing required key 'model' at the top level"],
        hint="model: ./model.onnx",
    ),
    Case(
        "unknown top-level key",
        LINEAR + "runtme:\n  backend: cpu\n",
        CONFIG,
        ["GPUXfile:2:1: unknown key 'runtme' at the top level; did you mean 'runtime'?"],
        hint="valid keys at the top level:",
    ),
    Case(
        "unknown nested key",
        LINEAR + "runtime:\n  bakend: cpu\n",
        CONFIG,
        ["GPUXfile:3:3: unknown key 'bakend' in runtime; did you mean 'backend'?"],
        hint="valid keys in runtime: backend, cuda, device, gpus, graph_optimization, openvino, "
        "tensorrt, threads, warmup, webgpu",
    ),
    Case(
        "unknown key in a list item",
        LINEAR + "inputs:\n  - name: x\n    shap: [1, 4]\n",
        CONFIG,
        ["GPUXfile:4:5: unknown key 'shap' in inputs[0]; did you mean 'shape'?"],
    ),
    Case(
        "wrong enum",
        LINEAR + "runtime:\n  backend: cdua\n",
        CONFIG,
        ["GPUXfile:3:12: runtime.backend:", "(got 'cdua'); did you mean 'cuda'?"],
        hint="runtime.backend must be one of: auto, cpu, cuda",
    ),
    Case(
        "wrong type",
        LINEAR + "runtime:\n  threads: four\n",
        CONFIG,
        ["GPUXfile:3:12: runtime.threads: expected integer (got 'four')"],
    ),
    Case(
        "mapping expected",
        LINEAR + "runtime: cpu\n",
        CONFIG,
        ["GPUXfile:2:10: runtime: expected a mapping of keys (got 'cpu')"],
    ),
    Case(
        "port out of range",
        LINEAR + "serving:\n  port: 70000\n",
        CONFIG,
        ["GPUXfile:3:9: serving.port: expected less than or equal to 65535 (got 70000)"],
    ),
    Case(
        "negative timeout",
        LINEAR + "serving:\n  timeout: -1\n",
        CONFIG,
        ["GPUXfile:3:12: serving.timeout: expected greater than 0"],
    ),
    Case(
        "malformed sha256",
        "model:\n  source: ./linear.onnx\n  sha256: abc123\n",
        CONFIG,
        ["GPUXfile:3:11: model.sha256:", "(got 'abc123')"],
    ),
    Case(
        "bad image name",
        "name: My Model\n" + LINEAR,
        CONFIG,
        ["GPUXfile:1:7: name: name 'My Model' must be lowercase letters"],
    ),
    Case(
        "zero dimension",
        LINEAR + "inputs:\n  - name: x\n    shape: [0, 4]\n",
        CONFIG,
        ["GPUXfile:4:13: inputs[0].shape[0]: a dimension must be an integer >= 1", "(got 0)"],
    ),
    Case(
        "tensor listed twice",
        LINEAR + "inputs:\n  - name: x\n  - name: x\n",
        CONFIG,
        ["GPUXfile:3:3: inputs: tensor 'x' is listed twice"],
    ),
    Case(
        "several errors at once",
        LINEAR + "runtime:\n  threads: -1\n  device: gpu\n",
        CONFIG,
        ["GPUXfile:3:12: runtime.threads", "GPUXfile:4:11: runtime.device"],
    ),
    # -- consistency (exit 3) --
    Case(
        "URL without sha256",
        "model: https://example.com/model.onnx\n",
        CONFIG,
        ["the model source is a URL but its sha256 is missing"],
        hint="sha256sum",
    ),
    Case(
        "labels file missing",
        LINEAR + "labels: labels.txt\n",
        CONFIG,
        ["labels file 'labels.txt' does not exist"],
        hint="one label per line",
    ),
    Case(
        "preprocess entry of no kind",
        LINEAR + "preprocess:\n  - resize: [224, 224]\n",
        CONFIG,
        ["unknown key 'resize' in preprocess[0]"],
        hint="text",
    ),
    Case(
        "preprocess entry of two kinds",
        LINEAR + "preprocess:\n  - text: {tokenizer: t.json}\n    audio: {sample_rate: 16000}\n",
        CONFIG,
        ["give exactly one of 'text', 'image' or 'audio'"],
    ),
    Case(
        "unknown postprocess step",
        LINEAR + "postprocess:\n  - name: p\n    steps: [sofmax]\n",
        CONFIG,
        ["unknown step 'sofmax'", "did you mean 'softmax'"],
    ),
    Case(
        "tokenizer URL without sha256",
        LINEAR + "preprocess:\n  - text: {tokenizer: 'https://example.com/tokenizer.json'}\n",
        CONFIG,
        ["tokenizer source is a URL but its sha256 is missing"],
        hint="sha256sum",
    ),
    Case(
        "letterbox with resize",
        LINEAR + "preprocess:\n  - image: {letterbox: {size: [64, 64]}, resize: 64}\n",
        CONFIG,
        ["letterbox resizes by itself"],
    ),
    Case(
        "two GPUXfiles",
        LINEAR,
        CONFIG,
        ["holds both GPUXfile and gpux.yaml"],
        hint="keep one GPUXfile",
        files={"gpux.yaml": LINEAR},
    ),
    # -- the model file (exit 4, 5, 9) --
    Case(
        "model file not found",
        "model: ./missing.onnx\n",
        NOT_FOUND,
        ["model file './missing.onnx' not found (looked for"],
        hint="paths are relative to the GPUXfile's folder",
    ),
    Case(
        "invalid ONNX graph",
        "model: ./invalid.onnx\n",
        MODEL,
        ["model './invalid.onnx' is not a valid ONNX model", "'missing'"],
        hint="re-export the model",
    ),
    Case(
        "corrupt model file",
        "model: ./corrupt.onnx\n",
        MODEL,
        ["model './corrupt.onnx' is not a valid ONNX model"],
        hint="re-export the model",
    ),
    Case(
        "sha256 mismatch, local file",
        f"model:\n  source: ./linear.onnx\n  sha256: {OTHER_SHA}\n",
        SOURCE,
        ["model './linear.onnx' has sha256", f"but the GPUXfile expects {OTHER_SHA}"],
        hint="update its sha256",
    ),
    # -- declared signature against the model (exit 5) --
    Case(
        "declared input not in model",
        LINEAR + "inputs:\n  - name: xs\n",
        MODEL,
        ["input 'xs' in the GPUXfile is not in the model; did you mean 'x'?"],
        hint="the model's inputs are: x",
    ),
    Case(
        "declared output not in model",
        LINEAR + "outputs:\n  - name: logits\n",
        MODEL,
        ["output 'logits' in the GPUXfile is not in the model"],
        hint="the model's outputs are: y",
    ),
    Case(
        "declared dtype mismatch",
        LINEAR + "inputs:\n  - name: x\n    dtype: int64\n",
        MODEL,
        ["input 'x' is declared int64 in the GPUXfile, but the model has float32"],
        hint="set dtype: float32",
    ),
    Case(
        "declared rank mismatch",
        LINEAR + "inputs:\n  - name: x\n    shape: [batch, 4, 1]\n",
        MODEL,
        ["input 'x' is declared with 3 dimensions", "the model has 2 dimensions: [batch, 4]"],
        hint="rank 2",
    ),
    Case(
        "declared fixed dim conflict",
        LINEAR + "inputs:\n  - name: x\n    shape: [batch, 5]\n",
        MODEL,
        ["input 'x' dimension 1 is declared 5 in the GPUXfile, but the model fixes it to 4"],
        hint="use 4 for that dimension",
    ),
    Case(
        "example of the wrong shape",
        LINEAR + "inputs:\n  - name: x\n    example: [[1, 2]]\n",
        MODEL,
        ["example value of input 'x' is invalid", "dimension 1 must be 4 but is 2"],
        hint="inputs[].example",
    ),
    Case(
        "example of the wrong type",
        LINEAR + "inputs:\n  - name: x\n    example: [[a, b, c, d]]\n",
        MODEL,
        ["example value of input 'x' is invalid", "expects float32 but got string"],
    ),
    # -- sources (exit 9) --
    Case(
        "plain http off loopback",
        f"model:\n  source: http://models.example.com/m.onnx\n  sha256: {OTHER_SHA}\n",
        SOURCE,
        ["refusing to download over plain http"],
        hint="https://",
    ),
    Case(
        "malformed hf source",
        "model: hf:only-a-name\n",
        SOURCE,
        ["invalid Hugging Face source 'hf:only-a-name'"],
    ),
]

if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
    CASES.append(
        Case(
            "backend not installed",
            LINEAR + "runtime:\n  backend: cuda\n",
            BACKEND,
            ["backend 'cuda' is not available: not in this ONNX Runtime build"],
            hint="pip install",
        )
    )


def make_project(folder: Path, models: Path, case: Case) -> Path:
    folder.mkdir(parents=True)
    for model in models.iterdir():
        os.link(model, folder / model.name)
    data = case.gpuxfile.encode() if isinstance(case.gpuxfile, str) else case.gpuxfile
    (folder / "GPUXfile").write_bytes(data)
    for name, text in case.files.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_gpuxfile(gpux: BoundCLI, models: Path, tmp_path: Path, case: Case) -> None:
    project = make_project(tmp_path / "project", models, case)
    result = gpux("build", str(project))
    assert_failure(result, case.code, *case.fragments)
    if case.hint:
        assert case.hint in hint_of(result)
    assert gpux.names() == []


def test_at_least_fifteen_distinct_bad_gpuxfiles() -> None:
    assert len({case.id for case in CASES}) == len(CASES) >= 15
    assert len({case.gpuxfile for case in CASES if not case.files}) >= 15


@pytest.mark.parametrize("command", ["inspect", "run"])
def test_other_commands_report_the_same_gpuxfile_error(
    gpux: BoundCLI, models: Path, tmp_path: Path, command: str
) -> None:
    case = next(c for c in CASES if c.id == "unknown nested key")
    project = make_project(tmp_path / "project", models, case)
    extra = ["--input", "x=[[1, 2, 3, 4]]"] if command == "run" else []
    result = gpux(command, str(project), *extra)
    assert_failure(result, CONFIG, *case.fragments)
