"""Handlers (``handler:`` in the GPUXfile): Python code stored in the image and run by the
pipeline everywhere a pipeline runs (run, the Python API, serve with and without batching),
with its requirements checked, its errors named by file and line, and code from elsewhere run
only with consent (``--trust-code``), also after a push and pull through a real registry."""

from __future__ import annotations

import io
import tarfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure
from tests.distribution.registry_server import running_registry
from tests.serve.conftest import start_server, stop_server

# x[batch, 4] -> y[batch, 3] = x @ W + b, computed here to check what the handler returns.
HANDLER = """\
import time

import numpy as np


def preprocess(items, context):
    rows = [[float(v) for v in item["csv"].split(",")] for item in items]
    return {"x": np.asarray(rows, dtype=np.float32)}


def postprocess(outputs, context):
    if context.items[0]["csv"] == "9,9,9,9":
        return [1 / 0]
    if context.items[0]["csv"] == "5,5,5,5":
        time.sleep(0.5)  # a slow call: requests queue behind it and form a batch
    return [
        {"best": int(np.argmax(row)), "y": row.tolist(), "batch": context.batch_size}
        for row in outputs["y"]
    ]
"""
GPUXFILE = """\
name: csv
model: ./linear.onnx
handler:
  path: ./handler.py
  inputs: [csv]
  example: {csv: "1,2,3,4"}
"""


def project(folder: Path, handler: str = HANDLER, gpuxfile: str = GPUXFILE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    generated_models.linear(folder / "linear.onnx")
    (folder / "handler.py").write_text(handler)
    (folder / "GPUXfile").write_text(gpuxfile)
    return folder


def expected(row: list[float]) -> list[float]:
    y = np.asarray([row], np.float32) @ generated_models.LINEAR_W + generated_models.LINEAR_B
    return [float(v) for v in y[0]]


@pytest.fixture
def gpux(tmp_path: Path) -> BoundCLI:
    return BoundCLI(tmp_path / "home")


def test_run_gives_the_handler_the_whole_batch(gpux: BoundCLI, tmp_path: Path) -> None:
    built = gpux.json("build", str(project(tmp_path / "p")), "--json")
    assert any(step["step"] == "pack handler" for step in built["steps"])
    one = gpux.json("run", "csv", "--input", "1,2,3,4")["result"]
    np.testing.assert_allclose(one["y"], expected([1, 2, 3, 4]), rtol=1e-6)
    assert one["best"] == int(np.argmax(expected([1, 2, 3, 4]))) and one["batch"] == 1
    lines = gpux.ok("run", "csv", "--input", "0,0,0,1", "--input", "1,0,0,0").stdout.splitlines()
    import json

    rows = [json.loads(line) for line in lines]
    assert [r["batch"] for r in rows] == [2, 2]
    np.testing.assert_allclose(rows[1]["y"], expected([1, 0, 0, 0]), rtol=1e-6)


def test_the_python_api_runs_the_handler(tmp_path: Path, gpux_home: Path) -> None:
    import gpux

    model = gpux.load(str(project(tmp_path / "p")))
    results = model.predict_batch(["1,0,0,0", "0,1,0,0", "0,0,1,0"])
    assert [r["batch"] for r in results] == [3, 3, 3]
    np.testing.assert_allclose(results[2]["y"], expected([0, 0, 1, 0]), rtol=1e-6)
    assert model.predict("0,0,0,1")["batch"] == 1


def test_a_handler_error_names_its_file_and_line(gpux: BoundCLI, tmp_path: Path) -> None:
    gpux.ok("build", str(project(tmp_path / "p")), "-q")
    line = HANDLER.splitlines().index("        return [1 / 0]") + 1
    assert_failure(
        gpux("run", "csv", "--input", "9,9,9,9"),
        11,
        f"handler.py:{line} in postprocess: ZeroDivisionError: division by zero",
        "the error is in the handler's code",
    )


def test_a_handler_that_fails_at_build_fails_the_build(gpux: BoundCLI, tmp_path: Path) -> None:
    broken = HANDLER.replace('float(v) for v in item["csv"].split(",")', "float(v) for v in item")
    result = gpux("build", str(project(tmp_path / "p", broken)))
    line = broken.splitlines().index("    rows = [[float(v) for v in item] for item in items]") + 1
    assert_failure(result, 11, "smoke run", f"handler.py:{line} in preprocess", "ValueError")
    assert "Traceback" not in result.stderr
    assert gpux.names() == []  # nothing stored


def test_preprocess_must_return_the_model_inputs(gpux: BoundCLI, tmp_path: Path) -> None:
    wrong = HANDLER.replace('return {"x": np.asarray', 'return {"pixels": np.asarray')
    assert_failure(
        gpux("build", str(project(tmp_path / "p", wrong))),
        11,
        "preprocess returned 'pixels', which the model does not take",
    )


def test_a_missing_requirement_is_named_with_the_install_command(
    gpux: BoundCLI, tmp_path: Path
) -> None:
    gpuxfile = GPUXFILE.replace(
        "  inputs: [csv]",
        '  requirements: ["numpy>=1.20", "surely-not-a-gpux-package>=2.1"]\n  inputs: [csv]',
    )
    assert_failure(
        gpux("build", str(project(tmp_path / "p", gpuxfile=gpuxfile))),
        11,
        "needs surely-not-a-gpux-package>=2.1 (not installed)",
        "uv pip install 'surely-not-a-gpux-package>=2.1'",
    )
    too_new = GPUXFILE.replace("  inputs: [csv]", '  requirements: ["numpy>=999"]\n  inputs: [csv]')
    result = gpux("build", str(project(tmp_path / "q", gpuxfile=too_new)))
    assert_failure(result, 11, "needs numpy>=999 (", "is installed)")


def test_requirements_are_checked_when_the_image_loads(
    tmp_path: Path, gpux_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built where numpy is installed, loaded where it is not: refused at load, by name."""
    from importlib import metadata

    import gpux
    from gpux.errors import RequirementError

    gpuxfile = GPUXFILE.replace(
        "  inputs: [csv]", '  requirements: ["numpy>=1.20"]\n  inputs: [csv]'
    )
    gpux.build(str(project(tmp_path / "p", gpuxfile=gpuxfile)))
    real = metadata.version

    def without_numpy(name: str) -> str:
        if name == "numpy":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", without_numpy)
    with pytest.raises(RequirementError, match=r"needs numpy>=1.20 \(not installed\)"):
        gpux.load("csv")


def test_a_package_handler_with_data_files(gpux: BoundCLI, tmp_path: Path) -> None:
    folder = tmp_path / "p"
    project(folder, gpuxfile=GPUXFILE.replace("./handler.py", "./decoding/"))
    package = folder / "decoding"
    package.mkdir()
    (package / "__init__.py").write_text("from .names import postprocess\n")
    (package / "names.py").write_text(
        textwrap.dedent(
            """\
            import numpy as np

            def postprocess(outputs, context):
                names = (context.files / "names.txt").read_text().split()
                return [{"name": names[int(np.argmax(row))]} for row in outputs["y"]]
            """
        )
    )
    (package / "names.txt").write_text("red green blue\n")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    gpux.ok("build", str(folder), "-q")
    best = int(np.argmax(expected([0, 0, 1, 0])))
    assert (
        gpux.json("run", "csv", "--input", "x=[[0, 0, 1, 0]]")["result"]["name"]
        == (["red", "green", "blue"][best])
    )
    code = gpux.json("inspect", "csv", "--json")["code"]
    assert code["files"] == ["decoding/__init__.py", "decoding/names.py", "decoding/names.txt"]
    assert code["built_here"] is True


def test_changed_code_rebuilds_and_unchanged_code_does_not(gpux: BoundCLI, tmp_path: Path) -> None:
    folder = project(tmp_path / "p")
    first = gpux.json("build", str(folder), "--json")
    assert gpux.json("build", str(folder), "--json")["cached"] is True
    (folder / "handler.py").write_text(HANDLER.replace('"best"', '"top"'))
    second = gpux.json("build", str(folder), "--json")
    assert second["cached"] is False and second["digest"] != first["digest"]
    assert "top" in gpux.json("run", "csv", "--input", "1,2,3,4")["result"]


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("../outside.py", "outside the project folder"),
        ("./nothere.py", "does not exist"),
        ("./GPUXfile", "is not a .py file"),
    ],
)
def test_bad_handler_paths_are_config_errors(
    gpux: BoundCLI, tmp_path: Path, path: str, fragment: str
) -> None:
    (tmp_path / "outside.py").write_text("def postprocess(o, c): return []\n")
    folder = project(tmp_path / "p", gpuxfile=GPUXFILE.replace("./handler.py", path))
    assert_failure(gpux("build", str(folder)), 3, fragment)


def test_pulled_code_runs_only_with_trust_code(
    gpux: BoundCLI, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gpux.ok("build", str(project(tmp_path / "p")), "-q")
    with running_registry(tmp_path_factory.mktemp("registry")) as registry:
        remote = f"{registry.host}/team/csv:1"
        gpux.ok("push", "csv", remote, "--insecure")
        other = BoundCLI(tmp_path / "other")
        pulled = other("pull", remote, "--insecure")
    assert pulled.code == 0, pulled.stderr
    assert "holds Python code (handler.py)" in pulled.stderr
    assert "--trust-code" in pulled.stderr
    assert_failure(
        other("run", remote, "--input", "1,2,3,4"),
        2,
        "holds Python code (handler.py) and was not built on this machine",
        "--trust-code",
    )
    assert_failure(other("serve", remote, "--port", "1"), 2, "was not built on this machine")
    info = other.json("inspect", remote, "--json")["code"]
    assert info["built_here"] is False and info["files"] == ["handler.py"]
    assert other.ok("inspect", remote, "--code").stdout.count("def postprocess") == 1
    trusted = other.json("run", remote, "--input", "1,2,3,4", "--trust-code")["result"]
    np.testing.assert_allclose(trusted["y"], expected([1, 2, 3, 4]), rtol=1e-6)


def test_an_archive_loaded_from_elsewhere_is_not_trusted(gpux: BoundCLI, tmp_path: Path) -> None:
    gpux.ok("build", str(project(tmp_path / "p")), "-q")
    gpux.ok("save", "csv", "-o", str(tmp_path / "csv.tar"))
    other = BoundCLI(tmp_path / "other")
    loaded = other("load", "-i", str(tmp_path / "csv.tar"))
    assert loaded.code == 0 and "holds Python code" in loaded.stderr
    assert_failure(other("run", "csv", "--input", "1,2,3,4"), 2, "not built on this machine")


def test_serve_runs_the_handler_alone_and_in_batches(gpux: BoundCLI, tmp_path: Path) -> None:
    gpux.ok("build", str(project(tmp_path / "p")), "-q")
    server = start_server(
        gpux, "csv", "--backend", "cpu", "--max-batch-size", "8", "--max-batch-delay-ms", "100"
    )
    try:
        url = f"{server.url}/v1/models/csv/predict"
        single = httpx.post(url, json={"csv": "1,2,3,4"}, timeout=30)
        assert single.status_code == 200, single.text
        np.testing.assert_allclose(single.json()["result"]["y"], expected([1, 2, 3, 4]), rtol=1e-6)

        def ask(i: int) -> dict[str, object]:
            answer = httpx.post(url, json={"csv": f"{i},0,0,1"}, timeout=30)
            assert answer.status_code == 200, answer.text
            return dict(answer.json()["result"])

        with ThreadPoolExecutor(9) as pool:
            blocker = pool.submit(
                lambda: httpx.post(url, json={"csv": "5,5,5,5"}, timeout=30).status_code
            )
            time.sleep(0.1)  # the blocker's call is running: the next ones queue behind it
            answers = list(pool.map(ask, range(8)))
            assert blocker.result() == 200
        assert max(int(str(a["batch"])) for a in answers) > 1  # batched calls: the whole batch
        for i, answer in enumerate(answers):
            np.testing.assert_allclose(answer["y"], expected([i, 0, 0, 1]), rtol=1e-5)
        failing = httpx.post(url, json={"csv": "9,9,9,9"}, timeout=30)
        assert failing.status_code == 500
        assert "handler.py:" in failing.json()["error"] and "ZeroDivisionError" in failing.text
        assert httpx.post(url, json={"csv": "1,2,3,4"}, timeout=30).status_code == 200  # still up
    finally:
        assert stop_server(server) == 0, server.log()


def hostile(tmp_path: Path, name: str, kind: bytes = tarfile.REGTYPE) -> Path:
    archive = tmp_path / "code.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
        else:
            info.size = 4
        tar.addfile(info, io.BytesIO(b"x = 1"[:4]) if kind != tarfile.SYMTYPE else None)
    return archive


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("../handler.py", tarfile.REGTYPE),
        ("/tmp/handler.py", tarfile.REGTYPE),
        ("other/handler.py", tarfile.REGTYPE),
        ("handler.py", tarfile.SYMTYPE),
    ],
)
def test_hostile_code_layers_are_refused(tmp_path: Path, name: str, kind: bytes) -> None:
    from gpux.errors import StoreError
    from gpux.store.code import unpack

    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(StoreError, match="has an entry GPUX does not accept"):
        unpack(hostile(tmp_path, name, kind), destination, "handler.py", "evil:1")
    assert list(destination.iterdir()) == []
