"""``gpux save`` / ``gpux load``: OCI image-layout tarballs between two stores, byte-identical
saves, piping, archives written by other tools, and hostile archives built here with tarfile.

One source store per module holds linear:1.0 (also tagged team/linear) and pair:1, built once
from generated models; every load goes into a fresh store of its own.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure
from tests.conftest import Result

LINEAR = "linear:1.0"
LINEAR_INPUT = "x=[[1, 2, 3, 4], [0.5, 0, -1, 2]]"
PAIR_INPUT = '{"a": [[1, 2, 3]], "b": [[10, 20, 30]]}'


def environment(home: Path, **extra: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if k != "GPUX_DEBUG"}
    return {**inherited, "GPUX_HOME": str(home), "GPUX_NO_PROGRESS": "1", **extra}


@dataclass
class Binary:
    code: int
    stdout: bytes
    stderr: str

    def as_result(self) -> Result:
        return Result(self.code, self.stdout.decode(errors="replace"), self.stderr)


def gpux_binary(
    home: Path, *args: str, stdin: bytes | None = None, cwd: Path | None = None, **extra: str
) -> Binary:
    """``gpux`` with bytes on stdin and stdout (run_cli decodes them as text)."""
    done = subprocess.run(
        [sys.executable, "-m", "gpux.cli.main", *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env=environment(home, **extra),
        cwd=cwd,
        timeout=300,
        check=False,
    )
    return Binary(done.returncode, done.stdout, done.stderr.decode(errors="replace"))


def run(cli: BoundCLI, *args: str, **kwargs: Any) -> dict[str, Any]:
    """``gpux run``'s JSON without its timing."""
    result: dict[str, Any] = cli.json("run", *args, **kwargs)
    result.pop("latency_ms")
    return result


def digests(cli: BoundCLI) -> dict[str, str]:
    return {
        name: image["digest"] for image in cli.json("images", "--json") for name in image["names"]
    }


# -- archives built by hand ----------------------------------------------------------------------

Entry = tuple[tarfile.TarInfo, bytes | None]


def entries_of(data: bytes) -> list[Entry]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [
            (member, tar.extractfile(member).read() if member.isfile() else None)  # type: ignore[union-attr]
            for member in tar.getmembers()
        ]


def pack(entries: list[Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in entries:
            info = _copy(info)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _copy(info: tarfile.TarInfo) -> tarfile.TarInfo:
    copy = tarfile.TarInfo(info.name)
    for attribute in ("type", "mode", "mtime", "linkname", "size", "devmajor", "devminor"):
        setattr(copy, attribute, getattr(info, attribute))
    return copy


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> Entry:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info, (data if kind == tarfile.REGTYPE else None)


def with_index(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """The archive with its index.json edited by ``change``."""
    entries = entries_of(data)
    index = json.loads(dict((i.name, d) for i, d in entries)["index.json"] or b"")
    change(index)
    return pack(
        [(i, json.dumps(index).encode() if i.name == "index.json" else d) for i, d in entries]
    )


def blob_names(data: bytes) -> list[str]:
    return [i.name for i, _ in entries_of(data) if i.name.startswith("blobs/sha256/")]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> BoundCLI:
    """A store holding linear:1.0 (= team/linear:latest) and pair:1."""
    cli = BoundCLI(tmp_path_factory.mktemp("source-home"))
    work = tmp_path_factory.mktemp("projects")
    generated_models.linear(work / "linear" / "linear.onnx")
    (work / "linear" / "GPUXfile").write_text("model: ./linear.onnx\n")
    generated_models.two_inputs(work / "pair" / "pair.onnx")
    (work / "pair" / "GPUXfile").write_text("model: ./pair.onnx\n")
    cli.ok("build", str(work / "linear"), "-t", LINEAR, "-q")
    cli.ok("tag", LINEAR, "team/linear")
    cli.ok("build", str(work / "pair"), "-t", "pair:1", "-q")
    return cli


@pytest.fixture(scope="module")
def linear_tar(source: BoundCLI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("archives") / "linear.tar"
    saved = source.ok("save", LINEAR, "-o", str(path))
    assert saved.stdout == ""
    assert f"saved {LINEAR}" in saved.stderr
    return path


@pytest.fixture(scope="module")
def multi_tar(source: BoundCLI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("archives") / "multi.tar"
    source.ok("save", "pair:1", LINEAR, "team/linear", "-o", str(path))
    return path


@pytest.fixture
def target(tmp_path: Path) -> BoundCLI:
    return BoundCLI(tmp_path / "target-home")


# -- round trips ---------------------------------------------------------------------------------


def test_round_trip_keeps_digest_outputs_and_inspect(
    source: BoundCLI, linear_tar: Path, target: BoundCLI
) -> None:
    loaded = target.ok("load", "-i", str(linear_tar))
    assert loaded.stdout == f"{LINEAR}\n"
    assert "loaded 1 image name(s)" in loaded.stderr
    assert digests(target) == {LINEAR: digests(source)[LINEAR]}
    assert run(target, LINEAR, "--input", LINEAR_INPUT) == run(
        source, LINEAR, "--input", LINEAR_INPUT
    )
    loaded_image, source_image = (cli.json("inspect", LINEAR, "--json") for cli in (target, source))
    assert loaded_image.pop("names") == [LINEAR]  # team/linear was not saved
    source_image.pop("names")
    assert loaded_image == source_image
    assert target.ok("inspect", LINEAR).stdout == source.ok("inspect", LINEAR).stdout
    # Loading the same archive again changes nothing and says nothing about replacing.
    again = target.ok("load", "-i", str(linear_tar))
    assert "note:" not in again.stderr
    assert target.names() == [LINEAR]


def test_saving_twice_gives_identical_bytes(
    source: BoundCLI, linear_tar: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again.tar"
    source.ok("save", LINEAR, "-o", str(again))
    assert again.read_bytes() == linear_tar.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["again.tar"]  # the temp file was renamed, not left
    piped = gpux_binary(source.home, "save", LINEAR)  # stdout is a pipe: the archive goes there
    assert piped.code == 0, piped.stderr
    assert piped.stdout == linear_tar.read_bytes()
    assert gpux_binary(source.home, "save", LINEAR, "-o", "-").stdout == piped.stdout

    with tarfile.open(linear_tar) as tar:
        members = tar.getmembers()
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        layout = json.load(tar.extractfile("oci-layout"))  # type: ignore[arg-type]
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[:2] == ["blobs", "blobs/sha256"] and names[-2:] == ["index.json", "oci-layout"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert layout == {"imageLayoutVersion": "1.0.0"}
    image = source.json("inspect", LINEAR, "--json")
    assert index["manifests"] == [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digests(source)[LINEAR],
            "size": index["manifests"][0]["size"],
            "annotations": {
                "org.opencontainers.image.ref.name": "1.0",
                "io.containerd.image.name": LINEAR,
            },
        }
    ]
    # Exactly the image's blobs (manifest, config, layers), each named by its content's digest.
    for name, data in entries_of(linear_tar.read_bytes()):
        if name.name.startswith("blobs/sha256/"):
            assert name.name == f"blobs/sha256/{sha256(data or b'')}"
    assert len(blob_names(linear_tar.read_bytes())) == 2 + len(image["layers"])


def test_multi_image_archive(source: BoundCLI, multi_tar: Path, target: BoundCLI) -> None:
    blobs = blob_names(multi_tar.read_bytes())
    assert len(blobs) == len(set(blobs))  # linear's blobs once, though it is saved under two names
    loaded = target.ok("load", "-i", str(multi_tar))
    assert loaded.stdout.split() == [LINEAR, "pair:1", "team/linear:latest"]
    assert digests(target) == digests(source)
    assert run(target, "pair:1", stdin=PAIR_INPUT) == run(source, "pair:1", stdin=PAIR_INPUT)


def test_a_digest_saves_every_name_of_the_image(source: BoundCLI) -> None:
    digest = digests(source)[LINEAR]
    archive = gpux_binary(source.home, "save", digest[7:19]).stdout
    index = json.loads(dict((i.name, d) for i, d in entries_of(archive))["index.json"] or b"")
    assert [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]] == [
        LINEAR,
        "team/linear:latest",
    ]


def test_a_bare_name_saves_the_tag_it_resolves_to(source: BoundCLI, target: BoundCLI) -> None:
    """`gpux save pair` with no pair:latest saves pair:1 (the newest tag, as `gpux run pair`
    runs), under that name: not under a pair:latest that never existed."""
    archive = gpux_binary(source.home, "save", "pair")
    assert archive.code == 0, archive.stderr
    assert "saved pair:1 " in archive.stderr
    index = json.loads(
        dict((i.name, d) for i, d in entries_of(archive.stdout))["index.json"] or b""
    )
    assert [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]] == ["pair:1"]
    loaded = gpux_binary(target.home, "load", stdin=archive.stdout)
    assert loaded.code == 0, loaded.stderr
    assert digests(target) == {"pair:1": digests(source)["pair:1"]}


def test_pipe_save_into_load(source: BoundCLI, target: BoundCLI) -> None:
    save = subprocess.Popen(
        [sys.executable, "-m", "gpux.cli.main", "save", "pair:1", LINEAR],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(source.home),
    )
    load = subprocess.run(
        [sys.executable, "-m", "gpux.cli.main", "load", "-q"],
        stdin=save.stdout,
        capture_output=True,
        text=True,
        env=environment(target.home),
        timeout=300,
        check=False,
    )
    assert save.stdout is not None
    save.stdout.close()
    assert save.wait(timeout=60) == 0
    assert load.returncode == 0, load.stderr
    assert load.stdout.split() == [LINEAR, "pair:1"]
    assert load.stderr == ""  # -q: names only
    assert run(target, LINEAR, "--input", LINEAR_INPUT) == run(
        source, LINEAR, "--input", LINEAR_INPUT
    )


def test_load_dash_reads_stdin(linear_tar: Path, target: BoundCLI) -> None:
    loaded = gpux_binary(target.home, "load", "-i", "-", stdin=linear_tar.read_bytes())
    assert (loaded.code, loaded.stdout) == (0, f"{LINEAR}\n".encode())
    assert "from stdin" in loaded.stderr


def test_archive_from_another_tool(source: BoundCLI, linear_tar: Path, tmp_path: Path) -> None:
    """``tar -czf x.tgz -C layout .``: './' names, directories first, gzip, index before blobs."""
    layout = tmp_path / "layout"
    with tarfile.open(linear_tar) as tar:
        tar.extractall(layout, filter="data")
    archive = tmp_path / "other.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("oci-layout", "index.json", "blobs"):
            tar.add(layout / name, arcname=f"./{name}")
    target = BoundCLI(tmp_path / "home")
    assert target.ok("load", "-i", str(archive)).stdout == f"{LINEAR}\n"
    assert digests(target) == {LINEAR: digests(source)[LINEAR]}


def test_a_tag_only_archive_needs_a_name(
    source: BoundCLI, linear_tar: Path, tmp_path: Path
) -> None:
    def tag_only(index: dict[str, Any]) -> None:
        del index["manifests"][0]["annotations"]["io.containerd.image.name"]

    archive = tmp_path / "tag-only.tar"
    archive.write_bytes(with_index(linear_tar.read_bytes(), tag_only))
    target = BoundCLI(tmp_path / "home")
    refused = target("load", "-i", str(archive))
    assert_failure(refused, 2, "only by the tag '1.0'", "--name")
    assert target.names() == []
    assert target.ok("load", "-i", str(archive), "--name", "renamed").stdout == "renamed:1.0\n"
    assert target.ok("load", "-i", str(archive), "--name", "team/x:2").stdout == "team/x:2\n"
    assert set(digests(target).values()) == {digests(source)[LINEAR]}


def test_a_full_name_in_ref_name_is_used(linear_tar: Path, tmp_path: Path) -> None:
    """GPUX's own store, and skopeo, put the whole name in org.opencontainers.image.ref.name."""

    def full_ref_name(index: dict[str, Any]) -> None:
        index["manifests"][0]["annotations"] = {"org.opencontainers.image.ref.name": "team/m:3"}

    archive = tmp_path / "full.tar"
    archive.write_bytes(with_index(linear_tar.read_bytes(), full_ref_name))
    assert BoundCLI(tmp_path / "home").ok("load", "-i", str(archive)).stdout == "team/m:3\n"


def test_name_is_refused_for_several_images(multi_tar: Path, target: BoundCLI) -> None:
    assert_failure(
        target("load", "-i", str(multi_tar), "--name", "x"), 2, "--name names one image", "holds 2"
    )
    assert target.names() == []


def test_load_over_an_existing_name_says_so(
    source: BoundCLI, linear_tar: Path, multi_tar: Path, target: BoundCLI
) -> None:
    target.ok("load", "-i", str(multi_tar))
    target.ok("tag", "pair:1", LINEAR)
    loaded = target.ok("load", "-i", str(linear_tar))
    pair, linear = digests(source)["pair:1"], digests(source)[LINEAR]
    assert f"note: {LINEAR} pointed at {pair[7:19]}, now at {linear[7:19]}" in loaded.stderr
    assert digests(target)[LINEAR] == linear


def test_save_errors(source: BoundCLI, tmp_path: Path) -> None:
    assert_failure(source("save", "nothere", "-o", str(tmp_path / "x.tar")), 4, "'nothere'")
    assert_failure(
        source("save", LINEAR, "-o", str(tmp_path / "missing" / "x.tar")), 4, "does not exist"
    )
    assert os.listdir(tmp_path) == []


def test_a_corrupt_blob_is_not_saved(source: BoundCLI, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(source.home, home)
    shutil.rmtree(home / "verified", ignore_errors=True)
    layer = source.json("inspect", LINEAR, "--json")["layers"][0]
    digest = layer["digest"]
    blob = home / "blobs" / "sha256" / digest.removeprefix("sha256:")
    blob.write_bytes(bytes(len(blob.read_bytes())))  # same size, other bytes
    out = tmp_path / "out" / "x.tar"
    out.parent.mkdir()
    out.write_bytes(b"an older archive")
    failed = BoundCLI(home)("save", LINEAR, "-o", str(out))
    assert_failure(failed, 8, f"blob {digest} in the store is corrupt")
    assert out.read_bytes() == b"an older archive"
    assert os.listdir(out.parent) == ["x.tar"]


# -- hostile and broken archives -----------------------------------------------------------------


def _good(linear_tar: Path) -> list[Entry]:
    return entries_of(linear_tar.read_bytes())


def _model_blob(entries: list[Entry]) -> tarfile.TarInfo:
    """The largest blob: the model layer."""
    blobs = [i for i, _ in entries if i.name.startswith("blobs/sha256/")]
    return max(blobs, key=lambda info: info.size)


def _truncated_inside_a_blob(good: list[Entry]) -> bytes:
    data = pack(good)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        model = max(tar.getmembers(), key=lambda info: info.size)
    return data[: model.offset_data + model.size // 2]


def _truncated_before_index(good: list[Entry]) -> bytes:
    data = pack(good)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        index = tar.getmember("index.json")
    return data[: index.offset]


def _without_model(good: list[Entry]) -> bytes:
    model = _model_blob(good)
    return pack([(i, d) for i, d in good if i.name != model.name])


def _wrong_content(good: list[Entry]) -> bytes:
    model = _model_blob(good)
    return pack([(i, b"\0" * i.size if i.name == model.name else d) for i, d in good])


def _container_image(good: list[Entry]) -> bytes:
    config = b'{"architecture": "amd64", "os": "linux"}'
    layer = gzip.compress(b"", mtime=0)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{sha256(config)}",
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": f"sha256:{sha256(layer)}",
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{sha256(manifest)}",
                "size": len(manifest),
                "annotations": {"io.containerd.image.name": "docker.io/library/busybox:latest"},
            }
        ],
    }
    return pack(
        [
            *(member(f"blobs/sha256/{sha256(b)}", b) for b in (config, layer, manifest)),
            member("index.json", json.dumps(index).encode()),
            member("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
        ]
    )


# name -> (archive from the good entries and the test's folder, exit code, message fragments)
HOSTILE: dict[str, tuple[Callable[[list[Entry], Path], bytes], int, tuple[str, ...]]] = {
    "dot-dot": (
        lambda good, _: pack([member("../evil", b"owned"), *good]),
        8,
        ("'../evil'", "'..'"),
    ),
    "dot-dot-inside": (
        lambda good, _: pack([member("blobs/../../evil", b"owned"), *good]),
        8,
        ("'blobs/../../evil'", "'..'"),
    ),
    "absolute": (
        lambda good, folder: pack([member(str(folder / "abs-evil"), b"owned"), *good]),
        8,
        ("abs-evil", "an absolute path"),
    ),
    "symlink": (
        lambda good, _: pack(
            [member(f"blobs/sha256/{'a' * 64}", kind=tarfile.SYMTYPE, link="/etc/passwd"), *good]
        ),
        8,
        ("a symbolic link", "/etc/passwd"),
    ),
    "hardlink": (
        lambda good, _: pack(
            [*good[:-2], member("index.json", kind=tarfile.LNKTYPE, link="oci-layout"), good[-1]]
        ),
        8,
        ("'index.json'", "a hard link"),
    ),
    "device": (
        lambda good, _: pack([member("blobs/sha256/dev", kind=tarfile.CHRTYPE), *good]),
        8,
        ("'blobs/sha256/dev'", "a device file"),
    ),
    "foreign-member": (
        lambda good, _: pack([*good, member("run.sh", b"#!/bin/sh\n")]),
        8,
        ("'run.sh'", "not part of an OCI image layout"),
    ),
    "foreign-folder": (
        lambda good, _: pack([member("blobs/md5", kind=tarfile.DIRTYPE), *good]),
        8,
        ("'blobs/md5'", "a folder outside"),
    ),
    "duplicate": (
        lambda good, _: pack([*good, good[-2]]),
        8,
        ("'index.json'", "a duplicate"),
    ),
    "wrong-content": (lambda good, _: _wrong_content(good), 8, ("does not match its digest",)),
    "missing-blob": (
        lambda good, _: _without_model(good),
        8,
        ("needs blob", "which the archive lacks"),
    ),
    "garbage": (
        lambda good, _: b"this is not a tar archive\n" * 100,
        8,
        ("not a readable tar archive",),
    ),
    "empty": (lambda good, _: b"", 8, ("not a readable tar archive",)),
    "truncated": (
        lambda good, _: _truncated_inside_a_blob(good),
        8,
        ("not a readable tar archive", "unexpected end of data"),
    ),
    "truncated-at-a-member": (
        lambda good, _: _truncated_before_index(good),
        8,
        ("the archive has no index.json",),
    ),
    "huge-index": (
        lambda good, _: pack([*good[:-2], member("index.json", b" " * (16 << 20 | 1)), good[-1]]),
        8,
        ("'index.json'", "more than the 16 MiB"),
    ),
    "container-image": (
        lambda good, _: _container_image(good),
        8,
        ("not a GPUX image", "application/vnd.oci.image.config.v1+json"),
    ),
}


def _files(folder: Path, skip: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if skip not in (p, *p.parents)}


@pytest.fixture(scope="module")
def victim(multi_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store that already holds images (copied for each hostile archive)."""
    home = tmp_path_factory.mktemp("victim")
    BoundCLI(home).ok("load", "-i", str(multi_tar))
    return home


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused(
    case: str, linear_tar: Path, victim: Path, tmp_path: Path
) -> None:
    build, code, fragments = HOSTILE[case]
    home = tmp_path / "home"
    shutil.copytree(victim, home)
    target = BoundCLI(home)
    names = target.names()
    blobs_before = set(os.listdir(home / "blobs" / "sha256"))
    cwd, scratch = tmp_path / "cwd", tmp_path / "scratch"
    cwd.mkdir()
    scratch.mkdir()
    archive = tmp_path / "evil.tar"
    archive.write_bytes(build(_good(linear_tar), tmp_path))
    outside = _files(tmp_path, home)

    result = gpux_binary(home, "load", "-i", str(archive), cwd=cwd, TMPDIR=str(scratch))

    assert_failure(result.as_result(), code, *fragments)
    assert target.names() == names
    assert _files(tmp_path, home) == outside  # nothing extracted anywhere: cwd, TMPDIR, '..'
    assert not (tmp_path / "evil").exists() and not (tmp_path / "abs-evil").exists()
    assert list((home / "tmp").glob("*")) == []  # no partial blob left behind
    for name in set(os.listdir(home / "blobs" / "sha256")) - blobs_before:
        # Only genuine blobs may have entered the store, each matching its name.
        assert sha256((home / "blobs" / "sha256" / name).read_bytes()) == name


def test_hostile_archive_on_stdin(linear_tar: Path, target: BoundCLI) -> None:
    evil = pack([member("../evil", b"owned"), *_good(linear_tar)])
    result = gpux_binary(target.home, "load", stdin=evil)
    assert_failure(result.as_result(), 8, "'../evil'")
    assert target.names() == []


def test_blobs_of_a_refused_archive_are_pruned(linear_tar: Path, target: BoundCLI) -> None:
    """A manifest whose layer is missing: its config and manifest were stored, never named."""
    archive = target.home.parent / "incomplete.tar"
    archive.write_bytes(_without_model(_good(linear_tar)))
    refused = target("load", "-i", str(archive))
    assert_failure(refused, 8, "which the archive lacks")
    assert "'gpux prune' removes the 2 blob(s)" in refused.stderr
    assert len(os.listdir(target.home / "blobs" / "sha256")) == 2
    assert "removed 2 unreferenced file(s)" in target.ok("prune").stderr
    assert os.listdir(target.home / "blobs" / "sha256") == []
    assert target.names() == []
