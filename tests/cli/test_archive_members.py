"""``member``: one file taken out of a zip (.whl) or tar archive, local or downloaded, and the
archives written to attack the machine that builds them (issue #12, item 1): a member name that
climbs out of the cache (``../../../../x``, ``/abs/x``), links, and a small zip of a huge file.
Each attack is refused before anything is written outside ``$GPUX_HOME``, and leaves nothing
behind but what ``gpux prune`` removes."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure, hint_of
from tests.cli.test_sources import ModelServer

CONFIG, USAGE, SOURCE = 3, 2, 9
LINEAR_OUT = [[7.0, 6.0, 8.5]]  # generated_models.linear for x = [[1, 2, 3, 4]]


@pytest.fixture(scope="module")
def linear(workdir: Path) -> bytes:
    return generated_models.linear(workdir / "models" / "linear.onnx").read_bytes()


def zip_of(path: Path, entries: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A zip holding ``entries`` and, in ``links``, symbolic links as Info-ZIP stores them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            bundle.writestr(info, target)
    return path


def tar_of(path: Path, entries: list[tarfile.TarInfo], data: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as bundle:
        for entry in entries:
            content = data.get(entry.name)
            if content is not None:
                entry.size = len(content)
            bundle.addfile(entry, io.BytesIO(content) if content is not None else None)
    return path


def tar_entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.type, entry.linkname = kind, link
    return entry


def project(folder: Path, source: str, member: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "GPUXfile").write_text(
        f"name: {folder.name}\nmodel:\n  source: {source}\n  member: '{member}'\n{extra}"
    )
    return folder


def extracted(gpux: BoundCLI, archive: Path) -> list[str]:
    """The files in the cache folder of one archive's members (temporary files included)."""
    folder = gpux.home / "cache" / "extracted" / hashlib.sha256(archive.read_bytes()).hexdigest()
    found = folder.rglob("*") if folder.exists() else []
    return sorted(path.relative_to(folder).as_posix() for path in found if path.is_file())


@pytest.fixture
def server(workdir: Path) -> Iterator[ModelServer]:
    running = ModelServer(workdir / "served")
    yield running
    running.stop()


# --- members that build ---------------------------------------------------------------------


def test_a_member_of_a_zip_or_tar_builds_and_runs(
    gpux: BoundCLI, linear: bytes, workdir: Path
) -> None:
    folder = workdir / "packaged"
    zip_of(folder / "model.whl", {"package/models/linear.onnx": linear, "package/x.py": b""})
    entry = tar_entry("package/models/linear.onnx")
    tar_of(folder / "model.tar.gz", [entry], {entry.name: linear})
    for name, archive in (("from-zip", "model.whl"), ("from-tar", "model.tar.gz")):
        (folder / "GPUXfile").write_text(
            f"name: {name}\nmodel:\n  source: ./{archive}\n  member: package/models/linear.onnx\n"
        )
        gpux.ok("build", str(folder))
        result = gpux.json("run", name, "--input", "x=[[1, 2, 3, 4]]")
        assert result["outputs"]["y"]["data"] == LINEAR_OUT
        assert gpux.json("inspect", name, "--json")["source"]["origin"] == (
            f"./{archive}#package/models/linear.onnx"
        )
    # The member alone in its archive's cache folder: no temporary file left.
    for archive in ("model.whl", "model.tar.gz"):
        assert extracted(gpux, folder / archive) == ["package/models/linear.onnx"]


def test_a_member_of_a_downloaded_archive(
    gpux: BoundCLI, linear: bytes, workdir: Path, server: ModelServer
) -> None:
    archive = zip_of(workdir / "served" / "model.zip", {"onnx/linear.onnx": linear})
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    folder = project(
        workdir / "downloaded",
        f"{server.url}/model.zip",
        "onnx/linear.onnx",
        f"  sha256: {digest}\n",
    )
    gpux.ok("build", str(folder))
    assert (
        gpux.json("run", "downloaded", "--input", "x=[[1, 2, 3, 4]]")["outputs"]["y"]["data"]
        == LINEAR_OUT
    )


# --- member names that climb out of the cache -----------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_a_member_climbing_out_of_the_cache_is_refused(
    gpux: BoundCLI, linear: bytes, tmp_path: Path, kind: str
) -> None:
    """The archive holds a file named '../../../../escape.onnx', which used to land four levels
    above the cache: beside $GPUX_HOME."""
    member = "../../../../escape.onnx"
    folder = tmp_path / "victim"
    if kind == "zip":
        archive = zip_of(folder / "model.zip", {member: linear})
    else:
        archive = tar_of(folder / "model.zip", [tar_entry(member)], {member: linear})
    project(folder, "./model.zip", member)
    result = gpux("build", str(folder))
    assert_failure(result, CONFIG, "model.member", "climbs out of the archive with '..'")
    assert "as 'unzip -l' or 'tar tf' lists it" in result.stderr
    assert not (gpux.home.parent / "escape.onnx").exists()
    assert extracted(gpux, archive) == []


def test_an_absolute_member_is_refused(gpux: BoundCLI, linear: bytes, tmp_path: Path) -> None:
    """An absolute member name used to be written at that very path."""
    outside = tmp_path / "outside" / "escape.onnx"
    folder = tmp_path / "victim"
    tar_of(folder / "model.tar.gz", [tar_entry(str(outside))], {str(outside): linear})
    project(folder, "./model.tar.gz", str(outside))
    result = gpux("build", str(folder))
    assert_failure(result, CONFIG, "model.member", "is an absolute path")
    assert not outside.exists()


def test_a_member_name_is_checked_before_the_download(
    gpux: BoundCLI, workdir: Path, server: ModelServer
) -> None:
    folder = project(
        workdir / "remote-victim", f"{server.url}/model.zip", "../x.onnx", f"  sha256: {'0' * 64}\n"
    )
    assert_failure(gpux("build", str(folder)), CONFIG, "climbs out of the archive")
    assert server.requests == []


# --- links ----------------------------------------------------------------------------------


LINKS = {
    "tar-symlink": (tarfile.SYMTYPE, "/etc/passwd", "a symbolic link to '/etc/passwd'"),
    "tar-hardlink": (tarfile.LNKTYPE, "package/real.onnx", "a hard link to 'package/real.onnx'"),
}


@pytest.mark.parametrize("case", list(LINKS))
def test_a_tar_member_that_is_a_link_is_refused(
    gpux: BoundCLI, linear: bytes, tmp_path: Path, case: str
) -> None:
    kind, target, fragment = LINKS[case]
    folder = tmp_path / "victim"
    real = tar_entry("package/real.onnx")
    archive = tar_of(
        folder / "model.tar", [real, tar_entry("model.onnx", kind, target)], {real.name: linear}
    )
    project(folder, "./model.tar", "model.onnx")
    result = gpux("build", str(folder))
    assert_failure(result, SOURCE, f"archive member 'model.onnx' is {fragment}")
    assert "only regular files" in result.stderr
    assert extracted(gpux, archive) == []


def test_a_zip_member_that_is_a_symbolic_link_is_refused(gpux: BoundCLI, tmp_path: Path) -> None:
    """Info-ZIP stores a link as an entry whose data is the target: it used to become a
    'model' holding the text '/etc/passwd'."""
    folder = tmp_path / "victim"
    archive = zip_of(folder / "model.zip", {}, links={"model.onnx": "/etc/passwd"})
    project(folder, "./model.zip", "model.onnx")
    result = gpux("build", str(folder))
    assert_failure(result, SOURCE, "archive member 'model.onnx' is a symbolic link")
    assert extracted(gpux, archive) == []


# --- size -----------------------------------------------------------------------------------


def test_a_zip_bomb_is_refused_by_its_size_and_leaves_nothing(
    gpux: BoundCLI, tmp_path: Path
) -> None:
    """50 MB of zeros deflate to 50 KB; with the cap at 1 MB the member is refused from the
    size the zip declares, before a byte is inflated (the reported 1.5 GiB one reached 3.2 GB
    of memory and left 1.6 GB behind)."""
    folder = tmp_path / "victim"
    archive = zip_of(folder / "model.zip", {"model.onnx": bytes(50 << 20)})
    assert archive.stat().st_size < 1 << 20
    project(folder, "./model.zip", "model.onnx")
    result = gpux("build", str(folder), env={"GPUX_MAX_MEMBER_BYTES": "1000000"})
    assert_failure(
        result,
        SOURCE,
        "archive member 'model.onnx' is 52,428,800 bytes, more than the 1,000,000 bytes",
    )
    assert "GPUX_MAX_MEMBER_BYTES" in hint_of(result)
    assert extracted(gpux, archive) == []


def test_a_decompression_bomb_is_refused_with_the_default_limits(
    gpux: BoundCLI, tmp_path: Path
) -> None:
    """The reported attack, scaled down: 100 MB of zeros in a 100 KB zip, under the default
    size cap, is refused by its ratio to the archive before anything is inflated."""
    folder = tmp_path / "victim"
    folder.mkdir()
    with (
        zipfile.ZipFile(folder / "model.zip", "w", zipfile.ZIP_DEFLATED) as bundle,
        bundle.open("model.onnx", "w") as member,
    ):
        for _ in range(100):
            member.write(bytes(1 << 20))
    project(folder, "./model.zip", "model.onnx")
    result = gpux("build", str(folder))
    assert_failure(
        result, SOURCE, "archive member 'model.onnx' is 104,857,600 bytes", "a decompression bomb"
    )
    assert extracted(gpux, folder / "model.zip") == []


def test_a_bad_member_size_limit_is_a_usage_error(
    gpux: BoundCLI, linear: bytes, tmp_path: Path
) -> None:
    folder = tmp_path / "p"
    zip_of(folder / "model.zip", {"linear.onnx": linear})
    project(folder, "./model.zip", "linear.onnx")
    result = gpux("build", str(folder), env={"GPUX_MAX_MEMBER_BYTES": "1GB"})
    assert_failure(result, USAGE, "GPUX_MAX_MEMBER_BYTES='1GB' is not a number of bytes")


# --- prune ----------------------------------------------------------------------------------


def test_prune_removes_what_a_killed_extraction_left(
    gpux: BoundCLI, linear: bytes, tmp_path: Path
) -> None:
    folder = tmp_path / "p"
    archive = zip_of(folder / "model.zip", {"linear.onnx": linear})
    project(folder, "./model.zip", "linear.onnx")
    gpux.ok("build", str(folder))
    cache = gpux.home / "cache" / "extracted" / hashlib.sha256(archive.read_bytes()).hexdigest()
    # What an extraction killed while writing leaves: its temporary file beside the members.
    (cache / ".extract-k9x1q2.partial").write_bytes(bytes(4096))
    assert gpux.ok("prune", "--dry-run").stderr.startswith("would remove")
    assert extracted(gpux, archive) == [".extract-k9x1q2.partial", "linear.onnx"]
    gpux.ok("prune")
    assert extracted(gpux, archive) == ["linear.onnx"]  # a whole member is the cache
    assert gpux.json("run", "p", "--input", "x=[[1, 2, 3, 4]]")["outputs"]["y"]["data"] == (
        LINEAR_OUT
    )
