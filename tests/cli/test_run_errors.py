"""Bad inputs and bad arguments, as users meet them: each case checks the exit code (see
gpux/errors.py), the part of the message that names the problem, that a 'hint:' line says how
to fix it, and that no traceback leaks out. Two generated images are built once for the module:
``lin`` (x float32 [batch, 4]) and ``pair`` (a, b int64 [batch, seq])."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime
import pytest

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure, hint_of

USAGE, CONFIG, NOT_FOUND, MODEL, INPUT, BACKEND = 2, 3, 4, 5, 6, 7


@pytest.fixture(scope="module")
def images(gpux: BoundCLI, workdir: Path) -> Path:
    """Build ``lin`` and ``pair``; return a folder holding the files the cases refer to."""
    for name, make in (("lin", generated_models.linear), ("pair", generated_models.two_inputs)):
        folder = workdir / name
        make(folder / f"{name}.onnx")
        (folder / "GPUXfile").write_text(f"name: {name}\nmodel: ./{name}.onnx\n")
        gpux.ok("build", str(folder), "-q")
    files = workdir / "files"
    files.mkdir()
    (files / "garbage.npy").write_bytes(b"not numpy at all")
    (files / "table.csv").write_text("1,2,3,4\n")
    (files / "broken.json").write_text('{"x": [[1, 2, 3, 4]]')
    (files / "list-request.json").write_text("[[1, 2, 3, 4]]")
    (files / "deep.json").write_text(DEEP)
    return files


@dataclass
class Case:
    id: str
    args: list[str]
    code: int
    fragments: list[str]
    stdin: str | None = None
    hint: str | None = None  # a fragment of the hint line
    cwd_files: bool = False
    extra: dict[str, str] = field(default_factory=dict)


X = "x=[[1, 2, 3, 4]]"
DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raised RecursionError: an internal error
OIP_8_VALUES = [1, 2, 3, 4, 5, 6, 7, 8]

CASES = [
    # -- inputs that do not match the model (exit 6) --
    Case(
        "unknown input name",
        ["run", "pair", "-i", "a=[[1]]", "-i", "bb=[[1]]"],
        INPUT,
        ["unknown input 'bb'; did you mean 'b'?"],
        hint="the model's inputs are: a, b",
    ),
    Case(
        "JSON nested 100k deep on stdin",
        ["run", "lin"],
        INPUT,
        ["the request on stdin is not valid JSON", "100001 levels deep, more than the 64"],
        stdin='{"x": ' + DEEP + "}",
    ),
    Case(
        "JSON nested 100k deep in a file",
        ["run", "lin", "-i", "x=@{files}/deep.json"],
        INPUT,
        ["is not valid JSON", "100000 levels deep"],
    ),
    Case(
        "missing input",
        ["run", "pair", "-i", "a=[[1, 2]]"],
        INPUT,
        ["missing input 'b' (int64 [batch, seq])"],
        hint="needs every input",
    ),
    Case(
        "float into int64",
        ["run", "pair", "-i", "a=[[1.5, 2]]", "-i", "b=[[1, 2]]"],
        INPUT,
        ["input 'a' expects int64 but got float64 values"],
        hint="send int64 data",
    ),
    Case(
        "text into float32",
        ["run", "lin", "-i", 'x=[["a", "b", "c", "d"]]'],
        INPUT,
        ["input 'x' expects float32 but got string values"],
    ),
    Case(
        "wrong fixed dimension",
        ["run", "lin", "-i", "x=[[1, 2, 3]]"],
        INPUT,
        ["input 'x' dimension 1 must be 4 but is 3", "[batch, 4]"],
        hint="reshape the value to [batch, 4]",
    ),
    Case(
        "wrong rank",
        ["run", "lin", "-i", "x=[1, 2, 3, 4]"],
        INPUT,
        ["input 'x' expects 2 dimensions [batch, 4] but got 1: [4]"],
    ),
    Case(
        "symbolic dimension disagrees",
        ["run", "pair", "-i", "a=[[1, 2, 3]]", "-i", "b=[[1, 2]]"],
        INPUT,
        ["input 'b' dimension 1 ('seq') is 2 but 'seq' is 3 in input 'a'"],
        hint="every input must agree on 'seq'",
    ),
    Case(
        "ragged list",
        ["run", "lin", "-i", "x=[[1, 2, 3, 4], [1, 2]]"],
        INPUT,
        ["input 'x': the nested lists are ragged"],
    ),
    Case(
        "value is not JSON",
        ["run", "lin", "-i", "x=[[1, 2, 3, 4"],
        INPUT,
        ["input 'x': '[[1, 2, 3, 4' is not a JSON value"],
    ),
    Case(
        "stdin is not JSON",
        ["run", "lin"],
        INPUT,
        ["the request on stdin is not valid JSON"],
        stdin='{"x": [[1, 2, 3, 4]',
    ),
    Case(
        "stdin is a list",
        ["run", "lin"],
        INPUT,
        ["a request must be a JSON object of input names to values, got a list"],
        stdin="[[1, 2, 3, 4]]",
    ),
    Case(
        "request file is a list",
        ["run", "lin", "-i", "@{files}/list-request.json"],
        INPUT,
        ["a request must be a JSON object"],
    ),
    Case(
        "request file is not JSON",
        ["run", "lin", "-i", "@{files}/broken.json"],
        INPUT,
        ["broken.json' is not valid JSON"],
    ),
    Case(
        "OIP data does not fit shape",
        ["run", "lin"],
        INPUT,
        ["input 'x': 8 values cannot take shape [3, 4]"],
        stdin=json.dumps(
            {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32", "data": OIP_8_VALUES}]}
        ),
    ),
    Case(
        "OIP unknown datatype",
        ["run", "lin"],
        INPUT,
        ["input 'x': unknown datatype 'FLOAT99'"],
        hint="FP32",
        stdin=json.dumps(
            {
                "inputs": [
                    {"name": "x", "shape": [2, 4], "datatype": "FLOAT99", "data": OIP_8_VALUES}
                ]
            }
        ),
    ),
    Case(
        "OIP tensor without data",
        ["run", "lin"],
        INPUT,
        ["inputs[0] must have 'name', 'shape', 'datatype' and 'data'"],
        stdin=json.dumps({"inputs": [{"name": "x", "shape": [1, 4]}]}),
    ),
    Case(
        "@file of unknown type",
        ["run", "lin", "-i", "x=@{files}/table.csv"],
        INPUT,
        ["input 'x': cannot read 'table.csv' (unknown file type '.csv')"],
        hint="use a .npy or .json file",
    ),
    Case(
        "@file not numpy",
        ["run", "lin", "-i", "x=@{files}/garbage.npy"],
        INPUT,
        ["input 'x':", "is not a readable .npy file"],
    ),
    # -- usage (exit 2) --
    Case(
        "no inputs, empty stdin",
        ["run", "lin"],
        USAGE,
        ["no inputs given: stdin is empty"],
        stdin="",
        hint="pipe a JSON request",
    ),
    Case(
        "input given twice", ["run", "lin", "-i", X, "-i", X], USAGE, ["input 'x' is given twice"]
    ),
    Case(
        "unnamed value, several inputs",
        ["run", "pair", "-i", "[[1, 2]]"],
        USAGE,
        ["--input '[[1, 2]]' does not name an input"],
        hint="the model's inputs are: a, b",
    ),
    Case(
        "bare @npy, several inputs",
        ["run", "pair", "-i", "@{files}/garbage.npy"],
        USAGE,
        ["a .npy file holds one tensor; say which input it is for"],
        hint="write NAME=@",
    ),
    Case(
        "invalid image name",
        ["run", "Bad Name", "-i", X],
        USAGE,
        ["invalid image name 'Bad Name'"],
        hint="gpux build -t",
    ),
    Case(
        "invalid tag",
        ["run", "lin:no tags", "-i", X],
        USAGE,
        ["invalid image name 'lin:no tags'", "tag 'no tags'"],
    ),
    Case(
        "--output of unknown type",
        ["run", "lin", "-i", X, "-o", "{files}/out.txt"],
        USAGE,
        ["cannot write outputs to 'out.txt': unknown file type '.txt'"],
        hint="out.json, out.npy or out.npz",
    ),
    Case(
        "unknown --backend",
        ["run", "lin", "-i", X, "--backend", "cdua"],
        USAGE,
        ["unknown backend 'cdua'; did you mean 'cuda'?"],
        hint="auto, cpu, cuda",
    ),
    Case(
        "unknown build --backend",
        ["build", "{files}", "--backend", "gpu0"],
        USAGE,
        ["unknown backend 'gpu0'"],
    ),
    Case(
        "tag to an invalid name",
        ["tag", "lin", "Lin Copy"],
        USAGE,
        ["invalid image name 'Lin Copy'"],
    ),
    Case(
        "unknown init template",
        ["init", "{files}/new", "--template", "huge"],
        USAGE,
        ["unknown template 'huge'"],
        hint="minimal, full",
    ),
    # -- things that do not exist (exit 4) --
    Case(
        "unknown image",
        ["run", "nosuch", "-i", X],
        NOT_FOUND,
        ["image 'nosuch' not found"],
        hint="gpux images",
    ),
    Case(
        "unknown image, inspect", ["inspect", "nosuch:2"], NOT_FOUND, ["image 'nosuch:2' not found"]
    ),
    Case("unknown image, rm", ["rm", "nosuch"], NOT_FOUND, ["image 'nosuch' not found"]),
    Case("unknown image, tag", ["tag", "nosuch", "other"], NOT_FOUND, ["image 'nosuch' not found"]),
    Case(
        "@file missing",
        ["run", "lin", "-i", "x=@{files}/missing.npy"],
        NOT_FOUND,
        ["input 'x': file", "missing.npy' not found"],
        hint="check the path after '@'",
    ),
    Case(
        "@request missing",
        ["run", "lin", "-i", "@{files}/missing.json"],
        NOT_FOUND,
        ["missing.json' not found"],
    ),
    Case(
        "project folder missing",
        ["run", "./no-such-project", "-i", X],
        NOT_FOUND,
        ["project 'no-such-project' does not exist"],
        hint="gpux init",
    ),
    Case(
        "folder without GPUXfile",
        ["build", "{files}"],
        NOT_FOUND,
        ["no GPUXfile in", "looked for GPUXfile, gpux.yaml, gpux.yml"],
        hint="gpux init",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(gpux: BoundCLI, images: Path, case: Case) -> None:
    args = [arg.replace("{files}", str(images)) for arg in case.args]
    result = gpux(*args, stdin=case.stdin, cwd=images)
    assert_failure(result, case.code, *case.fragments)
    if case.hint:
        assert case.hint in hint_of(result)


def test_at_least_fifteen_distinct_bad_inputs() -> None:
    assert len({case.id for case in CASES}) == len(CASES) >= 15


def test_bad_input_leaves_images_alone(gpux: BoundCLI, images: Path) -> None:
    assert gpux.names() == ["lin:latest", "pair:latest"]
    assert gpux.json("run", "lin", "-i", X)["outputs"]["y"]["shape"] == [1, 3]


@pytest.mark.skipif(
    "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
    reason="this machine has CUDA: --backend cuda works here",
)
@pytest.mark.parametrize("command", ["run", "build"])
def test_explicit_cuda_backend_on_a_cpu_machine(
    gpux: BoundCLI, images: Path, workdir: Path, command: str
) -> None:
    if command == "run":
        result = gpux("run", "lin", "-i", X, "--backend", "cuda")
    else:
        result = gpux("build", str(workdir / "lin"), "--backend", "cuda", "-t", "lin:cuda")
    assert_failure(result, BACKEND, "backend 'cuda' is not available")
    assert "pip install" in hint_of(result)
    assert "--backend auto" in hint_of(result)
    assert "lin:cuda" not in gpux.names()


def test_debug_shows_the_traceback(gpux: BoundCLI, images: Path) -> None:
    plain = gpux("run", "nosuch", "-i", X)
    assert "Traceback" not in plain.output
    debug = gpux("--debug", "run", "nosuch", "-i", X)
    assert debug.code == NOT_FOUND
    assert "Traceback (most recent call last)" in debug.stderr
    assert "NotFoundError" in debug.stderr
    assert "error: image 'nosuch' not found" in debug.stderr  # the message still ends it


def test_argument_errors_from_the_parser(gpux: BoundCLI) -> None:
    missing = gpux("run")
    assert missing.code == USAGE
    assert "Missing argument" in missing.stderr
    unknown = gpux("run", "lin", "--bogus")
    assert unknown.code == USAGE
    assert "No such option: --bogus" in unknown.stderr
    assert "Traceback" not in missing.output + unknown.output
