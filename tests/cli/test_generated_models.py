"""End-to-end CLI scenarios on generated models with symbolic dimensions, where every result can
be recomputed with numpy: linear (y = x @ W + b, x [batch, 4]) and two_inputs (sum = a + b over
[batch, seq] int64, and their float mean).

One store per module: the two images are built once and shared by the tests below; tests that
remove or retag images use names of their own.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure

LINEAR = "linear:latest"
PAIR = "pair:1"
STEPS = [
    "read GPUXfile",
    "resolve model",
    "check model",
    "match inputs and outputs",
    "optimise",
    "smoke run",
    "write image",
]


def expected_linear(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return x.astype(np.float32) @ generated_models.LINEAR_W + generated_models.LINEAR_B


def close(actual: Any, expected: Any) -> None:
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64), np.asarray(expected), rtol=1e-6
    )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def linear_project(workdir: Path) -> Path:
    folder = workdir / "linear"
    generated_models.linear(folder / "linear.onnx")
    (folder / "GPUXfile").write_text("name: linear\nmodel: ./linear.onnx\n")
    return folder


@pytest.fixture(scope="module")
def linear_build(gpux: BoundCLI, linear_project: Path) -> dict[str, Any]:
    report: dict[str, Any] = gpux.json("build", str(linear_project), "--json")
    return report


@pytest.fixture(scope="module")
def pair_image(gpux: BoundCLI, workdir: Path) -> str:
    folder = workdir / "pair"
    generated_models.two_inputs(folder / "pair.onnx")
    (folder / "GPUXfile").write_text("model: ./pair.onnx\n")
    assert gpux.ok("build", str(folder), "-t", PAIR, "-q").stdout == f"{PAIR}\n"
    return PAIR


@pytest.fixture
def x3() -> np.ndarray[Any, Any]:
    """Three rows: exercises the symbolic batch dimension beyond the smoke run's batch of 1."""
    return np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)


def output_data(result: dict[str, Any], name: str) -> np.ndarray[Any, Any]:
    tensor = result["outputs"][name]
    return np.asarray(tensor["data"], dtype=tensor["dtype"]).reshape(tensor["shape"])


# -- the whole lifecycle, in a store of its own -------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "two_inputs"])
def test_lifecycle_init_build_run_inspect_images_rm(cli: Any, tmp_path: Path, kind: str) -> None:
    folder = tmp_path / f"{kind.replace('_', '-')}-project"
    getattr(generated_models, kind)(folder / f"{kind}.onnx")
    init = cli("init", str(folder))
    assert init.code == 0, init.output
    assert f"model: ./{kind}.onnx" in (folder / "GPUXfile").read_text()

    build = cli("build", str(folder), "--json")
    assert build.code == 0, build.output
    name = build.json()["image"]
    assert name == f"{folder.name}:1.0"  # the template's name (folder) and version

    if kind == "linear":
        run = cli("run", name, "--input", "x=[[1, 2, 3, 4], [0, 0, 0, 0]]")
        assert run.code == 0, run.output
        close(run.json()["outputs"]["y"]["data"], [[7.0, 6.0, 8.5], generated_models.LINEAR_B])
    else:
        run = cli("run", name, stdin='{"a": [[1, 2, 3, 4, 5]], "b": [[5, 4, 3, 2, 1]]}')
        assert run.code == 0, run.output
        assert run.json()["outputs"]["sum"]["data"] == [[6, 6, 6, 6, 6]]
        assert run.json()["outputs"]["mean"]["data"] == pytest.approx(6.0)

    inspect = cli("inspect", name, "--json")
    assert inspect.code == 0, inspect.output
    info = inspect.json()
    assert info["digest"] == build.json()["digest"]
    assert all(isinstance(t["shape"][0], str) for t in info["inputs"])  # symbolic batch kept

    assert cli("images", "-q").stdout.split() == [name]
    removed = cli("rm", name)
    assert removed.code == 0, removed.output
    assert cli("images", "-q").stdout == ""
    assert cli("images", "--json").json() == []
    assert_failure(cli("inspect", name), 4, f"image '{name}' not found")


# -- build ------------------------------------------------------------------------------------


def test_build_json_report(linear_build: dict[str, Any], gpux: BoundCLI) -> None:
    assert linear_build["image"] == LINEAR
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", linear_build["digest"])
    assert linear_build["cached"] is False
    assert linear_build["placement"]["backend"] == "cpu"
    assert linear_build["placement"]["requested"] == "auto"
    assert "CPUExecutionProvider" in linear_build["placement"]["providers"]
    # The smoke run fed batch 1 for the symbolic 'batch' and got the model's output shape back.
    assert linear_build["smoke"]["input_shapes"] == {"x": [1, 4]}
    assert linear_build["smoke"]["output_shapes"] == {"y": [1, 3]}
    assert [step["step"] for step in linear_build["steps"]] == STEPS
    assert not any(step["skipped"] for step in linear_build["steps"])
    # At most the note that `auto` passed over a backend (an installed WebGPU plugin, no GPU).
    assert all(w.startswith("backend 'auto' fell back") for w in linear_build["warnings"])
    listed = gpux.json("images", "--json")
    assert [(i["names"], i["digest"]) for i in listed] == [([LINEAR], linear_build["digest"])]


def test_rebuild_of_unchanged_project_is_a_cached_no_op(
    gpux: BoundCLI, linear_project: Path, linear_build: dict[str, Any]
) -> None:
    again = gpux.json("build", str(linear_project), "--json")
    assert again["cached"] is True
    assert again["digest"] == linear_build["digest"]
    ran = [step["step"] for step in again["steps"] if not step["skipped"]]
    assert ran == ["read GPUXfile"]  # the model was neither checked nor smoke-run again
    assert "check model" not in [step["step"] for step in again["steps"]]
    skipped = [step for step in again["steps"] if step["skipped"]]
    assert "unchanged" in skipped[0]["detail"]
    # The human form says so too.
    plain = gpux.ok("build", str(linear_project))
    assert "up to date linear:latest" in plain.stderr
    assert plain.stdout == ""


def test_build_quiet_prints_only_the_name(gpux: BoundCLI, linear_project: Path) -> None:
    fresh = gpux.ok("build", str(linear_project), "-t", "quiet-one:2", "--quiet")
    assert fresh.stdout == "quiet-one:2\n"
    assert "check model" not in fresh.stderr
    cached = gpux.ok("build", str(linear_project), "-q")
    assert cached.stdout == f"{LINEAR}\n"
    gpux.ok("rm", "quiet-one:2")


def test_changed_project_or_force_rebuilds(gpux: BoundCLI, workdir: Path) -> None:
    folder = workdir / "edited"
    generated_models.linear(folder / "linear.onnx")
    gpuxfile = folder / "GPUXfile"
    gpuxfile.write_text("name: edited\nmodel: ./linear.onnx\n")
    first = gpux.json("build", str(folder), "--json")
    assert first["cached"] is False

    forced = gpux.json("build", str(folder), "--json", "--force")
    assert forced["cached"] is False
    assert "check model" in [s["step"] for s in forced["steps"] if not s["skipped"]]

    gpuxfile.write_text("name: edited\ndescription: now described\nmodel: ./linear.onnx\n")
    edited = gpux.json("build", str(folder), "--json")
    assert edited["cached"] is False
    assert gpux.json("inspect", "edited", "--json")["description"] == "now described"

    no_opt = gpux.json("build", str(folder), "--json", "--no-optimize")
    assert no_opt["cached"] is False
    assert [s["step"] for s in no_opt["steps"] if s["skipped"]] == ["optimise"]


# -- run: results and every input form ----------------------------------------------------------


def test_run_linear_matches_numpy(
    gpux: BoundCLI, linear_build: dict[str, Any], x3: np.ndarray[Any, Any]
) -> None:
    result = gpux.json("run", LINEAR, "--input", f"x={json.dumps(x3.tolist())}")
    assert result["model"] == LINEAR
    assert result["backend"] == "cpu"
    assert isinstance(result["latency_ms"], float)
    assert result["outputs"]["y"]["dtype"] == "float32"
    assert result["outputs"]["y"]["shape"] == [3, 3]
    np.testing.assert_allclose(output_data(result, "y"), expected_linear(x3), rtol=1e-6)
    # One hand-checked row: [1, 2, 3, 4] @ W + b.
    one = gpux.json("run", LINEAR, "--input", "x=[[1, 2, 3, 4]]")
    close(one["outputs"]["y"]["data"], [[7.0, 6.0, 8.5]])


def _input_forms(folder: Path, x: np.ndarray[Any, Any]) -> dict[str, tuple[list[str], str | None]]:
    """Every way to hand ``x`` to gpux run: (arguments, stdin)."""
    np.save(folder / "x.npy", x)
    (folder / "x.json").write_text(json.dumps(x.tolist()))
    mapping = {"x": x.tolist()}
    oip = {
        "id": "request-1",
        "inputs": [
            {
                "name": "x",
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.reshape(-1).tolist(),
            },
        ],
    }
    (folder / "request.json").write_text(json.dumps(mapping))
    (folder / "request-oip.json").write_text(json.dumps(oip))
    (folder / "request-wrapped.json").write_text(json.dumps({"inputs": mapping}))
    return {
        "name=json": (["--input", f"x={json.dumps(x.tolist())}"], None),
        "short -i": (["-i", f"x={json.dumps(x.tolist())}"], None),
        "name=@npy": (["--input", f"x=@{folder / 'x.npy'}"], None),
        "name=@json": (["--input", f"x=@{folder / 'x.json'}"], None),
        "@request mapping": (["--input", f"@{folder / 'request.json'}"], None),
        "@request wrapped": (["--input", f"@{folder / 'request-wrapped.json'}"], None),
        "@request open inference protocol": (["--input", f"@{folder / 'request-oip.json'}"], None),
        "stdin mapping": ([], json.dumps(mapping)),
        "stdin open inference protocol": ([], json.dumps(oip)),
        "bare value (one input)": (["--input", json.dumps(x.tolist())], None),
        "bare @npy (one input)": (["--input", f"@{folder / 'x.npy'}"], None),
    }


FORMS = [
    "name=json",
    "short -i",
    "name=@npy",
    "name=@json",
    "@request mapping",
    "@request wrapped",
    "@request open inference protocol",
    "stdin mapping",
    "stdin open inference protocol",
    "bare value (one input)",
    "bare @npy (one input)",
]


@pytest.mark.parametrize("form", FORMS)
def test_every_input_form_gives_the_same_answer(
    gpux: BoundCLI,
    linear_build: dict[str, Any],
    tmp_path: Path,
    x3: np.ndarray[Any, Any],
    form: str,
) -> None:
    args, stdin = _input_forms(tmp_path, x3)[form]
    result = gpux.json("run", LINEAR, *args, stdin=stdin)
    np.testing.assert_allclose(output_data(result, "y"), expected_linear(x3), rtol=1e-6)


def test_int_json_values_are_accepted_for_a_float_input(
    gpux: BoundCLI, linear_build: dict[str, Any], tmp_path: Path
) -> None:
    ints = np.arange(8, dtype=np.int64).reshape(2, 4)
    np.save(tmp_path / "ints.npy", ints)
    result = gpux.json("run", LINEAR, "--input", f"x=@{tmp_path / 'ints.npy'}")
    np.testing.assert_allclose(output_data(result, "y"), expected_linear(ints), rtol=1e-6)


# -- run: outputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npy", ".json", ".npz"])
def test_output_file(
    gpux: BoundCLI,
    linear_build: dict[str, Any],
    tmp_path: Path,
    x3: np.ndarray[Any, Any],
    suffix: str,
) -> None:
    target = tmp_path / "out" / f"result{suffix}"  # the folder does not exist yet
    result = gpux.json(
        "run", LINEAR, "--input", f"x={json.dumps(x3.tolist())}", "--output", str(target)
    )
    assert result["written"] == [str(target)]
    expected = expected_linear(x3)
    if suffix == ".npy":
        saved = np.load(target)
        assert saved.dtype == np.float32
    elif suffix == ".npz":
        with np.load(target) as archive:
            assert list(archive.keys()) == ["y"]
            saved = archive["y"]
    else:
        document = json.loads(target.read_text())
        assert list(document) == ["y"]
        assert document["y"]["dtype"] == "float32"
        assert document["y"]["shape"] == [3, 3]
        saved = np.asarray(document["y"]["data"], dtype=np.float32)
    np.testing.assert_allclose(saved, expected, rtol=1e-6)
    # What was written equals what was printed.
    np.testing.assert_array_equal(saved, output_data(result, "y"))


def test_large_outputs_are_summarised_unless_full(
    gpux: BoundCLI, linear_build: dict[str, Any], tmp_path: Path
) -> None:
    x = np.random.default_rng(3).standard_normal((20, 4)).astype(np.float32)  # y: 60 values
    np.save(tmp_path / "x.npy", x)
    expected = expected_linear(x)

    summary = gpux.json("run", LINEAR, "--input", f"x=@{tmp_path / 'x.npy'}")["outputs"]["y"]
    assert set(summary) == {"dtype", "shape", "head", "summary", "truncated"}
    assert summary["truncated"] is True
    assert summary["shape"] == [20, 3]
    np.testing.assert_allclose(summary["head"], expected.reshape(-1)[:8], rtol=1e-6)
    assert summary["summary"]["min"] == pytest.approx(float(expected.min()), rel=1e-6)
    assert summary["summary"]["max"] == pytest.approx(float(expected.max()), rel=1e-6)
    assert summary["summary"]["mean"] == pytest.approx(float(expected.mean()), abs=1e-5)
    assert summary["summary"]["std"] == pytest.approx(float(expected.std()), rel=1e-5)

    full = gpux.json("run", LINEAR, "--input", f"x=@{tmp_path / 'x.npy'}", "--full")
    assert "truncated" not in full["outputs"]["y"]
    np.testing.assert_allclose(output_data(full, "y"), expected, rtol=1e-6)


def test_two_inputs_and_two_outputs(gpux: BoundCLI, pair_image: str, tmp_path: Path) -> None:
    a = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    b = np.array([[10, 20, 30], [40, 50, 60]], dtype=np.int64)
    (tmp_path / "b.json").write_text(json.dumps(b.tolist()))
    result = gpux.json(
        "run",
        pair_image,
        "--input",
        f"a={json.dumps(a.tolist())}",
        "--input",
        f"b=@{tmp_path / 'b.json'}",
        "--output",
        str(tmp_path / "out.npy"),
    )
    assert result["outputs"]["sum"] == {"dtype": "int64", "shape": [2, 3], "data": (a + b).tolist()}
    assert result["outputs"]["mean"]["shape"] == []
    assert result["outputs"]["mean"]["data"] == pytest.approx(float((a + b).mean()))
    # Several outputs into one .npy name: one file per output, named after it.
    assert result["written"] == [str(tmp_path / "out.sum.npy"), str(tmp_path / "out.mean.npy")]
    np.testing.assert_array_equal(np.load(tmp_path / "out.sum.npy"), a + b)
    assert np.load(tmp_path / "out.mean.npy").shape == ()

    with_npz = gpux.json(
        "run",
        pair_image,
        "--input",
        f"@{_write(tmp_path / 'r.json', {'a': a, 'b': b})}",
        "--output",
        str(tmp_path / "out.npz"),
    )
    assert with_npz["written"] == [str(tmp_path / "out.npz")]
    with np.load(tmp_path / "out.npz") as archive:
        assert sorted(archive.keys()) == ["mean", "sum"]
        np.testing.assert_array_equal(archive["sum"], a + b)


def _write(path: Path, values: dict[str, np.ndarray[Any, Any]]) -> Path:
    path.write_text(json.dumps({name: value.tolist() for name, value in values.items()}))
    return path


def test_run_of_a_project_builds_it_first(gpux: BoundCLI, workdir: Path) -> None:
    folder = workdir / "implicit"
    generated_models.linear(folder / "linear.onnx")
    (folder / "GPUXfile").write_text("model: ./linear.onnx\n")
    assert "implicit:latest" not in gpux.names()
    result = gpux.ok("run", "./implicit", "--input", "x=[[1, 2, 3, 4]]", cwd=workdir)
    answer = json.loads(result.stdout)  # stdout holds the JSON result and nothing else
    assert answer["model"] == "implicit:latest"
    close(answer["outputs"]["y"]["data"], [[7.0, 6.0, 8.5]])
    assert "implicit:latest" in gpux.names()
    # The second run finds the image up to date and runs it.
    again = gpux.json("run", "./implicit", "--input", "x=[[0, 0, 0, 0]]", cwd=workdir)
    close(again["outputs"]["y"]["data"], [generated_models.LINEAR_B.tolist()])


def test_run_of_a_bare_onnx_file_stores_nothing(
    gpux: BoundCLI, linear_project: Path, linear_build: dict[str, Any]
) -> None:
    before = gpux.names()
    result = gpux.json("run", str(linear_project / "linear.onnx"), "--input", "x=[[1, 2, 3, 4]]")
    close(result["outputs"]["y"]["data"], [[7.0, 6.0, 8.5]])
    assert gpux.names() == before


# -- inspect -----------------------------------------------------------------------------------


def test_inspect_image_json(
    gpux: BoundCLI, linear_project: Path, linear_build: dict[str, Any]
) -> None:
    info = gpux.json("inspect", LINEAR, "--json")
    model_file = linear_project / "linear.onnx"
    assert info["kind"] == "image"
    assert info["name"] == LINEAR
    assert info["digest"] == linear_build["digest"]
    assert info["model"]["opsets"] == {"ai.onnx": 17}
    assert info["model"]["producer"] == "gpux-tests"
    assert info["model"]["operators"] == {"MatMul": 1, "Add": 1}
    assert info["model"]["nodes"] == 2
    assert info["model"]["parameters"] == generated_models.LINEAR_W.size + 3
    assert info["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
    assert info["outputs"] == [{"name": "y", "dtype": "float32", "shape": ["batch", 3]}]
    assert info["source"]["kind"] == "local"
    assert info["source"]["sha256"] == sha256_of(model_file)
    # Layers are content-addressed: the model layer's digest is the model file's sha256.
    assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", layer["digest"]) for layer in info["layers"])
    model_layers = [
        layer
        for layer in info["layers"]
        if layer["mediaType"] == "application/vnd.gpux.model.onnx.v1"
    ]
    assert len(model_layers) == 1
    assert model_layers[0]["digest"] == f"sha256:{sha256_of(model_file)}"
    assert model_layers[0]["size"] == model_file.stat().st_size
    smoke = info["smoke"]
    assert smoke["placement"]["backend"] == "cpu"
    for key in ("load_ms", "first_run_ms", "median_ms"):
        assert isinstance(smoke[key], float) and smoke[key] >= 0
    assert smoke["runs"] >= 1


def test_inspect_image_human(gpux: BoundCLI, linear_build: dict[str, Any]) -> None:
    shown = gpux.ok("inspect", LINEAR).stdout
    assert LINEAR in shown
    assert linear_build["digest"] in shown
    assert "ai.onnx 17" in shown
    assert "[batch, 4]" in shown and "[batch, 3]" in shown
    assert "MatMul 1" in shown and "Add 1" in shown
    assert "smoke run: cpu" in shown


def test_inspect_paths_without_building(gpux: BoundCLI, workdir: Path) -> None:
    folder = workdir / "unbuilt"
    model = generated_models.linear(folder / "linear.onnx")
    (folder / "GPUXfile").write_text(
        "name: unbuilt\ndescription: batch fixed to two\nmodel: ./linear.onnx\n"
        "inputs:\n  - name: x\n    shape: [2, 4]\n"
    )
    before = gpux.names()

    of_file = gpux.json("inspect", str(model), "--json")
    assert of_file["kind"] == "path"
    assert of_file["smoke"] is None
    assert of_file["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
    assert of_file["model"]["operators"] == {"MatMul": 1, "Add": 1}

    of_project = gpux.json("inspect", "./unbuilt", "--json", cwd=workdir)
    assert of_project["kind"] == "path"
    assert of_project["name"] == "unbuilt"
    assert of_project["description"] == "batch fixed to two"
    # The GPUXfile's declaration narrows the model's symbolic batch.
    assert of_project["inputs"] == [{"name": "x", "dtype": "float32", "shape": [2, 4]}]
    assert of_project["source"]["sha256"] == sha256_of(model)

    human = gpux.ok("inspect", str(folder))
    assert "not built" in human.stdout
    assert gpux.names() == before  # nothing was built or stored


# -- images, tag, rm, prune --------------------------------------------------------------------


def test_images_tag_rm(gpux: BoundCLI, linear_project: Path, linear_build: dict[str, Any]) -> None:
    gpux.ok("build", str(linear_project), "-t", "scratch:1", "-q")
    listed = {name: image for image in gpux.json("images", "--json") for name in image["names"]}
    scratch = listed["scratch:1"]
    assert scratch["backend"] == "cpu"
    assert isinstance(scratch["size"], int) and scratch["size"] > 0
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", scratch["digest"])
    assert re.match(r"\d{4}-\d\d-\d\dT", scratch["created"])
    assert gpux.json("list", "--json") == gpux.json("images", "--json")
    assert gpux.ok("list", "-q").stdout == gpux.ok("images", "-q").stdout
    table = gpux.ok("images").stdout
    assert "NAME" in table and "SIZE" in table and "scratch:1" in table

    tagged = gpux.ok("tag", "scratch:1", "scratch:copy")
    assert "tagged scratch:1 as scratch:copy" in tagged.stderr
    names = gpux.names()
    assert "scratch:1" in names and "scratch:copy" in names
    by_name = {name: image for image in gpux.json("images", "--json") for name in image["names"]}
    assert by_name["scratch:copy"]["digest"] == by_name["scratch:1"]["digest"]

    removed = gpux.ok("rm", "scratch:1")
    assert "deleted scratch:1" in removed.stderr
    names = gpux.names()
    assert "scratch:1" not in names and "scratch:copy" in names
    # The other name still runs: its blobs were kept.
    result = gpux.json("run", "scratch:copy", "--input", "x=[[1, 2, 3, 4]]")
    close(result["outputs"]["y"]["data"], [[7.0, 6.0, 8.5]])

    gpux.ok("rm", "scratch:copy")
    assert not any(name.startswith("scratch:") for name in gpux.names())
    assert_failure(gpux("run", "scratch:copy", "--input", "x=[[1, 2, 3, 4]]"), 4, "not found")
    assert_failure(gpux("rm", "scratch:copy"), 4, "image 'scratch:copy' not found")
    assert LINEAR in gpux.names()  # untouched


def test_prune_removes_only_unreferenced_blobs(
    gpux: BoundCLI, linear_build: dict[str, Any]
) -> None:
    stray_data = b"left behind by an interrupted build"
    stray = gpux.home / "blobs" / "sha256" / hashlib.sha256(stray_data).hexdigest()
    stray.write_bytes(stray_data)

    dry = gpux.ok("prune", "--dry-run")
    assert "would remove 1 unreferenced file(s)" in dry.stderr
    assert stray.exists()

    done = gpux.ok("prune")
    assert "removed 1 unreferenced file(s)" in done.stderr
    assert not stray.exists()
    assert "removed 0 unreferenced file(s)" in gpux.ok("prune").stderr
    # Every image still runs.
    result = gpux.json("run", LINEAR, "--input", "x=[[1, 2, 3, 4]]")
    close(result["outputs"]["y"]["data"], [[7.0, 6.0, 8.5]])


def test_non_finite_outputs_stay_valid_json(gpux: BoundCLI, linear_build: dict[str, Any]) -> None:
    result = gpux.ok("run", LINEAR, "--input", "x=[[3e38, 3e38, 3e38, 3e38], [NaN, 0, 0, 0]]")

    def reject(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    document = json.loads(result.stdout, parse_constant=reject)
    assert document["outputs"]["y"]["data"] == [["inf", "inf", "inf"], ["nan", "nan", "nan"]]
