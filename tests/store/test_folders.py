"""A folder stored as one layer per file (a generative model), laid out again for the engine:
titles from a pulled image cannot place a file outside the layout, a layout whose links were
changed is made again, and every file is its verified blob."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpux.errors import DigestMismatchError, StoreError
from gpux.store import Image, LayerSource, Store, mediatypes, parse
from gpux.store.folders import check_title, layout_folder


def folder_image(store: Store, files: dict[str, bytes], name: str = "folder:1") -> Image:
    layers = [LayerSource(mediatypes.GENAI_FILE, title, data=data) for title, data in files.items()]
    return store.write_image(parse(name), {"schema": 1, "generative": {}}, layers)


@pytest.mark.parametrize(
    "title", ["../escape", "/etc/passwd", "a/../../b", "a\\b", "", ".", "a//b", "./a", "a\0b"]
)
def test_a_title_that_could_leave_the_folder_is_refused(title: str) -> None:
    with pytest.raises(StoreError, match="not a plain relative path"):
        check_title(title)


@pytest.mark.parametrize("title", ["model.onnx", "model.onnx.data", "onnx/cpu/model.onnx"])
def test_plain_titles_pass(title: str) -> None:
    assert check_title(title) == title


def test_the_layout_holds_every_file_and_a_hostile_title_is_refused(store: Store) -> None:
    files = {"genai_config.json": b"{}", "sub/tokenizer.json": b"[1, 2]", "w.data": b"\0" * 99}
    image = folder_image(store, files)
    folder = layout_folder(image, mediatypes.GENAI_FILE)
    assert {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    } == files
    assert layout_folder(image, mediatypes.GENAI_FILE) == folder

    hostile = folder_image(store, {"../../outside": b"x"}, "hostile:1")
    with pytest.raises(StoreError, match=r"'\.\./\.\./outside' is not a plain relative path"):
        layout_folder(hostile, mediatypes.GENAI_FILE)
    assert not (store.root / "cache" / "outside").exists()


def test_a_changed_layout_is_made_again(store: Store, tmp_path: Path) -> None:
    image = folder_image(store, {"genai_config.json": b"{}", "model.onnx": b"graph"})
    folder = layout_folder(image, mediatypes.GENAI_FILE)
    elsewhere = tmp_path / "other.onnx"
    elsewhere.write_bytes(b"not the model")
    (folder / "model.onnx").unlink()
    os.symlink(elsewhere, folder / "model.onnx")
    again = layout_folder(image, mediatypes.GENAI_FILE)
    assert (again / "model.onnx").read_bytes() == b"graph"


def test_a_damaged_blob_is_refused_before_the_engine_reads_it(store: Store) -> None:
    image = folder_image(store, {"genai_config.json": b"{}", "model.onnx": b"graph"})
    layer = next(x for x in image.layers if x.title == "model.onnx")
    blob = store.blobs.verified_path(layer.digest)
    blob.chmod(0o644)
    blob.write_bytes(b"graqh")
    with pytest.raises(DigestMismatchError):
        layout_folder(image, mediatypes.GENAI_FILE)
