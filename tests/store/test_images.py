"""Images by name over content-addressed blobs: build, list, get, tag, remove, prune, check."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import gpux.api
from gpux.errors import DigestMismatchError, NotFoundError, StoreError, UsageError
from gpux.store import Image, Store, mediatypes
from tests.store.consistency import (
    assert_consistent,
    blob_files,
    blob_path,
    names,
    referenced,
    tmp_files,
)


def image_blobs(image: Image) -> set[str]:
    return {
        image.digest,
        image.manifest["config"]["digest"],
        *(layer.digest for layer in image.layers),
    }


@pytest.fixture
def two_images(store: Store, linear_project: Path, two_inputs_project: Path) -> list[Image]:
    alpha = gpux.api.build(linear_project, store=store).image
    beta = gpux.api.build(two_inputs_project, store=store).image
    return [alpha, beta]


def test_build_two_images_and_list_them(store: Store, two_images: list[Image]) -> None:
    alpha, beta = two_images
    listed = store.images()
    assert [image.names for image in listed] == [["alpha:latest"], ["beta:latest"]]
    assert [image.digest for image in listed] == [alpha.digest, beta.digest]
    assert alpha.digest != beta.digest
    # The layout on disk is a valid OCI image layout with exactly these two names.
    layout = json.loads((store.root / "oci-layout").read_text())
    assert layout == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((store.root / "index.json").read_text())
    assert [e["annotations"][mediatypes.REF_NAME] for e in index["manifests"]] == [
        "alpha:latest",
        "beta:latest",
    ]
    assert referenced(store.root) == image_blobs(alpha) | image_blobs(beta)
    assert tmp_files(store.root) == []


def test_image_records_its_model_layer(
    store: Store, two_images: list[Image], symbolic_model: Path
) -> None:
    alpha = store.get("alpha")
    layer = alpha.layer(mediatypes.MODEL)
    assert layer is not None
    assert layer.title == "linear.onnx"
    assert alpha.layer_path(mediatypes.MODEL).read_bytes() == symbolic_model.read_bytes()
    assert (
        alpha.size == sum(layer.size for layer in alpha.layers) + alpha.manifest["config"]["size"]
    )
    assert alpha.config["gpuxfile"]["inputs"][0]["name"] == "x"
    with pytest.raises(StoreError, match="has no"):
        alpha.layer_path(mediatypes.TOKENIZER)


def test_get_by_name_digest_and_prefix(store: Store, two_images: list[Image]) -> None:
    alpha, beta = two_images
    hex_digest = alpha.digest[7:]
    for text in (
        "alpha",
        "alpha:latest",
        alpha.digest,
        hex_digest,
        hex_digest[:12],
        "sha256:" + hex_digest[:8],
        f"alpha:latest@{alpha.digest}",
    ):
        found = store.get(text)
        assert found.digest == alpha.digest, text
        assert found.names == ["alpha:latest"]
    assert store.get(beta.digest[7:19]).names == ["beta:latest"]


@pytest.mark.parametrize("text", ["gamma", "alpha:v9", "beta:latest@sha256:" + "0" * 64])
def test_get_unknown_image_is_not_found(store: Store, two_images: list[Image], text: str) -> None:
    with pytest.raises(NotFoundError) as info:
        store.get(text)
    assert f"'{text}'" in info.value.message
    assert info.value.hint and "gpux images" in info.value.hint


def test_get_invalid_name_is_a_usage_error(store: Store, two_images: list[Image]) -> None:
    with pytest.raises(UsageError):
        store.get("Not A Name")


def test_tag_adds_a_second_name_to_the_same_image(store: Store, two_images: list[Image]) -> None:
    alpha = two_images[0]
    blobs_before = blob_files(store.root)
    tagged = store.tag("alpha", "team/alpha:v2")
    assert tagged.digest == alpha.digest
    assert sorted(tagged.names) == ["alpha:latest", "team/alpha:v2"]
    assert blob_files(store.root) == blobs_before  # a tag is a name, not a copy
    assert len(store.images()) == 2
    assert names(store.root) == ["alpha:latest", "beta:latest", "team/alpha:v2"]
    # Re-tagging moves the name.
    moved = store.tag("beta", "team/alpha:v2")
    assert moved.digest == two_images[1].digest
    assert store.get("alpha").names == ["alpha:latest"]
    with pytest.raises(UsageError):
        store.tag("alpha", "Bad Name")


def test_remove_one_name_keeps_blobs_of_the_other(store: Store, two_images: list[Image]) -> None:
    alpha = two_images[0]
    store.tag("alpha", "alpha:v2")
    assert store.remove("alpha:latest") == ["alpha:latest"]
    assert names(store.root) == ["alpha:v2", "beta:latest"]
    for digest in image_blobs(alpha):
        assert blob_path(store.root, digest).is_file()
    assert_consistent(store.root)
    # Removing the last name frees the image's blobs, and only those.
    beta_blobs = image_blobs(two_images[1])
    assert store.remove("alpha:v2") == ["alpha:v2"]
    assert names(store.root) == ["beta:latest"]
    for digest in image_blobs(alpha):
        assert not blob_path(store.root, digest).exists()
    assert blob_files(store.root) == beta_blobs
    assert_consistent(store.root)


def test_remove_keeps_a_layer_shared_with_another_image(
    store: Store, add_project: Callable[..., Path], symbolic_model: Path
) -> None:
    first = gpux.api.build(add_project("first", symbolic_model), store=store).image
    # A different GPUXfile over the same model: a different image that shares the model layer.
    gpuxfile = f"description: the same weights\nmodel: ./{symbolic_model.name}\n"
    second = gpux.api.build(add_project("second", symbolic_model, gpuxfile), store=store).image
    shared = first.layers[0].digest
    assert second.layers[0].digest == shared
    assert first.digest != second.digest
    store.remove("first")
    assert not blob_path(store.root, first.digest).exists()
    assert not blob_path(store.root, first.manifest["config"]["digest"]).exists()
    assert blob_path(store.root, shared).is_file()
    with gpux.api.load("second", store=store) as model:
        out = model.run({"x": [[1.0, 0.0, 0.0, 0.0]]})["y"]
    np.testing.assert_allclose(out, [[1.0, -0.9, 0.7]], rtol=1e-6)
    store.remove("second")
    assert blob_files(store.root) == set()


def test_remove_by_digest_removes_every_name(store: Store, two_images: list[Image]) -> None:
    alpha = two_images[0]
    store.tag("alpha", "alpha:v2")
    assert sorted(store.remove(alpha.digest[7:19])) == ["alpha:latest", "alpha:v2"]
    assert names(store.root) == ["beta:latest"]
    assert not any(blob_path(store.root, d).exists() for d in image_blobs(alpha))


def test_remove_unknown_image_is_not_found(store: Store, two_images: list[Image]) -> None:
    blobs_before = blob_files(store.root)
    with pytest.raises(NotFoundError, match="'gamma' not found"):
        store.remove("gamma")
    assert blob_files(store.root) == blobs_before


def test_prune_removes_unreferenced_blobs_and_partial_files(
    store: Store, two_images: list[Image]
) -> None:
    kept = blob_files(store.root)
    orphan = store.blobs.put_bytes(b"orphan blob " * 1000)
    partial = store.blobs.tmp / "blob-abandoned.partial"
    partial.write_bytes(b"\0" * 777)
    expected = (2, 12_000 + 777)

    assert store.prune(dry_run=True) == expected
    assert store.blobs.exists(orphan) and partial.exists()  # dry run deletes nothing

    assert store.prune() == expected
    assert not store.blobs.exists(orphan)
    assert tmp_files(store.root) == []
    assert blob_files(store.root) == kept
    assert store.prune() == (0, 0)
    assert_consistent(store.root)
    assert names(store.root) == ["alpha:latest", "beta:latest"]


def test_prune_removes_an_abandoned_index_write(store: Store, two_images: list[Image]) -> None:
    """A build killed while writing index.json leaves its temp file beside it (the rename never
    happened); prune removes it and leaves the real index alone."""
    index_before = (store.root / "index.json").read_bytes()
    abandoned = store.root / ".index.json-k1ll3d.tmp"
    abandoned.write_bytes(index_before[:50])
    assert store.prune(dry_run=True) == (1, 50)
    assert abandoned.exists()
    assert store.prune() == (1, 50)
    assert not abandoned.exists()
    assert (store.root / "index.json").read_bytes() == index_before
    assert names(store.root) == ["alpha:latest", "beta:latest"]


def test_prune_on_an_empty_store(store: Store) -> None:
    assert store.prune() == (0, 0)


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"manifests": 3}', b'"text"', b""])
def test_damaged_index_is_a_store_error_with_a_hint(
    store: Store, two_images: list[Image], content: bytes
) -> None:
    (store.root / "index.json").write_bytes(content)
    for operation in (store.images, lambda: store.get("alpha"), store.check, store.prune):
        with pytest.raises(StoreError) as info:
            operation()
        assert "index" in info.value.message and "damaged" in info.value.message
        assert info.value.hint and "backup" in info.value.hint
    # Nothing was deleted while the index could not be read.
    assert all(blob_path(store.root, d).exists() for i in two_images for d in image_blobs(i))


def test_check_is_empty_for_a_healthy_store(store: Store, two_images: list[Image]) -> None:
    assert store.check() == []
    store.tag("alpha", "alpha:v2")
    assert store.check() == []


def test_check_reports_a_corrupted_layer(store: Store, two_images: list[Image]) -> None:
    alpha = two_images[0]
    layer = blob_path(store.root, alpha.layers[0].digest)
    data = bytearray(layer.read_bytes())
    data[-1] ^= 0x01
    layer.write_bytes(bytes(data))

    problems = store.check()
    assert len(problems) == 1
    assert problems[0].startswith("alpha:latest: ")
    assert "corrupt" in problems[0]
    with pytest.raises(DigestMismatchError):
        gpux.api.load("alpha", store=store)
    # The healthy image is unaffected.
    with gpux.api.load("beta", store=store) as model:
        out = model.run({"a": [[1, 2]], "b": [[3, 4]]})
    assert out["sum"].tolist() == [[4, 6]]


def test_check_reports_a_missing_blob(store: Store, two_images: list[Image]) -> None:
    beta = two_images[1]
    blob_path(store.root, beta.manifest["config"]["digest"]).unlink()
    problems = store.check()
    assert len(problems) == 1
    assert problems[0].startswith("beta:latest: ")
    assert "missing" in problems[0]
    assert names(store.root) == ["alpha:latest"]  # list() skips it, check() reports it


def test_check_reports_an_invalid_digest_in_the_index(
    store: Store, two_images: list[Image]
) -> None:
    index_path = store.root / "index.json"
    index = json.loads(index_path.read_text())
    index["manifests"][0]["digest"] = "sha256:../../../etc/passwd"
    index_path.write_text(json.dumps(index))
    problems = store.check()
    assert len(problems) == 1
    assert problems[0].startswith("alpha:latest: invalid digest")


def test_identical_inputs_under_a_new_name_reuse_the_image(
    store: Store, add_project: Callable[..., Path], symbolic_model: Path
) -> None:
    first = gpux.api.build(add_project("first", symbolic_model), store=store)
    again = gpux.api.build(add_project("first", symbolic_model), tag="copy:1", store=store)
    assert not first.cached and again.cached
    assert again.image.digest == first.image.digest
    assert sorted(again.image.names) == ["copy:1", "first:latest"]
    assert [s.title for s in again.reporter.steps] == ["read GPUXfile", "build"]


def test_a_corrupt_blob_is_replaced_by_the_next_good_write(
    store: Store, add_project: Callable[..., Path], symbolic_model: Path
) -> None:
    image = gpux.api.build(add_project("first", symbolic_model), store=store).image
    layer = blob_path(store.root, image.layers[0].digest)
    layer.write_bytes(b"bit rot")
    with pytest.raises(DigestMismatchError):
        gpux.api.load("first", store=store)
    # The repair the error message suggests: rebuild. The good copy replaces the bad one.
    gpux.api.build(add_project("first", symbolic_model), store=store, force=True)
    with gpux.api.load("first", store=store) as model:
        out = model.run({"x": [[1.0, 0.0, 0.0, 0.0]]})["y"]
    np.testing.assert_allclose(out, [[1.0, -0.9, 0.7]], rtol=1e-6)
    assert store.check() == []


def test_a_bare_name_finds_latest_else_the_newest_tag(
    store: Store, add_project: Callable[..., Path], symbolic_model: Path
) -> None:
    """`gpux init` writes version "1.0", the build stores NAME:1.0, and the user types NAME."""
    import time

    first = gpux.api.build(add_project("s", symbolic_model), tag="sent:1.0", store=store).image
    time.sleep(1.1)  # created times are to the second
    newer = gpux.api.build(
        add_project("s2", symbolic_model, "model: ./linear.onnx\nruntime: {threads: 1}\n"),
        tag="sent:2.0",
        store=store,
    ).image
    assert newer.digest != first.digest
    picked = store.get("sent")
    assert picked.digest == newer.digest and picked.name == "sent:2.0"
    store.tag("sent:1.0", "sent:latest")
    assert store.get("sent").digest == first.digest  # latest, when there is one, wins
    # Writes never guess: rm of a bare name removes NAME:latest only.
    store.remove("sent")
    assert store.get("sent").name == "sent:2.0"
    with pytest.raises(NotFoundError, match=r"its tags here: sent:1.0, sent:2.0"):
        store.remove("sent")
    with pytest.raises(NotFoundError, match="its tags here"):
        store.get("sent:3.0")
