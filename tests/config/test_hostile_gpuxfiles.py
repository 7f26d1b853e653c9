"""GPUXfiles written to attack the machine that builds them (issue #12, items 1 and 6), through
``gpux build`` as a victim would run it on a project they were sent:

* paths that reach outside the project folder (``labels: ../../../etc/passwd``, an absolute
  path, ``~``, a symbolic link), which a build used to copy into the image, ready to be pushed;
* YAML that is small on disk and huge in memory (nested aliases) or deep (10,000 ``[``), which
  used to take gigabytes or end in ``internal error: RecursionError``.

Each is refused as a GPUXfile error (exit 3) that names the key and the fix, and leaves no image.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure, hint_of

CONFIG = 3
SECRET = "not-for-the-image\n"
LINEAR = "model: ./linear.onnx\n"
TOP_K = (
    "postprocess:\n  - name: top\n    from: y\n    steps:\n      - top_k: {{k: 2, labels: {}}}\n"
)


@pytest.fixture(scope="module")
def model(workdir: Path) -> Path:
    return generated_models.linear(workdir / "models" / "linear.onnx")


def project(folder: Path, model: Path, gpuxfile: str) -> Path:
    """A project folder holding the model, beside a file that is not part of it."""
    folder.mkdir(parents=True)
    os.link(model, folder / "linear.onnx")
    (folder / "GPUXfile").write_text(gpuxfile)
    (folder.parent / "secret.txt").write_text(SECRET)
    return folder


# --- item 1: every file a GPUXfile names is inside the project -------------------------------


def test_labels_reaching_etc_passwd_are_refused(
    gpux: BoundCLI, model: Path, tmp_path: Path
) -> None:
    """The attack as reported: enough '../' to reach /etc/passwd from wherever it is built."""
    folder = tmp_path / "victim"
    climb = os.path.relpath("/etc/passwd", folder)
    assert climb.startswith("../")
    project(folder, model, LINEAR + f"labels: {climb}\n")
    result = gpux("build", str(folder))
    assert_failure(
        result, CONFIG, f"labels '{climb}' resolves to /etc/passwd, outside the project folder"
    )
    assert "inline" in hint_of(result)
    assert gpux.names() == []


OUTSIDE = [
    ("labels", LINEAR + "labels: ../secret.txt\n", "labels '../secret.txt' resolves to"),
    ("labels-absolute", LINEAR + "labels: {secret}\n", "labels '{secret}' resolves to"),
    ("labels-home", LINEAR + "labels: ~/secret.txt\n", "GPUX does not expand '~'"),
    (
        "top-k-labels",
        LINEAR + TOP_K.format("../secret.txt"),
        "postprocess 'top' top_k labels '../secret.txt' resolves to",
    ),
    ("model", "model: ../models/linear.onnx\n", "model.source '../models/linear.onnx'"),
    (
        "model-absolute",
        "model: {model}\n",
        "model.source '{model}' resolves to",
    ),
    (
        "tokenizer",
        LINEAR + "preprocess:\n  - text:\n      tokenizer: ../secret.txt\n",
        "preprocess[0].text.tokenizer.source '../secret.txt'",
    ),
    (
        "samples",
        LINEAR + "build:\n  samples: ..\n  optimize: [int8-static]\n",
        "build.samples '..' resolves to",
    ),
    (
        "calibration",
        LINEAR
        + "build:\n  optimize:\n    - steps: [int8-static]\n      calibration: ../secret.txt\n",
        "build.optimize[int8-static].calibration '../secret.txt'",
    ),
]


@pytest.mark.parametrize(
    ("gpuxfile", "fragment"), [c[1:] for c in OUTSIDE], ids=[c[0] for c in OUTSIDE]
)
def test_project_paths_outside_the_project_are_refused(
    gpux: BoundCLI, model: Path, tmp_path: Path, gpuxfile: str, fragment: str
) -> None:
    def fill(text: str) -> str:
        return text.replace("{secret}", str(tmp_path / "secret.txt")).replace("{model}", str(model))

    folder = project(tmp_path / "victim", model, fill(gpuxfile))
    result = gpux("build", str(folder))
    assert_failure(result, CONFIG, fill(fragment), "GPUXfile")
    assert gpux.names() == []


def test_a_symbolic_link_out_of_the_project_is_refused(
    gpux: BoundCLI, model: Path, tmp_path: Path
) -> None:
    folder = project(tmp_path / "victim", model, LINEAR + "labels: ./labels.txt\n")
    (folder / "labels.txt").symlink_to(tmp_path / "secret.txt")
    result = gpux("build", str(folder))
    assert_failure(
        result,
        CONFIG,
        f"labels './labels.txt' is a symbolic link to {tmp_path / 'secret.txt'}",
        "outside the project folder",
    )
    assert gpux.names() == []


def test_paths_that_stay_inside_the_project_still_build(
    gpux: BoundCLI, model: Path, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "fine",
        model,
        "name: fine\nmodel: ./meta/../linear.onnx\nlabels: ./meta/link.txt\n"
        + TOP_K.format("meta/../labels.txt"),
    )
    (folder / "meta").mkdir()
    (folder / "labels.txt").write_text("a\nb\nc\n")
    (folder / "meta" / "link.txt").symlink_to("../labels.txt")  # a link inside the project
    gpux.ok("build", str(folder))
    result = gpux.json("run", "fine", "--input", "x=[[1, 2, 3, 4]]")["result"]
    assert [entry["label"] for entry in result["top"]] == ["c", "a"]


# --- item 6: YAML that is small on disk and huge (or deep) in memory --------------------------


def alias_bomb(levels: int) -> str:
    """'Billion laughs': each anchor is a list of ten aliases of the one before."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands(
    gpux: BoundCLI, model: Path, tmp_path: Path
) -> None:
    """Nine levels: 620 bytes, a billion values once expanded (5.7 GB before it was bounded)."""
    bomb = alias_bomb(9)
    assert len(bomb) < 700
    folder = project(tmp_path / "victim", model, LINEAR + bomb)
    result = gpux("build", str(folder))
    assert_failure(
        result, CONFIG, "GPUXfile:6:", "more than 100,000 values once alias *l3 is expanded"
    )
    assert "aliases" in hint_of(result)


def test_deep_nesting_is_a_gpuxfile_error_not_a_crash(
    gpux: BoundCLI, model: Path, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "victim", model, LINEAR + "description: " + "[" * 10_000 + "]" * 10_000 + "\n"
    )
    result = gpux("build", str(folder))
    assert_failure(result, CONFIG, "GPUXfile:2:", "nested more than 64 levels deep")


def test_an_alias_inside_its_own_anchor_is_refused(
    gpux: BoundCLI, model: Path, tmp_path: Path
) -> None:
    folder = project(tmp_path / "victim", model, LINEAR + "loop: &loop [a, *loop]\n")
    result = gpux("build", str(folder))
    assert_failure(result, CONFIG, "GPUXfile:2:", "alias *loop is used inside the value it names")


def test_aliases_within_bounds_still_repeat_settings(
    gpux: BoundCLI, model: Path, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "fine",
        model,
        "name: aliased\n"
        + LINEAR
        + "postprocess:\n"
        + "  - name: first\n    from: y\n    steps: &steps [softmax, {top_k: {k: 1}}]\n"
        + "  - name: second\n    from: y\n    steps: *steps\n",
    )
    gpux.ok("build", str(folder))
    result = gpux.json("run", "aliased", "--input", "x=[[1, 2, 3, 4]]")["result"]
    assert (
        result["first"]
        == result["second"]
        == [{"index": 2, "score": pytest.approx(0.766, abs=1e-3)}]
    )
